cdef class PoolCounters:
    cdef public uint64_t opens, reuses, evictions, idle_closes


cdef class ChannelPool:
    """Channels by (address, server key): LRU bound, idle TTL, counters."""
    cdef object make                  # (address, server_key) -> channel
    cdef object entries               # OrderedDict key -> ChannelBase, LRU first
    cdef readonly size_t max_sockets
    cdef readonly double idle_ttl
    cdef double next_sweep
    cdef readonly PoolCounters counters
    cdef object last_key              # the key get() returned last, and its
    cdef ChannelBase last             # channel: the most recently used
    cdef object __weakref__

    cdef ChannelBase get(self, key, str address, object server_key, double now)
    cdef int _evict(self) except -1
