# client.pyx - the call path of Client and AsyncClient above the channel:
# codec, deadline and metadata inheritance, node choice, the channel pool,
# retries and hedging (design.md, the path of one call).
#
# Uses: channel.pyx (Request, Channel, AsyncChannel, _Pending, CallFuture),
# pool.pyx (ChannelPool, PoolCounters), retry.pyx (RetryPolicy,
# RetryBudget, HedgingPolicy, retry_after, attempt_done), selector.pyx
# (Balancer, Subset, NodeState), keyring.pyx (KeySource), codecs.pyx
# (CodecEntry, codec_entries, IDENTITY), context.pyx (CURRENT, Context,
# monotonic), errors.pyx (status codes, undecodable).

import asyncio as _asyncio
import threading as _threading
import time as _time
import weakref as _weakref
from typing import Any as _Any


@cython.auto_pickle(False)
cdef class _Call:
    """One AsyncClient call across its attempts: node accounting, the
    retry decision when an attempt fails (retry_after, as the sync path in
    ClientCore.call), and hedging. A call to a fixed address gets one only
    when its first attempt failed and may be retried (after_first)."""

    @staticmethod
    cdef _Call after_first(_Pending p):
        """The _Call of a call whose first attempt `p`, to a fixed address
        with no owner, failed."""
        cdef _Call c = _Call.__new__(_Call)
        c.core = p.rq.core
        c.rq = p.rq
        c.future = p.future
        c.address = p.channel.address
        c.attempts = 1
        c.live = 1
        return c

    cdef void _finish(self, _Pending p, object exc) noexcept:
        if p.node is not None:
            try:
                attempt_done(self.balancer, p.node, monotonic() - p.started, exc)
            except BaseException:
                pass
            p.node = None

    cdef int failed(self, _Pending p, exc) except -1:
        self._finish(p, exc)
        self.live -= 1
        if self.future.done():
            return 0
        if self.hedge is not None:
            if not (isinstance(exc, _RPCError) and exc.code in self.hedge.non_fatal_codes):
                self._cancel_others(None)
                self.future.set_exception(exc)
            elif self.attempts < self.hedge.max_attempts and self._send_next():
                pass
            elif self.live == 0:
                self.future.set_exception(exc)
            return 0
        self.delay = retry_after(self.rq.policy, self.rq.budget, exc, self.attempts,
                                 self.rq.idempotent, self.rq.deadline, monotonic(),
                                 self.core.uniform())
        if self.delay >= 0:
            self.future._zm_channel = None  # a cancel now just ends the call
            self.core.loop.call_later(self.delay, self.retry)
        else:
            self.future.set_exception(exc)
        return 0

    cdef int abandon(self, _Pending p) except -1:
        self._finish(p, None)
        self.live -= 1
        return 0

    cdef int succeeded(self, _Pending p) except -1:
        self._finish(p, None)
        self.live -= 1
        if self.rq.budget is not None:
            self.rq.budget.success()
        if self.hedge is not None and not self.future.done():
            self._cancel_others(p)
        return 0

    cdef int _cancel_others(self, _Pending winner) except -1:
        cdef _Pending other
        for other in self.attempts_live:
            if other is not winner and other.channel is not None:
                other.channel._cancelled(other.request_id)
                self._finish(other, None)
        self.attempts_live = []
        return 0

    def _cancelled(self, request_id):
        # The caller cancelled a hedged call: cancel every attempt.
        self._cancel_others(None)

    cdef bint _send_next(self) except -1:
        """Send one more attempt to a node not tried yet (False: none)."""
        if self.tried is None:
            self.tried = set()
        if self.node is not None:
            self.tried.add(self.node)
        node = self.balancer.pick(self.subset, self.key, self.tried)
        if node is None or node in self.tried:
            return False
        self.node = node
        self.attempts += 1
        self.core.send_async(self)
        return True

    def hedge_timer(self):
        if self.future.done() or self.attempts >= self.hedge.max_attempts:
            return
        if 0 < self.rq.deadline <= monotonic():
            return
        if self._send_next() and self.attempts < self.hedge.max_attempts:
            self.core.loop.call_later(self.hedge.delay, self.hedge_timer)

    def retry(self):
        if self.future.done():  # cancelled while waiting
            return
        self.attempts += 1
        try:
            if self.balancer is not None:
                if self.tried is None:
                    self.tried = set()
                self.tried.add(self.node)
                self.node = self.balancer.pick(self.subset, self.key, self.tried)
                if self.node is None:
                    raise _RPCError(C_UNAVAILABLE, f"no node of service "
                                    f"{self.rq.service!r} is registered", processed=False)
            self.core.send_async(self)
        except BaseException as exc:
            if not self.future.done():
                self.future.set_exception(exc)


