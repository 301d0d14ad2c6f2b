# channel.pyx - a client's connection to one node: one DEALER, the requests
# sent on it and the answers read from it (design.md, the path of one
# call).
#
# Uses: message.pyx (Outgoing, Incoming, out_build, out_send, in_parse,
# in_verify, in_body, Parked: every message in and out), keyring.pyx
# (Keyring, MAC_OK), wire.pyx (_slice_text, fill_metadata, _text),
# socket.pyx (recv_until, recv_parts, socket_events, socket_fd,
# wait_until, poll_until, release_sent, BATCH), buffers.pyx (view_get), context.pyx
# (monotonic), errors.pyx (status codes, unsent, lost, undecodable,
# answer_refused, raise_errno), selector.pyx (NodeState), client.pyx (_Call:
# an async attempt reports to it).
#
# Channel serves the blocking Client (one per node per thread): call()
# sends and waits with the GIL released. AsyncChannel serves the
# AsyncClient (one per node per event loop): send() returns a Future that
# the reader callback resolves, many answers per wake. Request ids are
# unique per socket and every answer is bound to its request's nonce, so a
# late or replayed answer can never be taken for another call's: it is
# counted and dropped.

import asyncio as _asyncio

from cpython.object cimport PyObject_Call
import collections as _collections
from heapq import heapify as _heapify, heappop as _heappop, heappush as _heappush

#: What a client socket's monitor reports (client.py subscribes to these).
MONITOR_EVENTS = (ZM_EVENT_HANDSHAKE_FAILED_AUTH | ZM_EVENT_HANDSHAKE_FAILED_NO_DETAIL
                  | ZM_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZM_EVENT_CONNECTED
                  | ZM_EVENT_HANDSHAKE_SUCCEEDED | ZM_EVENT_DISCONNECTED
                  | ZM_EVENT_CONNECT_RETRIED)

#: Seconds a sync call waits for its reply blocked in libzmq alone (the
#: cheapest wait) before it watches the monitor too: a connection lost
#: later than this ends the call within this long of the loss.
cdef double QUICK_REPLY = 0.002

#: Seconds after a drop that an async channel waits for libzmq to say it
#: reconnects (it says so at once when it does) before it counts the
#: socket dead for good and closes it (the pool opens a fresh one).
cdef double LOST_GRACE = 0.05

#: Longest pushback (ms) a subscriber's retry-after-ms may ask for: an hour
#: (an event is refused as too old long before; a larger value means "later").
cdef long RETRY_AFTER_MAX_MS = 3_600_000


# _LOST_NOTE. A channel whose monitor said DISCONNECTED, and nothing since
# (PEER_LOST), never sends on its socket again. libzmq reports the drop
# before its session tears the connection's pipe down, so for a moment the
# socket may still take a message (ZMQ_EVENTS says POLLOUT) that is then
# lost with the pipe; and after a protocol error (a frame over MAXMSGSIZE)
# libzmq never reconnects at all. The next attempt closes the socket and
# goes through a fresh one: right whether libzmq was about to reconnect or
# not, and it costs one connect after a drop.


cdef object _monitor_events(monitor, str address):
    """Read `monitor`'s queue: (the RPCError a failed handshake means or
    None, the connection's state after these events (a PeerState; PEER_NEW:
    no news), whether the connection dropped meanwhile). Dropped means the
    connection that carried our requests is gone: their replies will never
    come. (docs/protocol.md §1 says how any client tells a refused key from
    an absent server with these events.)"""
    from zmq.utils.monitor import recv_monitor_message
    error = None
    state = PEER_NEW
    dropped = False
    while monitor.poll(0):
        event = recv_monitor_message(monitor)["event"]
        if event & ZM_EVENT_HANDSHAKE_FAILED_AUTH:
            error = _RPCError(C_UNAUTHENTICATED,
                              f"{address} refused this client's key (it is not on the "
                              f"server's allowlist)", processed=False)
        elif (event & (ZM_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZM_EVENT_HANDSHAKE_FAILED_PROTOCOL)
              and error is None):
            # Not UNAUTHENTICATED: libzmq reports the same event for a
            # handshake that timed out (HANDSHAKE_IVL; a node starved of
            # CPU, or killed mid-handshake) as for a wrong server key. Like
            # gRPC's failed TLS handshake, it is UNAVAILABLE, never sent:
            # the call moves on to another node.
            error = unsent(f"the secure handshake with {address} failed (is the server "
                           f"key right? or it timed out)")
        elif event & (ZM_EVENT_CONNECTED | ZM_EVENT_HANDSHAKE_SUCCEEDED):
            state = PEER_UP
        elif event & ZM_EVENT_DISCONNECTED:
            # libzmq follows a drop it will repair with CONNECT_RETRIED at
            # once; after a protocol error (a frame over MAXMSGSIZE) it
            # says nothing more: PEER_LOST stays.
            state = PEER_LOST
            dropped = True
        elif event & ZM_EVENT_CONNECT_RETRIED:
            state = PEER_DOWN
    return error, state, dropped


cdef object _refusal(str address):
    """UNAVAILABLE for an attempt whose node refuses connections: it was
    never sent (free to retry elsewhere, gRPC's fail-fast)."""
    return unsent(f"{address} refuses connections (nothing listens there, or it "
                  f"cannot be reached); wait_for_ready=True waits for it instead")


