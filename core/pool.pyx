# pool.pyx - the channels of one client thread (sync) or event loop
# (async): one per node and server key, bounded, idle ones closed.
#
# Uses: channel.pyx (ChannelBase: is_closed, is_busy, last_used, close),
# context.pyx (monotonic).

import collections as _collections


@cython.auto_pickle(False)
cdef class PoolCounters:
    """What the pools of one client did (shared by its threads' pools, so
    the counts outlive the threads)."""
    pass


@cython.auto_pickle(False)
cdef class ChannelPool:
    """The channels of one thread (sync) or one event loop (async), keyed
    by (node address, server key): at most ``max_sockets`` open, the least
    recently used one closed to make room (never one with calls in
    flight), and any idle for ``idle_ttl`` seconds closed."""

    def __init__(self, make, size_t max_sockets=1024, double idle_ttl=300.0,
                 PoolCounters counters=None):
        self.make = make
        self.counters = counters if counters is not None else PoolCounters()
        self.entries = _collections.OrderedDict()
        self.max_sockets = max_sockets
        self.idle_ttl = idle_ttl
        self.next_sweep = monotonic() + idle_ttl

    cdef ChannelBase get(self, key, str address, object server_key, double now):
        """The open channel for `key` (opened, LRU-evicting, when needed)."""
        cdef ChannelBase channel = self.last
        if (channel is not None and (key is self.last_key or key == self.last_key)
                and not channel.is_closed() and now < self.next_sweep
                and <size_t>len(self.entries) <= self.max_sockets):
            # The channel asked for last time: still the most recently used.
            self.counters.reuses += 1
            channel.last_used = now
            return channel
        channel = self.entries.get(key)
        if channel is not None and not channel.is_closed():
            self.counters.reuses += 1
            self.entries.move_to_end(key)
            if <size_t>len(self.entries) > self.max_sockets:  # over while all were busy
                self._evict()
        else:
            if channel is not None:
                del self.entries[key]
            if <size_t>len(self.entries) >= self.max_sockets:
                self._evict()
            channel = self.make(address, server_key)
            self.entries[key] = channel
            self.counters.opens += 1
        channel.last_used = now
        if now >= self.next_sweep:
            self.sweep(now)
        self.last_key = key
        self.last = channel
        return channel

    cdef int _evict(self) except -1:
        cdef ChannelBase channel
        for key, channel in self.entries.items():
            if channel.is_busy():
                continue
            del self.entries[key]
            channel.close()
            self.counters.evictions += 1
            return 1
        return 0

    def sweep(self, double now):
        """Close the channels idle for idle_ttl (oldest first)."""
        cdef ChannelBase channel
        self.next_sweep = now + self.idle_ttl / 4
        for key, channel in list(self.entries.items()):
            if channel.last_used + self.idle_ttl > now:
                break  # LRU order: the rest were used later
            if channel.is_busy():
                continue
            del self.entries[key]
            channel.close()
            self.counters.idle_closes += 1

    def close(self):
        for channel in self.entries.values():
            channel.close()
        self.entries.clear()
        self.last = self.last_key = None

    def stats(self):
        c = self.counters
        return {"open": len(self.entries), "opens": c.opens, "reuses": c.reuses,
                "evictions": c.evictions, "idle_closed": c.idle_closes}

    def __len__(self):
        return len(self.entries)