@cython.auto_pickle(False)
cdef class ClientCore:
    """The call path of Client and AsyncClient: codec, deadline and
    metadata inheritance, node choice (a Balancer per service), channel
    pool, send, reply, decode, retries - in C, calling Python only for the
    codec and, when a service's nodes are first needed, the registry
    cache. Policy (which registry, which codecs, defaults) comes from the
    Python client that builds it; `secrets` (a zmicro.security MacSecrets,
    None when insecure) gives the MAC keys."""

    def __init__(self, dict codecs, str default_content_type, double timeout, *,
                 refresh, make_socket, bint is_async, secrets=None,
                 size_t max_message_size=0, RetryPolicy retry=None, budget=(10.0, 0.1),
                 double connect_timeout=1.0, size_t max_sockets=1024,
                 double idle_ttl=300.0, HedgingPolicy hedge=None, bint wait_for_ready=False):
        self.codecs = codec_entries(codecs)
        if default_content_type not in self.codecs:
            raise ValueError(f"no codec registered for {default_content_type!r}")
        if connect_timeout < 0:
            raise ValueError("connect_timeout must be >= 0 (0: the call's deadline)")
        if max_sockets < 1 or idle_ttl <= 0:
            raise ValueError("max_sockets must be >= 1 and idle_ttl > 0")
        if hedge is not None and not is_async:
            raise ValueError("hedging: hedged calls need an AsyncClient")
        RetryBudget(*budget)  # check it now
        self.default_codec = self.codecs[default_content_type]
        self.timeout = timeout
        self.refresh = refresh
        self.make_socket = make_socket
        self.is_async = is_async
        if secrets is not None:
            self.keys = KeySource(secrets)
        self.max_message_size = max_message_size
        self.retry = retry
        self.hedge = hedge
        self.budget_args = tuple(budget)
        self.budgets = {}
        self.connect_timeout = connect_timeout
        self.wait_for_ready = wait_for_ready
        self.max_sockets = max_sockets
        self.idle_ttl = idle_ttl
        self.balancers = {}
        self.local = _threading.local()
        self.pools = _weakref.WeakSet()
        self.all_channels = _weakref.WeakSet()
        self.rng = (<uint64_t>(monotonic() * 1e9)) | 1
        self.counters = PoolCounters()
        if is_async:
            self.apool = ChannelPool(self._open_async, max_sockets, idle_ttl, self.counters)

    cdef double uniform(self) noexcept:
        """A number in [0, 1) (xorshift64*; for jitter, not secrets)."""
        cdef uint64_t x = self.rng
        x ^= x >> 12
        x ^= x << 25
        x ^= x >> 27
        self.rng = x
        return <double>((x * 2685821657736338717ULL) >> 11) / 9007199254740992.0

    cdef CodecEntry _codec(self, str content_type):
        entry = self.codecs.get(content_type)
        if entry is None:
            raise ValueError(f"no codec registered for {content_type!r}")
        return <CodecEntry>entry

    cdef Balancer _balancer(self, str service):
        """The Balancer of `service`, made (from the registry cache) at its
        first call; the client updates it in place when the watch says the
        nodes changed."""
        balancer = self.balancers.get(service)
        if balancer is None:
            balancer = self.balancers[service] = self.refresh(service)
        return <Balancer>balancer

    cdef RetryBudget _budget(self, str service):
        budget = self.budgets.get(service)
        if budget is None:
            budget = self.budgets[service] = RetryBudget(*self.budget_args)
        return <RetryBudget>budget

    def _open_sync(self, str address, server_key):
        zsock, monitor = self.make_socket(address, server_key)
        channel = Channel(zsock, address, monitor)
        (<Channel>channel).max_frame = self.max_message_size
        self.all_channels.add(channel)
        return channel

    def _open_async(self, str address, server_key):
        loop = _asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
        elif loop is not self.loop:
            raise RuntimeError("an AsyncClient belongs to the event loop it was first used on")
        zsock, monitor = self.make_socket(address, server_key)
        channel = AsyncChannel(zsock, address, loop, monitor)
        (<AsyncChannel>channel).max_frame = self.max_message_size
        return channel

    cdef ChannelPool _sync_pool(self):
        pool = getattr(self.local, "pool", None)
        if pool is None:
            pool = self.local.pool = ChannelPool(self._open_sync, self.max_sockets,
                                                 self.idle_ttl, self.counters)
            self.pools.add(pool)
        return <ChannelPool>pool

    cdef Channel _sync_channel(self, str address, object server_key, double now):
        key = address if server_key is None else (address, server_key)
        return <Channel>self._sync_pool().get(key, address, server_key, now)

    cdef AsyncChannel _async_channel(self, str address, object server_key, double now):
        key = address if server_key is None else (address, server_key)
        return <AsyncChannel>self.apool.get(key, address, server_key, now)

    cdef inline double _connect_by(self, Request rq, double now) noexcept:
        """When an attempt of `rq` sent at `now` stops waiting for its
        connection (0: at the deadline; so does a wait_for_ready call)."""
        if self.connect_timeout > 0 and not rq.wait_for_ready:
            return now + self.connect_timeout
        return 0

    cdef int send_async(self, _Call c) except -1:
        """Send attempt `c.attempts` of an async call to `c.node`."""
        cdef double now = monotonic()
        cdef AsyncChannel channel
        if c.node is None:
            channel = self._async_channel(c.address, c.rq.server_key, now)
        else:
            channel = self._async_channel(c.node.address, c.rq.server_key, now)
            c.balancer.start(c.node)
        channel.send(c.rq, self._connect_by(c.rq, now), c, c.future)
        if c.hedge is not None:
            c.future._zm_channel = c  # a cancel cancels every attempt
        return 0

    def call(self, str service, str endpoint, request=None, *, timeout=None,
             dict metadata=None, str address=None, response_type=None,
             str content_type=None, server_key=None, retry=None, bint idempotent=False,
             key=None, str version=None, dict node_filter=None, HedgingPolicy hedge=None,
             wait_for_ready=None):
        """One call (see zmicro.Client.call / zmicro.AsyncClient.call)."""
        cdef CodecEntry entry
        cdef Context parent
        cdef Request rq
        cdef double now, t0, delay
        cdef Balancer balancer = None
        cdef Subset subset = None
        cdef NodeState node = None
        cdef RetryPolicy policy
        cdef RetryBudget budget = None
        cdef _Call c
        cdef int attempts = 1
        cdef set tried = None
        if self.closed:
            raise _RPCError(C_UNAVAILABLE, "client closed", processed=False)
        if hedge is None and idempotent:
            hedge = self.hedge
        if hedge is not None:
            if not self.is_async:
                raise ValueError("hedge: hedged calls need an AsyncClient")
            if not idempotent:
                raise ValueError("hedge: only idempotent calls are hedged (idempotent=True)")
        if retry is None:
            policy = self.retry
        elif retry is False:
            policy = None
        else:
            policy = <RetryPolicy?>retry
        entry = self.default_codec if content_type is None else self._codec(content_type)
        rq = Request.__new__(Request)
        rq.service = service
        rq.endpoint = endpoint
        rq.content_type = entry.name
        rq.body = entry.encode_value(request)
        if self.max_message_size and <size_t>len(rq.body) > self.max_message_size:
            raise too_large("request body", len(rq.body), self.max_message_size, False)
        now = monotonic()
        rq.deadline = now + (self.timeout if timeout is None else <double>timeout)
        rq.metadata = metadata
        parent = contextvar_get(CURRENT, None)
        if parent is not None:  # inside a handler: inherit deadline and metadata
            if 0 < parent.deadline_at < rq.deadline:
                rq.deadline = parent.deadline_at
            if parent._metadata:
                rq.metadata = ({**parent._metadata, **metadata} if metadata
                               else dict(parent._metadata))
            rq.trace_hi, rq.trace_lo, rq.span_id = parent.trace_hi, parent.trace_lo, parent.span_id
        if address is None:
            balancer = self._balancer(service)
            if version is not None or node_filter:
                subset = balancer.subset(version, node_filter)
            node = balancer.pick(subset, key, None)
            if node is None:
                raise _RPCError(C_UNAVAILABLE, _no_node(service, version, node_filter),
                                processed=False)
            address = node.address
        rq.core = self
        rq.server_key = server_key
        rq.idempotent = idempotent
        if wait_for_ready is None:  # (not a conditional expression: no bool boxed)
            rq.wait_for_ready = self.wait_for_ready
        else:
            rq.wait_for_ready = wait_for_ready
        if policy is not None:
            rq.policy = policy
            rq.budget = budget = self._budget(service)
        if self.keys is not None:
            rq.ring = self.keys.ring(service, now)
        rq.decode = entry.decoder_for(_Any if response_type is None else response_type)
        if rq.decode is IDENTITY:
            rq.decode = None
        if self.is_async:
            if node is None:  # a fixed address: a _Call only if a retry comes
                return self._async_channel(address, server_key, now).send(
                    rq, self._connect_by(rq, now), None, None)
            c = _Call.__new__(_Call)
            c.core, c.rq = self, rq
            c.balancer, c.subset, c.key, c.node, c.attempts = balancer, subset, key, node, 1
            c.future = CallFuture(loop=_asyncio.get_running_loop())
            if hedge is not None:
                c.hedge = hedge
                c.attempts_live = []
            self.send_async(c)
            if c.hedge is not None and not c.future.done():
                self.loop.call_later(c.hedge.delay, c.hedge_timer)
            return c.future
        while True:
            if parent is not None and parent._blocks_address == address:
                if node is not None:
                    balancer.finish(node, 0, False)
                raise _RPCError(
                    C_FAILED_PRECONDITION,
                    f"{parent.service}/{parent.endpoint} calls its own service from the thread "
                    f"that serves it: the call could never be answered; make the handler "
                    f"blocking=True, or async with AsyncClient")
            t0 = monotonic()
            if node is not None:
                balancer.start(node)
            try:
                value = self._sync_channel(address, server_key, t0).call(
                    rq, self._connect_by(rq, t0))
            except BaseException as exc:
                now = monotonic()
                attempt_done(balancer, node, now - t0, exc)
                if isinstance(exc, WireError):  # (caught here: nothing per call)
                    raise header_refused(rq, exc)  # (its __cause__: exc)
                delay = retry_after(policy, budget, exc, attempts, idempotent, rq.deadline,
                                    now, self.uniform())
                if delay < 0:
                    raise
                _time.sleep(delay)
                attempts += 1
                if node is not None:
                    if tried is None:
                        tried = set()
                    tried.add(node)
                    node = balancer.pick(subset, key, tried)
                    if node is None:
                        raise
                    address = node.address
                continue
            attempt_done(balancer, node, monotonic() - t0, None)
            if budget is not None:
                budget.success()
            break
        if rq.decode is None:
            return value
        try:
            return rq.decode(value)
        except Exception as exc:
            raise undecodable(exc) from None

    def deliver(self, str address not None, bytes frame not None, bytes event_id not None, *,
                str topic not None, double timeout, server_key=None):
        """Send the event `frame` (encode_event's, unchanged) to the node at
        `address` (async cores only): a Future resolved with None on the
        node's ack, failed as AsyncChannel.send_event says. The answer's
        MAC is checked with the key of `topic`, bound to `event_id`."""
        return self.deliver_event(address, frame, event_id, topic, timeout, server_key)

    def deliver_then(self, str address not None, bytes frame not None, bytes event_id not None,
                     *, str topic not None, double timeout, server_key=None, done not None):
        """deliver() without a Future: done(error) is called once, on the
        loop, with None on the node's ack, else with the exception the
        Future would have got (the path the embedded publisher's core
        takes, through a Completion). Returns the channel it went on."""
        cdef _CallbackCompletion sink = _CallbackCompletion.__new__(_CallbackCompletion)
        sink.done = done
        return self.deliver_event(address, frame, event_id, topic, timeout, server_key, sink)

    cdef object deliver_event(self, str address, bytes frame, bytes event_id, str topic,
                              double timeout, object server_key, Completion sink=None):
        """deliver(), for the core's callers (the embedded publisher's fast
        path): no keyword parsing. With `sink`, the end goes to
        sink.complete() and the channel is returned (see Completion)."""
        cdef Request rq
        cdef zm_header h
        cdef size_t used
        cdef double now
        cdef int rc
        if not self.is_async:
            raise TypeError("deliver() needs an async client core")
        if self.closed:
            raise _RPCError(C_UNAVAILABLE, "client closed", processed=False)
        _late_imports()
        # The frame's own request id keys its answer: read it (and that it
        # is an event) from the header.
        rc = zm_wire_read_prefix(<const uint8_t *>PyBytes_AS_STRING(frame),
                                 <size_t>PyBytes_GET_SIZE(frame), &h, &used)
        if rc != ZM_OK:
            raise_zm(rc)
        if h.kind != ZM_KIND_EVENT:
            raise ValueError(f"not an event frame (kind {h.kind})")
        now = monotonic()
        rq = Request.__new__(Request)
        rq.event = True
        rq.service = _TOPIC_PREFIX + topic
        rq.endpoint = ""
        rq.content_type = ""
        rq.body = frame
        rq.deadline = now + timeout
        rq.core = self
        rq.server_key = server_key
        if self.keys is not None:
            rq.ring = self.keys.ring(rq.service, now)
        return self._async_channel(address, server_key, now).send_event(
            rq, h.request_id, event_id, self._connect_by(rq, now), sink)

    def pick(self, str service):
        """The node the next call to `service` would go to (its address)."""
        cdef NodeState node = self._balancer(service).pick(None, None, None)
        return None if node is None else node.address

    def balancer(self, str service):
        """The Balancer of `service` (its nodes and their state)."""
        return self._balancer(service)

    def known_balancer(self, str service):
        """The Balancer of `service` if it has one yet (else None)."""
        return self.balancers.get(service)

    def event_loop(self):
        """The loop an async core belongs to (None before its first call)."""
        return self.loop

    def pool_stats(self):
        """Channel counters, summed over every thread's pool (or the loop's)."""
        pools = [self.apool] if self.is_async else list(self.pools)
        c = self.counters
        return {"open": sum(len(p) for p in pools if p is not None), "opens": c.opens,
                "reuses": c.reuses, "evictions": c.evictions, "idle_closed": c.idle_closes}

    def retry_budget(self, str service):
        return self._budget(service)

    def channels(self):
        """The channels open now: every thread's (sync), the loop's (async).
        For tests and debugging: their counters."""
        if self.is_async:
            return [] if self.apool is None else [
                c for c in self.apool.entries.values() if not (<ChannelBase>c).is_closed()]
        return [c for c in self.all_channels if not (<ChannelBase>c).is_closed()]

    def close(self):
        """Close every channel (sync: of every thread; do not call meanwhile)."""
        self.closed = True
        for channel in list(self.all_channels):
            channel.close()
        if self.apool is not None:
            self.apool.close()


cdef str _no_node(str service, str version, dict node_filter):
    if version is None and not node_filter:
        return f"no node of service {service!r} is registered"
    return (f"no node of service {service!r} matches version={version!r} "
            f"node_filter={node_filter!r}")