cdef object _dead_socket(str address):
    return unsent(f"the connection to {address} was dropped and libzmq will not "
                  f"reconnect it (a frame over max_message_size?): a new one opens")


cdef int _wait_either(void *sock, void *msock, double deadline_at) except -1:
    """Wait, GIL released, until `sock` has a message (1), `msock` (a
    monitor) has one (2; both: 3), or the monotonic `deadline_at` passes
    (0; deadline_at 0 waits forever)."""
    cdef zmq_pollitem_t items[2]
    items[0].socket = sock
    items[1].socket = msock
    items[0].fd = items[1].fd = 0
    items[0].events = items[1].events = ZM_POLLIN
    if not poll_until(items, 2, deadline_at):
        return 0
    return (1 if items[0].revents else 0) | (2 if items[1].revents else 0)


cdef object header_refused(Request rq, exc):
    """The RPCError for `rq`, whose header the writer refused (`exc`, a
    WireError, becomes its __cause__: callers such as the CLI tell a
    usage error by it): RESOURCE_EXHAUSTED for a name, a metadata entry
    or the whole header over its limit, else INVALID_ARGUMENT, naming the
    field. Nothing was sent."""
    err = _header_refusal(rq, exc)
    err.__cause__ = exc
    return err


cdef object _header_refusal(Request rq, exc):
    # (Runs only on the writer's error: the success path checks nothing twice.)
    cdef object md = rq.metadata or {}
    for field, text in (("service", rq.service), ("endpoint", rq.endpoint),
                        ("content type", rq.content_type)):
        problem = _text_problem(text, ZM_WIRE_MAX_NAME)
        if problem is not None:
            return _RPCError(problem[0], f"the {field} name {problem[1]}", processed=False)
    if len(md) > ZM_WIRE_MAX_METADATA:
        return _RPCError(C_RESOURCE_EXHAUSTED,
                         f"metadata has {len(md)} entries, over the limit of "
                         f"{ZM_WIRE_MAX_METADATA}", processed=False)
    for key, value in md.items():
        shown = repr(key) if len(key) <= 40 else repr(key[:40]) + "..."
        if key == "":
            return _RPCError(C_INVALID_ARGUMENT, "a metadata key is empty", processed=False)
        problem = _text_problem(key, ZM_WIRE_MAX_NAME)
        if problem is not None:
            return _RPCError(problem[0], f"metadata key {shown} {problem[1]}",
                             processed=False)
        if type(value) is str:
            try:
                value = (<str>value).encode("utf-8")
            except UnicodeEncodeError:
                return _RPCError(C_INVALID_ARGUMENT, f"the value of metadata key {shown} "
                                 f"is not valid UTF-8 text", processed=False)
        if len(value) > ZM_WIRE_MAX_VALUE:
            return _RPCError(C_RESOURCE_EXHAUSTED,
                             f"the value of metadata key {shown} is {len(value)} bytes, "
                             f"over the limit of {ZM_WIRE_MAX_VALUE}", processed=False)
    if exc.code == ZM_E_TOO_BIG:
        return _RPCError(C_RESOURCE_EXHAUSTED,
                         f"the request header (its metadata, mostly) is over the limit of "
                         f"{ZM_WIRE_MAX_HEADER} bytes", processed=False)
    return _RPCError(C_INVALID_ARGUMENT, f"the request header cannot be written: {exc}",
                     processed=False)


cdef object _text_problem(str text, size_t limit):
    """(code, what is wrong) for a header text the writer refuses, or None."""
    if text is None:
        return None
    try:
        n = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return C_INVALID_ARGUMENT, "is not valid UTF-8 text"
    if "\0" in text:
        return C_INVALID_ARGUMENT, "contains a NUL character"
    if <size_t>n > limit:
        return C_RESOURCE_EXHAUSTED, f"is {n} bytes, over the limit of {limit}"
    return None


cdef object _other_version(Incoming *m, str address):
    """An answer in another protocol version (unsigned: its keys may mean
    something else there). It can only say no: the call fails, never
    processed by this node's rules."""
    detail = _text(m.h.detail) if m.h.kind == ZM_KIND_ERROR else "an answer"
    return _RPCError(C_UNIMPLEMENTED,
                     f"{address} speaks wire protocol version {m.h.version}, this client "
                     f"{ZM_WIRE_VERSION} ({detail})", processed=False)


cdef object _retry_after_ms(const zm_header *h):
    """Seconds an event's subscriber asked its publisher to wait (metadata
    retry-after-ms, gRPC A6's pushback idea), or None."""
    cdef uint32_t i
    for i in range(h.n_metadata):
        if _text(h.metadata[i].key) == "retry-after-ms":
            # Untrusted text (any peer in insecure mode): only 1 to 10
            # ASCII digits count, capped at RETRY_AFTER_MAX_MS; anything
            # else is no pushback (int() of 400 digits divided would raise
            # OverflowError out of the reader and strand the call).
            value = _data(h.metadata[i].value)
            if not (0 < len(value) <= 10 and value.isdigit() and value.isascii()):
                return None
            return min(int(value), RETRY_AFTER_MAX_MS) / 1000.0
    return None


@cython.freelist(256)
@cython.auto_pickle(False)
cdef class Request:
    """Made by ClientCore.call; not constructible from Python."""

    def __init__(self):
        raise TypeError("Request objects are made by the client core")


@cython.auto_pickle(False)
cdef class ChannelBase:

    def __init__(self, zsock, str address, monitor=None):
        self.zsock = zsock
        self.sock = socket_handle(zsock)
        self.monitor = monitor
        if monitor is not None:
            self.msock = socket_handle(monitor)
        self.address = address

    cdef bint is_closed(self) noexcept:
        return self.sock == NULL

    cdef bint is_busy(self) noexcept:
        return False

    @property
    def closed(self):
        return self.is_closed()

    cdef int build(self, Outgoing *o, Request rq, uint64_t request_id,
                   uint8_t *nonce) except -1:
        """Build request `request_id` of `rq` into *o (signed with rq.ring:
        its nonce to nonce[0..16)), refusing one whose largest frame the
        peer would drop: MAXMSGSIZE is per frame and drops the connection,
        with every call on it. out_close(o) must follow."""
        cdef zm_header h
        cdef Py_buffer bview
        cdef zm_slice b
        cdef double budget
        header_init(&h, ZM_KIND_REQUEST, request_id)
        if rq.deadline > 0:
            budget = (rq.deadline - monotonic()) * 1e6
            h.deadline_us = <uint64_t>budget if budget >= 1 else 1
        h.trace_hi = rq.trace_hi
        h.trace_lo = rq.trace_lo
        h.span_id = rq.span_id
        h.max_reply = reply_limit_stated(self.max_frame)  # the server refuses larger replies
        _slice_text(rq.service, &h.service)
        _slice_text(rq.endpoint, &h.endpoint)
        _slice_text(rq.content_type, &h.content_type)
        fill_metadata(rq.metadata, &h)
        view_get(rq.body, &bview, &b)
        try:
            out_build(o, &h, rq.body, &b, rq.ring, nonce, NULL)
        finally:
            PyBuffer_Release(&bview)
        if self.max_frame and o.largest > self.max_frame:
            raise too_large("request (header and body)", o.largest, self.max_frame, False)
        return 0

    cdef bint accept(self, Incoming *m) except -1:
        """Parse the received *m: True if it is a reply or an error (or one
        in another protocol version); else it is counted (malformed, or a
        kind never the answer to a call, such as a pong) and False."""
        if in_parse(m, False) != ZM_OK and m.rc != ZM_E_VERSION:
            self.n_malformed += 1
            return False
        if m.h.kind != ZM_KIND_REPLY and m.h.kind != ZM_KIND_ERROR:
            self.n_stale += 1
            return False
        return True

    cdef object answer(self, Incoming *m, Request rq, const uint8_t *nonce, bint *failed):
        """The outcome of a parsed reply or error *m to `rq` (its request id
        matched): the body, or (failed[0] set) the RPCError it says, or
        UNAUTHENTICATED when it fails the MAC checks bound to the
        request's `nonce`."""
        cdef zm_slice bind
        failed[0] = True
        if m.rc != ZM_OK:
            return _other_version(m, self.address)
        if rq.ring is not None:
            bind.ptr = nonce
            bind.len = ZM_NONCE_SIZE
            if in_verify(m, rq.ring, &bind, NULL) != MAC_OK:
                self.n_unauthenticated += 1
                if rq.event:
                    # Dropped, and the delivery waits on: failing it would let
                    # whoever forged this make the publisher dead-letter it.
                    return None
                return answer_refused(self.address)
        if m.h.kind == ZM_KIND_ERROR:
            exc = _RPCError(m.h.status if m.h.status else C_UNKNOWN, _text(m.h.detail),
                            id=_text(m.h.service),
                            processed=not (m.h.flags & ZM_FLAG_NOT_PROCESSED))
            if rq.event:
                exc.retry_after = _retry_after_ms(&m.h)
            return exc
        failed[0] = False
        return None if rq.event else in_body(m)

    cdef int send_cancel(self, uint64_t request_id, Request rq) except -1:
        """Tell the server the caller gave up (best effort: never blocks).
        It names the service called, whose key signs it (a secure server
        ignores an unsigned cancel)."""
        cdef zm_header h
        cdef Outgoing o
        cdef uint8_t nonce[ZM_NONCE_SIZE]
        header_init(&h, ZM_KIND_CANCEL, request_id)
        _slice_text(rq.service, &h.service)
        o.n = 0
        try:
            out_build(&o, &h, None, NULL, rq.ring, nonce, NULL)
            out_send(&o, self.sock, NULL, ZM_DONTWAIT)
        finally:
            out_close(&o)
        return 0


@cython.auto_pickle(False)
cdef class Channel(ChannelBase):

    def close(self):
        if self.zsock is not None:
            if self.monitor is not None:
                self.zsock.disable_monitor()
                self.monitor.close(linger=0)
                self.monitor = None
                self.msock = NULL
            self.zsock.close(linger=0)
            self.zsock = None
            self.sock = NULL

    cdef int _read_monitor(self, bint in_flight) except -1:
        """Take the monitor's news. A server that refuses our key is an
        error now, and the socket is closed so that it stops reconnecting
        (libzmq's RECONNECT_STOP is a draft API). With a call `in_flight`,
        a dropped connection ends it: its reply cannot come."""
        error, state, dropped = _monitor_events(self.monitor, self.address)
        if state != PEER_NEW:
            self.peer_state = state
        if error is not None:
            self.close()
            if in_flight and dropped:  # sent: it may have run, so not `error`
                raise lost(self.address)
            raise error
        if in_flight and dropped:
            raise lost(self.address)
        return 0

    cdef int _wait_writable(self, double deadline_at, bint wait_for_ready) except -2:
        """Wait for room to send (the connection is up), watching the
        monitor: 1 when there is room, 0 when `deadline_at` passes. Fails
        at once (UNAVAILABLE, unsent: the balancer or the retry moves on)
        when the node refuses connections, or its connection was lost and
        not yet back, unless `wait_for_ready`. -1: libzmq dropped the
        connection for good (after a frame over MAXMSGSIZE), and the
        socket is closed: the attempt goes through a fresh one."""
        cdef int events
        if self.monitor is None:
            return wait_until(self.sock, ZM_POLLOUT, deadline_at)
        import zmq
        poller = zmq.Poller()
        poller.register(self.zsock, zmq.POLLOUT)
        poller.register(self.monitor, zmq.POLLIN)
        first = True
        while True:
            left = deadline_at - monotonic() if deadline_at > 0 else 1.0
            if left <= 0:
                return 0
            ready = dict(poller.poll(0 if first else max(1, int(left * 1000))))
            if self.monitor in ready:
                self._read_monitor(False)
            if self.zsock in ready:
                return 1
            if self.peer_state == PEER_LOST:
                # Dropped, and all libzmq had to say is read: it is not
                # reconnecting (it says so at once when it does).
                self.close()
                return -1
            if self.peer_state == PEER_DOWN and not wait_for_ready:
                raise _refusal(self.address)
            first = False

    def __dealloc__(self):
        if self.zsock is not None and not self.zsock.closed:
            self.zsock.close(linger=0)

    cdef object call(self, Request rq, double connect_by, bint may_reopen=True):
        """One attempt of `rq`: its reply body (bytes, or a memoryview for
        large ones). Raises RPCError for an error reply; UNAVAILABLE if the
        request could not be sent before the deadline or `connect_by`, or
        the node refuses connections (nothing was processed; see
        _wait_writable), or if the connection was lost while waiting
        (maybe processed); DEADLINE_EXCEEDED if the reply did not come in
        time (a cancel tells the server). A socket dead for good is
        replaced (once, if `may_reopen`) and the attempt sent on the new
        one: nothing had been sent."""
        cdef double wait_until_t, slice_end
        cdef uint64_t request_id
        cdef uint8_t nonce[ZM_NONCE_SIZE]
        cdef Outgoing o
        cdef Incoming m
        cdef int err, ready
        cdef bint failed, got, quick = True
        if self.sock == NULL:
            raise unsent("channel closed")
        if self.peer_state == PEER_LOST:
            # Dropped, and libzmq said nothing since (_LOST_NOTE): a fresh
            # socket, before anything is sent.
            if not may_reopen:
                raise _dead_socket(self.address)
            self.close()
            return rq.core._sync_channel(self.address, rq.server_key, monotonic()).call(
                rq, connect_by, False)
        if rq.deadline > 0 and monotonic() >= rq.deadline:
            raise _RPCError(C_DEADLINE_EXCEEDED, "deadline passed before the call was sent",
                            processed=False)
        wait_until_t = rq.deadline
        if connect_by > 0 and (rq.deadline <= 0 or connect_by < rq.deadline):
            wait_until_t = connect_by
        self.next_id += 1
        request_id = self.next_id
        o.n = 0
        try:
            self.build(&o, rq, request_id, nonce)
            # Usually there is room at once; otherwise wait for the
            # connection (IMMEDIATE: nothing queues for a peer not
            # connected) and send the same message: built and signed once.
            while out_send(&o, self.sock, NULL, ZM_DONTWAIT) == EAGAIN:
                ready = self._wait_writable(wait_until_t, rq.wait_for_ready)
                if ready < 0:
                    if not may_reopen:
                        raise _dead_socket(self.address)
                    break
                if not ready:
                    raise unsent(f"could not reach {self.address} in time")
        finally:
            out_close(&o)
        if self.sock == NULL:  # closed, dead for good: the pool opens a new one
            return rq.core._sync_channel(self.address, rq.server_key, monotonic()).call(
                rq, connect_by, False)

        # Wait for the answer to this request id; anything else is stale.
        # Blocked in libzmq alone first (a reply usually comes within
        # QUICK_REPLY); then on the socket and its monitor together, so a
        # connection lost (the node killed) ends the call at once, not at
        # its deadline.
        while True:
            if quick or self.msock == NULL:
                slice_end = rq.deadline
                if self.msock != NULL:
                    quick = False
                    slice_end = monotonic() + QUICK_REPLY
                    if 0 < rq.deadline < slice_end:
                        slice_end = rq.deadline
                got = recv_until(&m.r, self.sock, slice_end)
                self.n_wakes += 1
                if not got and slice_end != rq.deadline:
                    continue
            else:
                ready = _wait_either(self.sock, self.msock, rq.deadline)
                self.n_wakes += 1
                if ready & 2:
                    self._read_monitor(True)
                got = False
                if ready & 1:
                    m.r.n = m.r.extra = 0
                    err = recv_parts(&m.r, self.sock, ZM_DONTWAIT)
                    if err:
                        received_close(&m.r)
                        if err != EAGAIN:
                            raise_errno(err)
                        continue
                    got = True
                elif ready:
                    continue
            if not got:
                self.send_cancel(request_id, rq)
                raise _RPCError(C_DEADLINE_EXCEEDED,
                                f"no reply from {self.address} before the deadline",
                                processed=None)
            try:
                if not self.accept(&m):
                    continue
                if m.h.request_id != request_id:
                    self.n_stale += 1
                    continue
                value = self.answer(&m, rq, nonce, &failed)
            finally:
                in_close(&m)
            release_sent()
            if failed:
                raise value
            return value


@cython.auto_pickle(False)
cdef class Completion:

    cdef int complete(self, object error) except -1:
        return 0


@cython.final
@cython.auto_pickle(False)
cdef class _CallbackCompletion(Completion):
    """A Completion calling a Python function (ClientCore.deliver_then)."""

    cdef object done

    cdef int complete(self, object error) except -1:
        self.done(error)
        return 0


def _complete_later(Completion sink, error):
    """An end that came inside send_event, delivered from the loop (the
    sender's bookkeeping is never re-entered)."""
    sink.complete(error)


@cython.freelist(256)
@cython.auto_pickle(False)
cdef class _Pending:
    pass


@cython.auto_pickle(False)
cdef class AsyncChannel(ChannelBase):

    def __init__(self, zsock, str address, loop, monitor=None):
        ChannelBase.__init__(self, zsock, address, monitor)
        self.loop = loop
        self.future_kw = {"loop": loop}
        self.pending = {}
        self.timers = []
        self.outbox = []
        self.backlog = _collections.deque()
        self.rpc_error = _RPCError
        self.fd = socket_fd(self.sock)
        loop.add_reader(self.fd, self._on_readable)
        if monitor is not None:
            loop.add_reader(monitor.getsockopt(ZM_OPT_FD), self._on_monitor)
            loop.call_soon(self._on_monitor)

    cdef bint is_closed(self) noexcept:
        return self.closed

    cdef bint is_busy(self) noexcept:
        return len(self.pending) > 0

    def _on_monitor(self):
        # A server that refuses our key fails the calls waiting to be sent
        # now, and the socket closes so that it stops reconnecting. A lost
        # connection fails the calls sent on it: their replies cannot come.
        # A node refusing connections fails the calls waiting to be sent
        # (unless they wait for it), so they go elsewhere now.
        cdef _Pending p
        if self.closed or self.monitor is None:
            return
        error, state, dropped = _monitor_events(self.monitor, self.address)
        if state != PEER_NEW:
            self.peer_state = state
        if dropped:  # first: the calls sent may have run (lost, not `error`)
            for p in [p for p in self.pending.values() if (<_Pending>p).sent]:
                del self.pending[p.request_id]
                if self._open(p):
                    self._fail(p, lost(self.address))
        if error is not None:
            self.close(error)
            return
        if self.peer_state == PEER_LOST:
            self.loop.call_later(LOST_GRACE, self._lost_check)
        elif self.peer_state == PEER_DOWN:
            self._refused()

    def _lost_check(self):
        """LOST_GRACE after a drop: libzmq said nothing of reconnecting, so
        it never will (a frame over MAXMSGSIZE): close the socket (what
        waits to be sent fails unsent; the pool opens a fresh one)."""
        if self.closed or self.monitor is None:
            return
        self._on_monitor()
        if not self.closed and self.peer_state == PEER_LOST:
            self.close(_dead_socket(self.address))

    cdef int _refused(self) except -1:
        """Fail the attempts waiting to be sent to a node that refuses
        connections, but those that wait for it (wait_for_ready)."""
        cdef _Pending p
        for p in [p for p in self.pending.values()
                  if not (<_Pending>p).sent and not (<_Pending>p).rq.wait_for_ready]:
            del self.pending[p.request_id]
            p.parked = None  # (leaves the backlog or outbox unsent)
            if p.owner is None or not p.future.done():
                self._fail(p, _refusal(self.address))
        return 0

    def close(self, error=None):
        """Fail what is pending (UNAVAILABLE, or `error`) and close the socket."""
        cdef _Pending p
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.fd)
        if self.timer is not None:
            self.timer.cancel()
        pending = list(self.pending.values())
        self.pending.clear()
        for p in pending:
            if self._open(p):
                self._fail(p, error if error is not None else self.rpc_error(
                    C_UNAVAILABLE, f"the channel to {self.address} closed",
                    processed=None if p.sent else False))
        self.outbox.clear()
        self.backlog.clear()
        if self.monitor is not None:
            self.loop.remove_reader(self.monitor.getsockopt(ZM_OPT_FD))
            self.zsock.disable_monitor()
            self.monitor.close(linger=0)
            self.monitor = None
            self.msock = NULL
        self.zsock.close(linger=0)
        self.sock = NULL

    cdef object send(self, Request rq, double connect_by, _Call owner, object fut):
        """Send an attempt of `rq` now; return a Future of its decoded
        reply (see Channel.call). With `owner`, the outcome goes to it
        (node accounting, retries) and `fut` is the caller's Future,
        reused across attempts."""
        cdef Outgoing o
        cdef _Pending p
        cdef int err
        if self.peer_state == PEER_LOST and not self.closed:
            # Dropped, and libzmq said nothing since: see _LOST_NOTE. Nothing
            # is sent yet: the attempt goes through a fresh socket (the pool
            # opens it).
            self.close()
            return rq.core._async_channel(self.address, rq.server_key, monotonic()).send(
                rq, connect_by, owner, fut)
        p = _Pending.__new__(_Pending)
        if fut is None:
            # PyObject_Call with a kwargs dict made once: calling with
            # loop=... would build that dict for every call.
            fut = PyObject_Call(CallFuture, (), self.future_kw)
        p.future = fut
        p.rq = rq
        p.owner = owner
        p.channel = self
        if owner is not None:
            p.node = owner.node
            p.started = monotonic()
            owner.live += 1
            if owner.hedge is not None:
                owner.attempts_live.append(p)
        if self.closed:
            self._fail(p, unsent("client closed"))
            return fut
        if rq.deadline > 0 and monotonic() >= rq.deadline:
            self._fail(p, self.rpc_error(C_DEADLINE_EXCEEDED,
                                         "deadline passed before the call was sent",
                                         processed=False))
            return fut
        self.next_id += 1
        p.request_id = self.next_id
        p.deadline_at = rq.deadline
        p.connect_by = connect_by if 0 < connect_by and (
            rq.deadline <= 0 or connect_by < rq.deadline) else 0
        if owner is None or owner.hedge is None:
            # (A hedged call's Future cancels every attempt.) Not the
            # _Pending itself: it holds the Future, and a cycle would keep
            # both alive until the garbage collector ran.
            fut._zm_channel = self
            fut._zm_request_id = p.request_id
        o.n = 0
        try:
            try:
                self.build(&o, rq, p.request_id, p.nonce)
            except (_RPCError, WireError) as exc:
                # Too large, or a header that cannot be written (metadata):
                # not the node's fault, nothing to retry.
                p.owner = None
                if owner is not None:
                    owner.abandon(p)
                fut.set_exception(header_refused(rq, exc) if isinstance(exc, WireError)
                                  else exc)
                return fut
            if not self._enqueue(p, &o):
                return fut
        finally:
            out_close(&o)
        self._timers_for(p)
        return fut

    cdef bint _enqueue(self, _Pending p, Outgoing *o) except -1:
        """Send the built *o of `p` now, or queue it (its parts move into
        p.parked); False if `p` failed instead (a lost connection)."""
        if self.peer_state < 0 and (self.backlog or socket_events(self.sock) & ZM_POLLOUT == 0):
            # The connection is lost and not back: go elsewhere now
            # (or wait for it, wait_for_ready).
            if not p.rq.wait_for_ready:
                self._fail(p, _refusal(self.address))
                return False
        self.pending[p.request_id] = p
        if self.read_scheduled and not self.backlog:
            # A burst: this loop iteration sent already, and its reader
            # runs at the iteration's end: send there, together. libzmq
            # wakes its I/O thread once for back-to-back messages, not
            # once for each message sent between other work.
            p.parked = Parked.take(o)
            self.outbox.append(p)
        elif self.backlog or out_send(o, self.sock, NULL, ZM_DONTWAIT) == EAGAIN:
            p.parked = Parked.take(o)  # sent as built, when there is room
            self.backlog.append(p)
        else:
            p.sent = True
        return True

    cdef int _timers_for(self, _Pending p) except -1:
        """After _enqueue(p): its deadline, its connect deadline, a read."""
        if p.deadline_at > 0:
            # Deadlines usually come in the order of `pending` (one timeout
            # for every call): those need no timer entry of their own; a
            # call due before one sent earlier goes into the heap.
            if p.deadline_at >= self.last_deadline:
                self.last_deadline = p.deadline_at
            else:
                _heappush(self.timers, (p.deadline_at, p.request_id))
            if self.timer is None or p.deadline_at < self.timer_at:
                self._arm_timer(p.deadline_at)
        if p.connect_by > 0 and not p.sent and self.backlog:
            self._connect_timer(p)
        self._schedule_read()
        return 0

    cdef object send_event(self, Request rq, uint64_t request_id, bytes event_id,
                           double connect_by, Completion sink=None):
        """Send the prebuilt event frame rq.body as is (ClientCore.deliver);
        a Future resolved with None on its ack (a reply bound to
        `event_id`, MAC checked with rq.ring), failed with the RPCError of
        an error answer (``retry_after`` set), UNAVAILABLE when unsent or
        lost, DEADLINE_EXCEEDED at rq.deadline. The frame's own
        `request_id` keys it: ValueError if a call on this channel has it.
        With `sink`, no Future: the same end goes to sink.complete(), and
        the channel it went on is returned."""
        cdef Outgoing o
        cdef _Pending p
        cdef Py_buffer view
        cdef zm_slice frame
        if self.peer_state == PEER_LOST and not self.closed:
            self.close()  # see _LOST_NOTE
            return rq.core._async_channel(self.address, rq.server_key, monotonic()).send_event(
                rq, request_id, event_id, connect_by, sink)
        if len(event_id) != ZM_NONCE_SIZE or request_id in self.pending:
            raise ValueError("an event id is 16 bytes, and a request id in flight on this "
                             "channel cannot be reused")
        p = _Pending.__new__(_Pending)
        if sink is None:
            fut = PyObject_Call(CallFuture, (), self.future_kw)
            p.future = fut
            fut._zm_channel = self
            fut._zm_request_id = request_id
        else:
            fut = self  # (what is returned: the channel it went on)
            p.sink = sink
            p.sending = True  # (an end before this returns is deferred)
        p.rq = rq
        p.channel = self
        try:
            if self.closed:
                self._fail(p, unsent("client closed"))
                return fut
            memcpy(p.nonce, PyBytes_AS_STRING(event_id), ZM_NONCE_SIZE)
            p.request_id = request_id
            p.deadline_at = rq.deadline
            p.connect_by = connect_by if 0 < connect_by < rq.deadline else 0
            o.n = 0
            o.largest = 0
            view_get(rq.body, &view, &frame)
            try:
                if self.max_frame and frame.len > self.max_frame:
                    self._fail(p, too_large("event", frame.len, self.max_frame, False))
                    return fut
                _out_part(&o, &frame, rq.body)
                if not self._enqueue(p, &o):
                    return fut
            finally:
                out_close(&o)
                PyBuffer_Release(&view)
            self._timers_for(p)
        finally:
            p.sending = False
        return fut

    cdef int _connect_timer(self, _Pending p) except -1:
        """A timer for `p` waiting for room: unsent at connect_by, it fails."""
        _heappush(self.timers, (p.connect_by, p.request_id))
        if self.timer is None or p.connect_by < self.timer_at:
            self._arm_timer(p.connect_by)
        return 0

    cdef int _flush_outbox(self) except -1:
        """Send the burst queued by this loop iteration's calls; what finds
        no room waits in the backlog (with its connect deadline)."""
        cdef _Pending p
        cdef bint full = False
        for p in self.outbox:
            if p.parked is None:
                continue  # cancelled or failed while queued
            if not full and not self.backlog:
                if out_send(&p.parked.o, self.sock, NULL, ZM_DONTWAIT) != EAGAIN:
                    p.sent = True
                    p.parked = None
                    continue
                full = True
            self.backlog.append(p)
            if p.connect_by > 0:
                self._connect_timer(p)
        self.outbox.clear()
        return 0

    cdef bint _open(self, _Pending p) except -1:
        """Whether `p`, out of `pending`, still waits for its end."""
        return p.sink is not None or not p.future.done()

    cdef int _complete(self, _Pending p, object error) except -1:
        """Give `p`'s end to its sink: later if send_event is still on the
        stack; what the sink raises goes to the loop's exception handler
        (this channel's reads must go on)."""
        sink = p.sink
        p.sink = None  # (once)
        if p.sending:
            self.loop.call_soon(_complete_later, sink, error)
            return 0
        try:
            (<Completion>sink).complete(error)
        except Exception as exc:
            self.loop.call_exception_handler({
                "message": "an event delivery's completion raised", "exception": exc})
        return 0

    cdef int _fail(self, _Pending p, exc) except -1:
        """End `p` with `exc` (its call may retry it elsewhere)."""
        if p.sink is not None:
            return self._complete(p, exc)
        if p.owner is not None:
            p.owner.failed(p, exc)
        elif p.rq.policy is not None and not p.future.done():
            _Call.after_first(p).failed(p, exc)
        else:
            p.future.set_exception(exc)
        return 0

    cdef int _answered(self, _Pending p) except -1:
        """The node answered `p` (whatever the answer means to the caller)."""
        if p.owner is not None:
            p.owner.succeeded(p)
        elif p.rq.budget is not None:
            p.rq.budget.success()
        return 0

    cdef int _succeed(self, _Pending p, value) except -1:
        if p.sink is not None:
            return self._complete(p, None)  # (an event: no budget, no owner)
        self._answered(p)
        # (A Future with no owner is never done while its call is pending:
        # cancelling it takes the call out of `pending`.)
        if p.owner is None or not p.future.done():
            p.future.set_result(value)
        return 0

    cdef int _flush_backlog(self) except -1:
        cdef _Pending p
        while self.backlog:
            p = <_Pending>self.backlog[0]
            if p.parked is not None:  # (else timed out or cancelled while waiting)
                if out_send(&p.parked.o, self.sock, NULL, ZM_DONTWAIT) == EAGAIN:
                    break
                p.sent = True
            self.backlog.popleft()
            p.parked = None
        return 0

    cdef int _schedule_read(self) except -1:
        # Once per loop iteration, however many calls it makes: looking at
        # ZMQ_EVENTS costs libzmq a round of command processing (and a
        # getpid() syscall), too much to pay per call.
        if not self.read_scheduled and not self.closed:
            self.read_scheduled = True
            self.loop.call_soon(self._on_readable)
        return 0

    cdef int _check_events(self) except -1:
        # The FD is edge-triggered: after every send, look at ZMQ_EVENTS
        # ourselves, or a reply already queued would wait for the next edge.
        if not self.read_scheduled and not self.closed:
            if socket_events(self.sock) & ZM_POLLIN or (
                    self.backlog and socket_events(self.sock) & ZM_POLLOUT):
                self.read_scheduled = True
                self.loop.call_soon(self._on_readable)
        return 0

    def _on_readable(self):
        self.read_scheduled = False
        if self.closed:
            return
        if self.outbox:
            self._flush_outbox()
        events = socket_events(self.sock)
        if self.backlog and events & ZM_POLLOUT:
            self._flush_backlog()
        if events & ZM_POLLIN:
            self._drain()
        release_sent()
        self._check_events()

    cdef int _drain(self) except -1:
        cdef Incoming m
        cdef _Pending p
        cdef int err, i
        cdef bint failed
        for i in range(BATCH):
            m.r.n = m.r.extra = 0
            err = recv_parts(&m.r, self.sock)
            try:
                if err:
                    if err == EAGAIN:
                        break
                    raise_errno(err)
                if not self.accept(&m):
                    continue
                p = self.pending.pop(m.h.request_id, None)
                if p is None:
                    self.n_stale += 1
                    continue
                if p.owner is not None and p.future.done():
                    p.owner.abandon(p)  # a hedged attempt that lost the race
                    continue
                value = self.answer(&m, p.rq, p.nonce, &failed)
            finally:
                in_close(&m)
            if failed:
                if value is None:  # a forged answer to an event: it waits on
                    self.pending[p.request_id] = p
                    if not p.requeued:
                        # Out of sending order now: its deadline needs a heap
                        # entry - one, however many forged answers come (the
                        # entry stays until the deadline, or a rebuild
                        # that keeps it).
                        p.requeued = True
                        _heappush(self.timers, (p.deadline_at, p.request_id))
                        if self.timer is None or p.deadline_at < self.timer_at:
                            self._arm_timer(p.deadline_at)
                    continue
                self._fail(p, value)
                continue
            if p.rq.decode is not None:
                try:
                    value = p.rq.decode(value)
                except Exception as exc:
                    self._answered(p)
                    p.future.set_exception(undecodable(exc))
                    continue
            self._succeed(p, value)
        return 0

    def _cancelled(self, uint64_t request_id):
        # CallFuture.cancel(): forget the call and tell the server (or
        # never send it).
        cdef _Pending p = self.pending.pop(request_id, None)
        if p is None:
            return
        p.parked = None
        if p.sent and not self.closed:
            self._cancel_remote(p)

    cdef int _cancel_remote(self, _Pending p) except -1:
        self.send_cancel(p.request_id, p.rq)
        self._check_events()
        return 0

    cdef int _arm_timer(self, double deadline_at) except -1:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = deadline_at
        self.timer = self.loop.call_later(max(0.0, deadline_at - monotonic()), self._on_timer)
        return 0

    def _on_timer(self):
        """End the calls whose deadline (or connect deadline) passed. The
        timer fires at the earliest of: the first pending call's deadline
        (`pending` keeps sending order, and deadlines that came in order
        have no other entry), and the heap's first entry (deadlines out of
        order, connect deadlines)."""
        cdef _Pending p
        cdef double now = monotonic()
        cdef double next_at = 0
        self.timer = None
        due = []
        for p in self.pending.values():
            if p.deadline_at > now:
                break  # (one due sooner, sent later, is in the heap)
            if p.deadline_at > 0:
                due.append(p)
        while self.timers and self.timers[0][0] <= now:
            deadline_at, request_id = _heappop(self.timers)
            p = self.pending.get(request_id)
            if p is not None and (0 < p.deadline_at <= now or not p.sent):
                due.append(p)  # (a connect timer of a call sent in time: nothing)
        for p in due:
            if self.pending.get(p.request_id) is not p:
                continue  # ended meanwhile (listed twice, or failed by another)
            del self.pending[p.request_id]
            p.parked = None  # (queued, never to be sent)
            if p.owner is not None and p.future.done():
                continue
            if not p.sent:
                self._fail(p, unsent(f"could not reach {self.address} in time"))
            else:
                self._cancel_remote(p)
                self._fail(p, self.rpc_error(
                    C_DEADLINE_EXCEEDED, f"no reply from {self.address} before the deadline",
                    processed=None))
        # Entries of calls answered meanwhile stay in the heap until their
        # deadline; rebuild when they outnumber the live ones.
        if len(self.timers) > 2 * len(self.pending) + 64:
            self.timers = [(p.deadline_at, rid) for rid, p in self.pending.items()
                           if p.deadline_at > 0]
            self.timers += [(p.connect_by, rid) for rid, p in self.pending.items()
                            if p.connect_by > 0 and not p.sent]
            _heapify(self.timers)
        for p in self.pending.values():
            if p.deadline_at > 0:
                next_at = p.deadline_at
                break
        if self.timers and (next_at <= 0 or self.timers[0][0] < next_at):
            next_at = self.timers[0][0]
        if next_at > 0:
            self._arm_timer(next_at)

    @property
    def in_flight(self):
        return len(self.pending)

    @property
    def timer_entries(self):
        """Entries in the timer heap, live or stale (tests: it stays bounded)."""
        return len(self.timers)


class CallFuture(_asyncio.Future):
    """The Future of one AsyncClient call: cancelling it cancels the call
    (a cancel frame tells the server). Without a done-callback per call."""

    # The channel of its one attempt and the attempt's request id, or the
    # _Call of a hedged call (any request id).
    __slots__ = ("_zm_channel", "_zm_request_id")

    def cancel(self, msg=None):
        if not _asyncio.Future.cancel(self, msg):
            return False
        channel = self._zm_channel
        if channel is not None:
            self._zm_channel = None
            channel._cancelled(self._zm_request_id)
        return True
