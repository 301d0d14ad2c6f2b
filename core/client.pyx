# client.pyx - the client side of the path of one call (design.md): write
# the request header in C, send, wait for the reply with the GIL released,
# match it to the request id, hand the body back.
#
# Channel serves the blocking Client (one per node per thread); AsyncChannel
# the AsyncClient (one per node per event loop): its call() sends at once and
# returns a Future that the reader callback resolves, many replies per wake.
# Request ids are unique per socket, so a late reply can never be taken for
# the answer to a later call: it is counted and dropped.

import asyncio as _asyncio
import collections as _collections
import heapq as _heapq
import threading as _threading
import time as _time
import weakref as _weakref
from typing import Any as _Any


cdef MacKey write_request(uint8_t *out, size_t *written, uint64_t request_id,
                         double deadline_at, str service, str endpoint,
                         str content_type, dict metadata, uint64_t trace_hi,
                         uint64_t trace_lo, uint64_t span_id, uint32_t flags,
                         Keyring ring, uint8_t *nonce):
    """Write a request header into out[0..ZM_WIRE_MAX_HEADER); signed when
    `ring` is given: returns the key its MAC frame must be computed with."""
    cdef zm_header h
    cdef MacKey key = None
    cdef double budget
    memset(&h, 0, <size_t>(<char *>&h.metadata - <char *>&h))
    h.version = ZM_WIRE_VERSION
    h.kind = ZM_KIND_REQUEST
    h.flags = flags
    h.request_id = request_id
    if deadline_at > 0:
        budget = (deadline_at - monotonic()) * 1e6
        h.deadline_us = <uint64_t>budget if budget >= 1 else 1
    h.trace_hi = trace_hi
    h.trace_lo = trace_lo
    h.span_id = span_id
    _slice_text(service, &h.service)
    _slice_text(endpoint, &h.endpoint)
    _slice_text(content_type, &h.content_type)
    fill_metadata(metadata, &h)
    if ring is not None:
        key = ring.sign_header(&h, nonce, (flags & ZM_FLAG_BODY_INLINE) != 0)
    # Every text came from a Python str (valid UTF-8; bytes metadata values
    # are Data, never checked): only sizes and NULs need checking.
    rc = zm_wire_write_ex(&h, out, ZM_WIRE_MAX_HEADER, written, ZM_WIRE_TRUSTED_UTF8)
    if rc != ZM_OK:
        raise_zm(rc)
    return key


cdef int send_cancel(void *sock, uint64_t request_id, Keyring ring) except -1:
    """Tell the server the caller gave up (best effort: never blocks);
    signed when `ring` is given (a server ignores an unsigned cancel)."""
    cdef zm_header h
    cdef uint8_t buf[128]
    cdef uint8_t nonce[16]
    cdef size_t n = 0
    cdef MacKey key = None
    memset(&h, 0, <size_t>(<char *>&h.metadata - <char *>&h))
    h.version = ZM_WIRE_VERSION
    h.kind = ZM_KIND_CANCEL
    h.request_id = request_id
    if ring is not None:
        key = ring.sign_header(&h, nonce, True)
    rc = zm_wire_write(&h, buf, sizeof(buf), &n)
    if rc != ZM_OK:
        raise_zm(rc)
    if key is None:
        ZMQ.send(sock, buf, n, ZM_DONTWAIT)
    else:
        send_signed(sock, key, ring, buf, n, None, NULL, False, ZM_DONTWAIT)
    return 0


cdef int check_reply(Keyring ring, Received *r, zm_header *h, zm_frame_view *v,
                     bytes partition) except -1:
    """MAC_OK or why the reply in `r` fails the MAC checks (keyring.pyx).

    An error from a node that serves another service than the one called (a
    stale address) is signed with that service's key, which its `service`
    field names: it is checked under that key, so that the caller learns
    UNAVAILABLE from an authenticated answer."""
    cdef int failure = check_view(ring, r.slices, h, v, PyBytes_AS_STRING(partition),
                                  <size_t>PyBytes_GET_SIZE(partition))
    cdef Keyring other
    if (failure != MAC_OK and h.kind == ZM_KIND_ERROR and h.service.len
            and ring.family is not None):
        other = ring.family(_text(h.service))
        if other is not ring:
            failure = check_view(other, r.slices, h, v, PyBytes_AS_STRING(partition),
                                 <size_t>PyBytes_GET_SIZE(partition))
    return failure


_HANDSHAKE_REFUSED = 0x4000      # ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
_HANDSHAKE_FAILED = 0x0800 | 0x2000  # ..._NO_DETAIL, ..._PROTOCOL
_HANDSHAKE_EVENTS = _HANDSHAKE_REFUSED | _HANDSHAKE_FAILED
_CONNECTED = 0x0001 | 0x1000     # ZMQ_EVENT_CONNECTED, ..._HANDSHAKE_SUCCEEDED
_DISCONNECTED = 0x0200           # ZMQ_EVENT_DISCONNECTED
#: What a client socket's monitor reports (client.py subscribes to these).
MONITOR_EVENTS = _HANDSHAKE_EVENTS | _CONNECTED | _DISCONNECTED

#: Seconds between looks at a sync channel's monitor while a reply is due.
cdef double LOST_CHECK = 0.1

cdef int check_frame_size(size_t max_frame, size_t hlen, const zm_slice *b,
                          bint inline) except -1:
    """Refuse a request whose largest frame a peer with MAXMSGSIZE =
    max_frame would drop (with the connection and every call on it)."""
    cdef size_t frame = hlen + b.len if inline else (hlen if hlen > b.len else b.len)
    if max_frame and frame > max_frame:
        raise _RPCError(_Code.RESOURCE_EXHAUSTED,
                        f"the request is {frame} bytes in one frame (header and body), "
                        f"over the max_message_size of {max_frame} bytes")
    return 0


cdef str _reply_refused(str address):
    return (f"the reply from {address} failed authentication (do client and server "
            f"share the MAC secrets, mac.keys, and agree on the time?)")


cdef object _monitor_events(monitor, str address):
    """Read `monitor`'s queue: (the RPCError a failed handshake means or
    None, the connection's state after these events: 1 up, -1 lost, 0 no
    news). Lost means the connection that carried our requests is gone:
    their replies will never come."""
    from zmq.utils.monitor import recv_monitor_message
    error = None
    state = 0
    while monitor.poll(0):
        event = recv_monitor_message(monitor)["event"]
        if event & _HANDSHAKE_REFUSED:
            error = _RPCError(_Code.UNAUTHENTICATED,
                              f"{address} refused this client's key (it is not on the "
                              f"server's allowlist)", processed=False)
        elif event & _HANDSHAKE_FAILED and error is None:
            error = _RPCError(_Code.UNAUTHENTICATED,
                              f"the secure handshake with {address} failed (is the "
                              f"server key right?)", processed=False)
        elif event & _CONNECTED:
            state = 1
        elif event & _DISCONNECTED:
            state = -1
    return error, state


cdef object _unsent(str detail):
    """UNAVAILABLE for a request that never left this client: safe to
    retry anywhere, and free for the retry budget (no server saw it)."""
    exc = _RPCError(_Code.UNAVAILABLE, detail, processed=False)
    exc._unsent = True
    return exc


cdef inline bint _costs_budget(RetryPolicy policy, exc):
    return (isinstance(exc, _RPCError) and exc.code in policy.retryable_codes
            and not getattr(exc, "_unsent", False))


cdef object _lost(str address):
    return _RPCError(_Code.UNAVAILABLE,
                     f"the connection to {address} was lost while the call was in "
                     f"flight (it may have been processed)", processed=None)


cdef object reply_value(Received *r, zm_header *h, zm_frame_view *v, object rpc_error):
    """(is_error, value): the body object, or the RPCError an error reply says."""
    if h.kind == ZM_KIND_ERROR:
        code = h.status if h.status else _Code.UNKNOWN
        return True, rpc_error(code, _text(h.detail), id=_text(h.service),
                               processed=not (h.flags & ZM_FLAG_NOT_PROCESSED))
    if v.inline_body:
        return False, inline_body_object(r, v.header, v.body)
    return False, (body_object(r, v.body_first) if v.body_count else b"")


cdef inline bint _inline(const zm_slice *body) noexcept:
    # Small bodies ride in the header frame (one frame less per message);
    # large ones keep their own frame, sent without a copy.
    return body.len < 65536


@cython.auto_pickle(False)
cdef class Channel:
    """A sync client's connection to one node (one thread uses it)."""

    def __init__(self, zsock, str address, monitor=None):
        self.zsock = zsock
        self.sock = socket_handle(zsock)
        self.monitor = monitor
        self.address = address
        self.partition = address.encode()

    def close(self):
        if self.zsock is not None:
            if self.monitor is not None:
                self.zsock.disable_monitor()
                self.monitor.close(linger=0)
                self.monitor = None
            self.zsock.close(linger=0)
            self.zsock = None
            self.sock = NULL

    @property
    def closed(self):
        return self.sock == NULL

    def _wait_writable(self, double deadline_at):
        """Wait for room to send (the connection is up), watching the
        handshake: a server that refuses our key is an error now, not at
        the deadline, and the socket is closed so that it stops
        reconnecting (libzmq's RECONNECT_STOP is a draft API). A peer
        whose connection was lost (and not yet back) fails at once: the
        call goes elsewhere instead of waiting to connect."""
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
                error, state = _monitor_events(self.monitor, self.address)
                if error is not None:
                    self.close()
                    raise error
                if state:
                    self.peer_state = state
            if self.zsock in ready:
                return 1
            if self.peer_state < 0:
                return 0
            first = False

    def __dealloc__(self):
        if self.zsock is not None and not self.zsock.closed:
            self.zsock.close(linger=0)

    def call(self, str service, str endpoint, str content_type, body,
             double deadline_at, dict metadata=None, uint64_t trace_hi=0,
             uint64_t trace_lo=0, uint64_t span_id=0, Keyring ring=None,
             double connect_by=0):
        """One request and its reply. Returns the reply body (bytes, or a
        memoryview for large ones); raises RPCError for an error reply,
        UNAVAILABLE if the request could not be sent before the deadline or
        `connect_by` (nothing was processed) or if the connection was lost
        while waiting (maybe processed), DEADLINE_EXCEEDED if the reply did
        not come in time (a cancel frame is sent)."""
        cdef double wait_until_t, slice_end
        cdef uint8_t hbuf[ZM_WIRE_MAX_HEADER]
        cdef size_t hlen = 0
        cdef uint64_t request_id
        cdef Py_buffer bview
        cdef zm_slice b
        cdef Received r
        cdef zm_header h
        cdef zm_frame_view v
        cdef int err, failure
        cdef bint inline
        cdef uint8_t nonce[16]
        cdef MacKey key
        if self.sock == NULL:
            raise _unsent("channel closed")
        if deadline_at > 0 and monotonic() >= deadline_at:
            raise _RPCError(_Code.DEADLINE_EXCEEDED, "deadline passed before the call was sent",
                            processed=False)
        wait_until_t = deadline_at
        if connect_by > 0 and (deadline_at <= 0 or connect_by < deadline_at):
            wait_until_t = connect_by
        self.next_id += 1
        request_id = self.next_id
        memset(&bview, 0, sizeof(Py_buffer))
        try:
            view_get(body, &bview, &b)
            inline = _inline(&b)
            key = write_request(hbuf, &hlen, request_id, deadline_at, service, endpoint,
                                content_type, metadata, trace_hi, trace_lo, span_id,
                                ZM_FLAG_BODY_INLINE if inline else 0, ring, nonce)
            check_frame_size(self.max_frame, hlen, &b, inline)
            # Send. Usually there is room at once; otherwise wait for the
            # connection (IMMEDIATE: nothing queues for a peer not connected).
            while True:
                if key is not None:
                    err = send_signed(self.sock, key, ring, hbuf, hlen, body, &b, inline,
                                      ZM_DONTWAIT)
                elif inline:
                    err = send_inline(self.sock, hbuf, hlen, &b, ZM_DONTWAIT)
                else:
                    err = 0
                    if ZMQ.send(self.sock, hbuf, hlen, ZM_SNDMORE | ZM_DONTWAIT) < 0:
                        err = ZMQ.errno_()
                        if err != EAGAIN:
                            raise_errno(err)
                    else:
                        send_body(self.sock, body, &b, 0)
                if err == 0:
                    break
                if not self._wait_writable(wait_until_t):
                    raise _unsent(f"could not reach {self.address} in time")
        finally:
            PyBuffer_Release(&bview)

        # Wait for the reply to this request id; anything else is stale.
        # With a monitor, look at it every LOST_CHECK s of waiting: a peer
        # gone (killed) ends the call now, not at its deadline.
        while True:
            slice_end = deadline_at
            if self.monitor is not None:
                slice_end = monotonic() + LOST_CHECK
                if 0 < deadline_at < slice_end:
                    slice_end = deadline_at
            if not recv_until(&r, self.sock, slice_end):
                if slice_end != deadline_at:
                    error, state = _monitor_events(self.monitor, self.address)
                    if state:
                        self.peer_state = state
                    if state < 0:
                        raise _lost(self.address)
                    continue
                send_cancel(self.sock, request_id, ring)
                raise _RPCError(_Code.DEADLINE_EXCEEDED,
                                f"no reply from {self.address} before the deadline",
                                processed=None)
            try:
                if r.extra or zm_frame_parse(r.slices, r.n, 0, &h, &v) != ZM_OK:
                    self.n_malformed += 1
                    continue
                if h.request_id != request_id or (h.kind != ZM_KIND_REPLY
                                                   and h.kind != ZM_KIND_ERROR):
                    self.n_stale += 1
                    continue
                if ring is not None:
                    failure = check_reply(ring, &r, &h, &v, self.partition)
                    if failure != MAC_OK:
                        self.n_unauthenticated += 1
                        raise _RPCError(_Code.UNAUTHENTICATED, _reply_refused(self.address),
                                        processed=None)
                failed, value = reply_value(&r, &h, &v, _RPCError)
            finally:
                received_close(&r)
            release_sent()
            if failed:
                raise value
            return value


@cython.auto_pickle(False)
cdef class _Pending:
    pass


@cython.auto_pickle(False)
cdef class AsyncChannel:
    """An asyncio client's connection to one node, on one event loop."""

    def __init__(self, zsock, str address, loop, monitor=None):
        self.zsock = zsock
        self.sock = socket_handle(zsock)
        self.monitor = monitor
        self.address = address
        self.partition = address.encode()
        self.loop = loop
        self.pending = {}
        self.timers = []
        self.backlog = _collections.deque()
        self.rpc_error = _RPCError
        self.fd = socket_fd(self.sock)
        loop.add_reader(self.fd, self._on_readable)
        if monitor is not None:
            loop.add_reader(monitor.getsockopt(14), self._on_monitor)  # ZMQ_FD
            loop.call_soon(self._on_monitor)

    def _on_monitor(self):
        # A server that refuses our key fails the calls waiting to be sent
        # now, and the socket closes so that it stops reconnecting. A lost
        # connection fails the calls sent on it: their replies cannot come.
        cdef _Pending p
        if self.closed or self.monitor is None:
            return
        error, state = _monitor_events(self.monitor, self.address)
        if state:
            self.peer_state = state
        if error is not None:
            self.close(error)
        elif state < 0:
            for p in [p for p in self.pending.values() if (<_Pending>p).sent]:
                del self.pending[p.request_id]
                if not p.future.done():
                    self._fail(p, _lost(self.address))

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
            if not p.future.done():
                self._fail(p, error if error is not None else self.rpc_error(
                    C_UNAVAILABLE, f"the channel to {self.address} closed",
                    processed=None if p.sent else False))
        self.backlog.clear()
        if self.monitor is not None:
            self.loop.remove_reader(self.monitor.getsockopt(14))
            self.zsock.disable_monitor()
            self.monitor.close(linger=0)
            self.monitor = None
        self.zsock.close(linger=0)
        self.sock = NULL

    @property
    def is_closed(self):
        return self.closed

    def call(self, str service, str endpoint, str content_type, body,
             double deadline_at, decode, dict metadata=None,
             uint64_t trace_hi=0, uint64_t trace_lo=0, uint64_t span_id=0,
             Keyring ring=None, double connect_by=0, _Call owner=None, fut=None):
        """Send now; return a Future of the decoded reply (see Channel.call).
        With `owner`, the outcome goes to it (node accounting, retries) and
        `fut` is the caller's Future, reused across attempts."""
        cdef uint8_t hbuf[ZM_WIRE_MAX_HEADER]
        cdef size_t hlen = 0
        cdef Py_buffer bview
        cdef zm_slice b
        cdef uint8_t nonce[16]
        cdef MacKey key
        cdef _Pending p = _Pending.__new__(_Pending)
        if fut is None:
            fut = CallFuture(loop=self.loop)
        p.future = fut
        p.owner = owner
        if owner is not None:
            p.node = owner.node
            p.started = monotonic()
            p.channel = self
            owner.live += 1
            if owner.hedge is not None:
                owner.attempts_live.append(p)
        if self.closed:
            self._fail(p, _unsent("client closed"))
            return fut
        if deadline_at > 0 and monotonic() >= deadline_at:
            self._fail(p, self.rpc_error(C_DEADLINE_EXCEEDED,
                                         "deadline passed before the call was sent",
                                         processed=False))
            return fut
        self.next_id += 1
        p.request_id = self.next_id
        p.deadline_at = deadline_at
        p.connect_by = connect_by if 0 < connect_by and (
            deadline_at <= 0 or connect_by < deadline_at) else 0
        p.decode = decode
        p.ring = ring
        fut._zm_channel = self
        fut._zm_request_id = p.request_id
        memset(&bview, 0, sizeof(Py_buffer))
        try:
            view_get(body, &bview, &b)
            p.inline = _inline(&b)
            key = write_request(hbuf, &hlen, p.request_id, deadline_at, service, endpoint,
                                content_type, metadata, trace_hi, trace_lo, span_id,
                                ZM_FLAG_BODY_INLINE if p.inline else 0, ring, nonce)
            try:
                check_frame_size(self.max_frame, hlen, &b, p.inline)
            except Exception as exc:
                p.owner = None  # not the node's fault, nothing to retry
                if owner is not None:
                    owner.abandon(p)
                fut.set_exception(exc)
                return fut
            if self.peer_state < 0 and (self.backlog or socket_events(self.sock) & ZM_POLLOUT == 0):
                # The connection is lost and not back: go elsewhere now.
                self._fail(p, _unsent(f"{self.address} is not connected"))
                return fut
            self.pending[p.request_id] = p
            if self.backlog or not self._send_now(p, hbuf, hlen, body, &b, key):
                if key is not None:  # the frames as they will go, MAC included
                    head = PyBytes_FromStringAndSize(<char *>hbuf, <Py_ssize_t>hlen)
                    if p.inline:  # one frame, the MAC at its end (MAC_TRAILER)
                        head += PyBytes_FromStringAndSize(<const char *>b.ptr, <Py_ssize_t>b.len)
                        p.frames = [head + sign_to_bytes(ring, key, [head])]
                    else:
                        p.frames = [head, bytes(body)]
                        p.frames.append(sign_to_bytes(ring, key, p.frames))
                elif p.inline:  # keep the frame whole: header then body
                    p.header = (PyBytes_FromStringAndSize(<char *>hbuf, <Py_ssize_t>hlen)
                                + PyBytes_FromStringAndSize(<const char *>b.ptr,
                                                            <Py_ssize_t>b.len))
                else:
                    p.header = PyBytes_FromStringAndSize(<char *>hbuf, <Py_ssize_t>hlen)
                    p.body = body
                self.backlog.append(p)
        finally:
            PyBuffer_Release(&bview)
        if deadline_at > 0:
            _heapq.heappush(self.timers, (deadline_at, p.request_id))
            if self.timer is None or deadline_at < self.timer_at:
                self._arm_timer(deadline_at)
        if p.connect_by > 0 and not p.sent:
            _heapq.heappush(self.timers, (p.connect_by, p.request_id))
            if self.timer is None or p.connect_by < self.timer_at:
                self._arm_timer(p.connect_by)
        self._schedule_read()
        return fut

    cdef int _fail(self, _Pending p, exc) except -1:
        """End `p` with `exc` (its owner may retry it elsewhere)."""
        if p.owner is not None:
            p.owner.failed(p, exc)
        else:
            p.future.set_exception(exc)
        return 0

    cdef int _succeed(self, _Pending p, value) except -1:
        if p.owner is not None:
            p.owner.succeeded(p)
        if not p.future.done():
            p.future.set_result(value)
        return 0

    cdef bint _send_now(self, _Pending p, const uint8_t *hbuf, size_t hlen, object body,
                        const zm_slice *b, MacKey key) except -1:
        """Send if libzmq has room (True); False: it must wait for POLLOUT.
        An inline request goes as one frame: the header then `b`. With
        `key`, the header was signed and a MAC frame follows."""
        cdef zm_slice none
        if key is not None:
            if send_signed(self.sock, key, p.ring, hbuf, hlen, body, b, p.inline,
                           ZM_DONTWAIT) == EAGAIN:
                return False
            p.sent = True
            return True
        if p.inline:
            none.ptr = NULL
            none.len = 0
            if send_inline(self.sock, hbuf, hlen, b if b != NULL else &none,
                           ZM_DONTWAIT) == EAGAIN:
                return False
            p.sent = True
            return True
        if ZMQ.send(self.sock, hbuf, hlen, ZM_SNDMORE | ZM_DONTWAIT) < 0:
            err = ZMQ.errno_()
            if err == EAGAIN:
                return False
            raise_errno(err)
        send_body(self.sock, body, b, 0)
        p.sent = True
        return True

    cdef int _flush_backlog(self) except -1:
        cdef _Pending p
        while self.backlog:
            p = <_Pending>self.backlog[0]
            if p.future.done():  # timed out or cancelled while waiting
                self.backlog.popleft()
                continue
            if not self._flush_one(p):
                break
            self.backlog.popleft()
            p.header = None
            p.body = None
            p.frames = None
        return 0

    cdef int _schedule_read(self) except -1:
        # Once per loop iteration, however many calls it makes: looking at
        # ZMQ_EVENTS costs libzmq a round of command processing (and a
        # getpid() syscall), too much to pay per call.
        if not self.read_scheduled and not self.closed:
            self.read_scheduled = True
            self.loop.call_soon(self._on_readable)
        return 0

    cdef bint _flush_one(self, _Pending p) except -1:
        cdef Py_buffer bview
        cdef zm_slice b
        cdef Py_ssize_t i, n
        if p.frames is not None:  # signed: every frame ready, MAC last
            n = len(p.frames)
            for i in range(n):
                frame = p.frames[i]
                if ZMQ.send(self.sock, PyBytes_AS_STRING(frame), <size_t>PyBytes_GET_SIZE(frame),
                            (ZM_SNDMORE if i + 1 < n else 0) | (ZM_DONTWAIT if i == 0 else 0)) < 0:
                    if i == 0 and ZMQ.errno_() == EAGAIN:
                        return False
                    raise_errno(ZMQ.errno_())
            p.sent = True
            return True
        if p.inline:  # p.header is the whole frame already
            b.ptr = NULL
            b.len = 0
            if ZMQ.send(self.sock, PyBytes_AS_STRING(p.header),
                        <size_t>PyBytes_GET_SIZE(p.header), ZM_DONTWAIT) < 0:
                if ZMQ.errno_() == EAGAIN:
                    return False
                raise_errno(ZMQ.errno_())
            p.sent = True
            return True
        memset(&bview, 0, sizeof(Py_buffer))
        try:
            view_get(p.body, &bview, &b)
            return self._send_now(p, <const uint8_t *>PyBytes_AS_STRING(p.header),
                                  <size_t>PyBytes_GET_SIZE(p.header), p.body, &b, None)
        finally:
            PyBuffer_Release(&bview)

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
        events = socket_events(self.sock)
        if self.backlog and events & ZM_POLLOUT:
            self._flush_backlog()
        if events & ZM_POLLIN:
            self._drain()
        release_sent()
        self._check_events()

    cdef int _drain(self) except -1:
        cdef Received r
        cdef zm_header h
        cdef zm_frame_view v
        cdef _Pending p
        cdef int err, i
        cdef bint refused
        for i in range(BATCH):
            r.n = r.extra = 0
            err = recv_parts(&r, self.sock)
            try:
                if err:
                    if err == EAGAIN:
                        break
                    raise_errno(err)
                if r.extra or zm_frame_parse(r.slices, r.n, 0, &h, &v) != ZM_OK:
                    self.n_malformed += 1
                    continue
                if h.kind != ZM_KIND_REPLY and h.kind != ZM_KIND_ERROR:
                    self.n_stale += 1  # e.g. a pong: never the answer to a call
                    continue
                p = self.pending.pop(h.request_id, None)
                if p is None:
                    self.n_stale += 1
                    continue
                if p.future.done():
                    if p.owner is not None:  # a hedged attempt that lost the race
                        p.owner.abandon(p)
                    continue
                refused = (p.ring is not None
                           and check_reply(p.ring, &r, &h, &v, self.partition) != MAC_OK)
                if refused:
                    self.n_unauthenticated += 1
                    failed, value = True, self.rpc_error(
                        _Code.UNAUTHENTICATED, _reply_refused(self.address), processed=None)
                else:
                    failed, value = reply_value(&r, &h, &v, self.rpc_error)
            finally:
                received_close(&r)
            if failed:
                self._fail(p, value)
                continue
            if p.decode is not None:
                try:
                    value = p.decode(value)
                except Exception as exc:
                    if p.owner is not None:
                        p.owner.succeeded(p)  # the node answered
                    p.future.set_exception(_undecodable(exc))
                    continue
            self._succeed(p, value)
        return 0

    def _cancelled(self, uint64_t request_id):
        # CallFuture.cancel(): forget the call and tell the server.
        cdef _Pending p = self.pending.pop(request_id, None)
        if p is not None and p.sent and not self.closed:
            self._cancel_remote(request_id, p.ring)

    cdef int _cancel_remote(self, uint64_t request_id, Keyring ring) except -1:
        send_cancel(self.sock, request_id, ring)
        self._check_events()
        return 0

    cdef int _arm_timer(self, double deadline_at) except -1:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = deadline_at
        self.timer = self.loop.call_later(max(0.0, deadline_at - monotonic()), self._on_timer)
        return 0

    def _on_timer(self):
        cdef _Pending p
        cdef double now = monotonic()
        self.timer = None
        while self.timers and self.timers[0][0] <= now:
            deadline_at, request_id = _heapq.heappop(self.timers)
            p = self.pending.get(request_id)
            if p is None:
                continue
            if p.future.done():
                del self.pending[request_id]
                continue
            if p.sent:
                if not (0 < p.deadline_at <= now):
                    continue  # its connect timer: it was sent in time
                del self.pending[request_id]
                self._cancel_remote(request_id, p.ring)
                self._fail(p, self.rpc_error(
                    C_DEADLINE_EXCEEDED, f"no reply from {self.address} before the deadline",
                    processed=None))
            else:
                del self.pending[request_id]
                self._fail(p, _unsent(f"could not reach {self.address} in time"))
        # Entries of answered calls stay in the heap until their deadline;
        # rebuild when they outnumber the live ones, so memory follows load.
        if len(self.timers) > 2 * len(self.pending) + 64:
            self.timers = [(p.deadline_at, rid) for rid, p in self.pending.items()
                           if p.deadline_at > 0]
            self.timers += [(p.connect_by, rid) for rid, p in self.pending.items()
                            if p.connect_by > 0 and not p.sent]
            _heapq.heapify(self.timers)
        if self.timers:
            self._arm_timer(self.timers[0][0])

    @property
    def in_flight(self):
        return len(self.pending)


cdef object _undecodable(exc):
    """A reply that does not decode: the server sent what the caller did not
    expect (gRPC calls this INTERNAL too)."""
    if isinstance(exc, _RPCError):
        return exc
    return _RPCError(_Code.INTERNAL, f"the reply does not decode: {exc}")


class CallFuture(_asyncio.Future):
    """The Future of one AsyncClient call: cancelling it cancels the call
    (a cancel frame tells the server). Without a done-callback per call."""

    __slots__ = ("_zm_channel", "_zm_request_id")

    def cancel(self, msg=None):
        if not _asyncio.Future.cancel(self, msg):
            return False
        channel = self._zm_channel
        if channel is not None:
            self._zm_channel = None
            channel._cancelled(self._zm_request_id)
        return True


#: Codes that count against a node for outlier ejection: the node (or the
#: way to it) failed, not the caller's request.
cdef frozenset NODE_FAILURES = frozenset({_Code.UNAVAILABLE, _Code.DEADLINE_EXCEEDED,
                                          _Code.INTERNAL, _Code.UNKNOWN, _Code.DATA_LOSS})


cdef inline bint _retiring(exc):
    """A node's refusal saying it will not process calls (draining, or a
    stale address): UNAVAILABLE flagged NOT_PROCESSED by the server."""
    return (isinstance(exc, _RPCError) and exc.code == _Code.UNAVAILABLE
            and exc.processed is False and not getattr(exc, "_unsent", False))


cdef inline bint _node_failed(exc):
    if isinstance(exc, _RPCError):
        return exc.code in NODE_FAILURES
    return isinstance(exc, TransportError)


@cython.auto_pickle(False)
cdef class RetryPolicy:
    """When and how a failed call is tried again (gRPC's A6).

    An attempt that fails with a code in ``retryable_codes`` is retried, up
    to ``max_attempts`` in all, within the call's one deadline, only if no
    handler ran it (``RPCError.processed`` is False: never sent, or refused
    before any handler) or the endpoint is idempotent (the call says so).
    Before attempt n+1 the client waits ``min(initial_backoff *
    multiplier**(n-1), max_backoff)``, spread by ``jitter`` (0.2: ±20 %).
    Each retry goes to a node not tried yet when there is one, signed anew
    (a fresh nonce). ``max_attempts=1`` never retries.
    """

    def __init__(self, int max_attempts=3, double initial_backoff=0.01,
                 double max_backoff=1.0, double multiplier=2.0, double jitter=0.2,
                 retryable_codes=(_Code.UNAVAILABLE,)):
        if not 1 <= max_attempts <= 10:
            raise ValueError(f"max_attempts must be 1..10, not {max_attempts}")
        if not (initial_backoff > 0 and max_backoff >= initial_backoff):
            raise ValueError("backoffs must be positive, initial_backoff <= max_backoff")
        if not multiplier >= 1:
            raise ValueError(f"multiplier must be >= 1, not {multiplier}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), not {jitter}")
        self.max_attempts = max_attempts
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.multiplier = multiplier
        self.jitter = jitter
        codes = set()
        for code in retryable_codes:
            try:
                codes.add(_Code(code) if not isinstance(code, str) else _Code[code])
            except (ValueError, KeyError):
                raise ValueError(f"retryable_codes: {code!r} is not a status code") from None
        self.retryable_codes = frozenset(codes)

    cdef double backoff(self, int retry, double u) noexcept:
        """Seconds to wait before retry number `retry` (1-based); u in [0, 1)."""
        cdef double b = self.initial_backoff
        cdef int i
        for i in range(1, retry):
            b *= self.multiplier
            if b >= self.max_backoff:
                b = self.max_backoff
                break
        b *= 1.0 + self.jitter * (2.0 * u - 1.0)
        return b if b < self.max_backoff else self.max_backoff

    def delay(self, int retry, double u=0.5):
        """backoff() for Python (tests)."""
        return self.backoff(retry, u)

    cdef bint allows(self, exc, int attempts, bint idempotent):
        """May a call that failed with `exc` after `attempts` go again?"""
        if attempts >= self.max_attempts or not isinstance(exc, _RPCError):
            return False
        if exc.code not in self.retryable_codes:
            return False
        return idempotent or exc.processed is False

    def __repr__(self):
        return (f"RetryPolicy(max_attempts={self.max_attempts}, "
                f"initial_backoff={self.initial_backoff}, max_backoff={self.max_backoff}, "
                f"multiplier={self.multiplier}, jitter={self.jitter}, retryable_codes="
                f"{sorted(c.name for c in self.retryable_codes)})")


@cython.auto_pickle(False)
cdef class RetryBudget:
    """Retry throttling per service (gRPC A6): a failed attempt costs a
    token, a success returns ``token_ratio`` of one (up to
    ``max_tokens``); retries stop while the tokens are at or below half,
    so a failing service gets at most its callers' first attempts. An
    attempt that never left the client (its node unreachable) costs
    nothing: no server saw it (gRPC's transparent retries)."""

    def __init__(self, double max_tokens=10.0, double token_ratio=0.1):
        if not 0 < max_tokens <= 1000:
            raise ValueError(f"max_tokens must be in (0, 1000], not {max_tokens}")
        if not 0 < token_ratio <= 1:
            raise ValueError(f"token_ratio must be in (0, 1], not {token_ratio}")
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self.tokens = max_tokens

    cdef inline void success(self) noexcept:
        if self.tokens < self.max_tokens:
            self.tokens += self.token_ratio
            if self.tokens > self.max_tokens:
                self.tokens = self.max_tokens

    cdef inline void failure(self) noexcept:
        self.tokens -= 1.0
        if self.tokens < 0:
            self.tokens = 0

    cdef inline bint allows(self) noexcept:
        return self.tokens > self.max_tokens / 2

    def record(self, bint ok):
        """Count one attempt's outcome (for tests)."""
        if ok:
            self.success()
        else:
            self.failure()

    @property
    def retry_allowed(self):
        return self.allows()


@cython.auto_pickle(False)
cdef class HedgingPolicy:
    """Hedged calls (gRPC A6) for idempotent endpoints of an AsyncClient:
    the first attempt goes out; while no answer has come, another goes to
    another node every ``delay`` seconds, up to ``max_attempts`` in flight
    in all; the first reply wins and the others are cancelled. An attempt
    failing with a code in ``non_fatal_codes`` sends the next one at once;
    any other code ends the call."""

    def __init__(self, int max_attempts=2, double delay=0.05,
                 non_fatal_codes=(_Code.UNAVAILABLE,)):
        if not 2 <= max_attempts <= 5:
            raise ValueError(f"max_attempts must be 2..5, not {max_attempts}")
        if not delay >= 0:
            raise ValueError(f"delay must be >= 0, not {delay}")
        self.max_attempts = max_attempts
        self.delay = delay
        self.non_fatal_codes = RetryPolicy(retryable_codes=non_fatal_codes).retryable_codes

    def __repr__(self):
        return (f"HedgingPolicy(max_attempts={self.max_attempts}, delay={self.delay}, "
                f"non_fatal_codes={sorted(c.name for c in self.non_fatal_codes)})")


@cython.auto_pickle(False)
cdef class _Call:
    """One AsyncClient call across its attempts: node accounting, the
    retry decision when an attempt fails (the sync path does the same in
    ClientCore.call's loop), and hedging."""

    cdef inline void _finish(self, _Pending p, bint failed) noexcept:
        if p.node is not None:
            self.balancer.finish(p.node, monotonic() - p.started, failed)
            p.node = None

    cdef int _failed_on(self, _Pending p, exc) except -1:
        if p.node is not None and _retiring(exc):
            self.balancer.retire(p.node)
        self._finish(p, _node_failed(exc))
        return 0

    cdef int attempt_failed(self, exc) except -1:
        """A failed attempt was accounted for; True: it will be retried."""
        cdef double now = monotonic()
        if self.policy is None:
            return 0
        if _costs_budget(self.policy, exc):
            self.budget.failure()
        if not self.policy.allows(exc, self.attempts, self.idempotent) or not self.budget.allows():
            return 0
        self.delay = self.policy.backoff(self.attempts, self.core.uniform())
        if 0 < self.deadline <= now + self.delay:
            return 0
        return 1

    def failed(self, _Pending p, exc):
        self._failed_on(p, exc)
        self.live -= 1
        if self.future.done():
            return
        if self.hedge is not None:
            if not (isinstance(exc, _RPCError) and exc.code in self.hedge.non_fatal_codes):
                self._cancel_others(None)
                self.future.set_exception(exc)
            elif self.attempts < self.hedge.max_attempts and self._send_next():
                pass
            elif self.live == 0:
                self.future.set_exception(exc)
            return
        if self.attempt_failed(exc):
            self.future._zm_channel = None  # a cancel now just ends the call
            self.core.loop.call_later(self.delay, self.retry)
        else:
            self.future.set_exception(exc)

    def abandon(self, _Pending p):
        self._finish(p, False)
        self.live -= 1

    def succeeded(self, _Pending p):
        self._finish(p, False)
        self.live -= 1
        if self.budget is not None:
            self.budget.success()
        if self.hedge is not None and not self.future.done():
            self._cancel_others(p)

    cdef int _cancel_others(self, _Pending winner) except -1:
        cdef _Pending other
        for other in self.attempts_live:
            if other is not winner and other.channel is not None:
                other.channel._cancelled(other.request_id)
                self._finish(other, False)
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
        if 0 < self.deadline <= monotonic():
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
                    raise _RPCError(_Code.UNAVAILABLE, f"no node of service {self.service!r} "
                                    f"is registered", processed=False)
            self.core.send_async(self)
        except BaseException as exc:
            if not self.future.done():
                self.future.set_exception(exc)


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

    cdef object get(self, key, str address, object server_key, double now):
        """The open channel for `key` (opened, LRU-evicting, when needed)."""
        channel = self.entries.get(key)
        if channel is not None and not _channel_closed(channel):
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
        _set_used(channel, now)
        if now >= self.next_sweep:
            self.sweep(now)
        return channel

    cdef int _evict(self) except -1:
        for key, channel in self.entries.items():
            if _channel_busy(channel):
                continue
            del self.entries[key]
            channel.close()
            self.counters.evictions += 1
            return 1
        return 0

    def sweep(self, double now):
        """Close the channels idle for idle_ttl (oldest first)."""
        self.next_sweep = now + self.idle_ttl / 4
        for key, channel in list(self.entries.items()):
            if _last_used(channel) + self.idle_ttl > now:
                break  # LRU order: the rest were used later
            if _channel_busy(channel):
                continue
            del self.entries[key]
            channel.close()
            self.counters.idle_closes += 1

    def close(self):
        for channel in self.entries.values():
            channel.close()
        self.entries.clear()

    def stats(self):
        c = self.counters
        return {"open": len(self.entries), "opens": c.opens, "reuses": c.reuses,
                "evictions": c.evictions, "idle_closed": c.idle_closes}

    def __len__(self):
        return len(self.entries)


cdef inline bint _channel_closed(channel):
    if type(channel) is Channel:
        return (<Channel>channel).sock == NULL
    return (<AsyncChannel>channel).closed


cdef inline bint _channel_busy(channel):
    return type(channel) is AsyncChannel and len((<AsyncChannel>channel).pending) > 0


cdef inline void _set_used(channel, double now):
    if type(channel) is Channel:
        (<Channel>channel).last_used = now
    else:
        (<AsyncChannel>channel).last_used = now


cdef inline double _last_used(channel):
    if type(channel) is Channel:
        return (<Channel>channel).last_used
    return (<AsyncChannel>channel).last_used


@cython.auto_pickle(False)
cdef class ClientCore:
    """The call path of Client and AsyncClient: codec, deadline and
    metadata inheritance, node choice (a Balancer per service), channel
    pool, send, reply, decode, retries - in C, calling Python only for the
    codec and, when a service's nodes are first needed, the registry
    cache. Policy (which registry, which codecs, defaults) comes from the
    Python client that builds it."""

    def __init__(self, dict codecs, str default_content_type, double timeout, *,
                 refresh, make_socket, bint is_async,
                 keyring_for=None, refresh_keys=None, size_t max_message_size=0,
                 RetryPolicy retry=None, budget=(10.0, 0.1), double connect_timeout=1.0,
                 size_t max_sockets=1024, double idle_ttl=300.0, HedgingPolicy hedge=None):
        self.codecs = codec_entries(codecs)
        if default_content_type not in self.codecs:
            raise ValueError(f"no codec registered for {default_content_type!r}")
        if connect_timeout < 0:
            raise ValueError("connect_timeout must be >= 0 (0: the call's deadline)")
        if max_sockets < 1 or idle_ttl <= 0:
            raise ValueError("max_sockets must be >= 1 and idle_ttl > 0")
        RetryBudget(*budget)  # check it now
        self.default_codec = self.codecs[default_content_type]
        self.timeout = timeout
        self.refresh = refresh
        self.make_socket = make_socket
        self.is_async = is_async
        self.keyring_for = keyring_for
        self.refresh_keys = refresh_keys
        self.keyrings = {}
        self.keys_checked = monotonic()
        self.max_message_size = max_message_size
        if hedge is not None and not is_async:
            raise ValueError("hedging: hedged calls need an AsyncClient")
        self.retry = retry
        self.hedge = hedge
        self.budget_args = tuple(budget)
        self.budgets = {}
        self.connect_timeout = connect_timeout
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

    cdef Keyring _keyring(self, str service):
        """The MAC keys of `service` (None: unsigned). Rotated keys are
        picked up within a second: the keyrings are updated in place."""
        cdef double now
        if self.keyring_for is None:
            return None
        if self.refresh_keys is not None:
            now = monotonic()
            if now >= self.keys_checked + 1.0:
                self.keys_checked = now
                self.refresh_keys()
        ring = self.keyrings.get(service, self)  # self: not looked up yet
        if ring is self:
            ring = self.keyring_for(service)
            self.keyrings[service] = ring
        return <Keyring>ring

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

    cdef int send_async(self, _Call c) except -1:
        """Send attempt `c.attempts` of an async call to `c.node`."""
        cdef double now = monotonic()
        cdef AsyncChannel channel
        if c.node is None:
            channel = self._async_channel(c.address, c.server_key, now)
        else:
            channel = self._async_channel(c.node.address, c.server_key, now)
            c.balancer.start(c.node)
        channel.call(c.service, c.endpoint, c.content_type, c.body, c.deadline, c.decode,
                     c.metadata, c.trace_hi, c.trace_lo, c.span_id, c.ring,
                     now + self.connect_timeout if self.connect_timeout > 0 else 0,
                     c, c.future)
        if c.hedge is not None:
            c.future._zm_channel = c  # a cancel cancels every attempt
        return 0

    def call(self, str service, str endpoint, request=None, *, timeout=None,
             dict metadata=None, str address=None, response_type=None,
             str content_type=None, server_key=None, retry=None, bint idempotent=False,
             key=None, str version=None, dict node_filter=None, HedgingPolicy hedge=None):
        """One call (see zmicro.Client.call / zmicro.AsyncClient.call)."""
        cdef CodecEntry entry
        cdef Context parent
        cdef double deadline, now, t0, delay
        cdef Keyring ring
        cdef uint64_t trace_hi = 0, trace_lo = 0, span_id = 0
        cdef Balancer balancer = None
        cdef Subset subset = None
        cdef NodeState node = None
        cdef RetryPolicy policy
        cdef RetryBudget budget = None
        cdef _Call c
        cdef int attempts = 1
        cdef set tried = None
        if self.closed:
            raise _RPCError(_Code.UNAVAILABLE, "client closed", processed=False)
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
        body = entry.encode_value(request)
        if self.max_message_size and len(body) > self.max_message_size:
            # MAXMSGSIZE is per frame, and a peer that gets a bigger one
            # drops the connection (every call on it): refuse it here.
            raise _RPCError(_Code.RESOURCE_EXHAUSTED,
                            f"the request body is {len(body)} bytes, over the "
                            f"max_message_size of {self.max_message_size} bytes")
        now = monotonic()
        deadline = now + (self.timeout if timeout is None else <double>timeout)
        parent = contextvar_get(CURRENT, None)
        if parent is not None:  # inside a handler: inherit deadline and metadata
            if 0 < parent.deadline_at < deadline:
                deadline = parent.deadline_at
            if parent._metadata:
                metadata = ({**parent._metadata, **metadata} if metadata
                            else dict(parent._metadata))
            trace_hi, trace_lo, span_id = parent.trace_hi, parent.trace_lo, parent.span_id
        if address is None:
            balancer = self._balancer(service)
            if version is not None or node_filter:
                subset = balancer.subset(version, node_filter)
            node = balancer.pick(subset, key, None)
            if node is None:
                raise _RPCError(_Code.UNAVAILABLE, _no_node(service, version, node_filter),
                                processed=False)
            address = node.address
        if policy is not None:
            budget = self._budget(service)
        ring = self._keyring(service)
        decode = entry.decoder_for(_Any if response_type is None else response_type)
        if decode is IDENTITY:
            decode = None
        if self.is_async:
            if node is None and policy is None and hedge is None:
                return self._async_channel(address, server_key, now).call(
                    service, endpoint, entry.name, body, deadline, decode, metadata,
                    trace_hi, trace_lo, span_id, ring,
                    now + self.connect_timeout if self.connect_timeout > 0 else 0)
            c = _Call.__new__(_Call)
            c.core, c.service, c.endpoint, c.content_type = self, service, endpoint, entry.name
            c.body, c.deadline, c.decode, c.metadata = body, deadline, decode, metadata
            c.trace_hi, c.trace_lo, c.span_id, c.ring = trace_hi, trace_lo, span_id, ring
            c.server_key, c.balancer, c.subset, c.key, c.node = (
                server_key, balancer, subset, key, node)
            c.policy, c.budget, c.idempotent, c.attempts = policy, budget, idempotent, 1
            c.address = address if node is None else None  # fixed: retries go there again
            c.future = CallFuture(loop=_asyncio.get_running_loop())
            if hedge is not None and node is not None:
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
                    _Code.FAILED_PRECONDITION,
                    f"{parent.service}/{parent.endpoint} calls its own service from the thread "
                    f"that serves it: the call could never be answered; make the handler "
                    f"blocking=True, or async with AsyncClient")
            t0 = monotonic()
            if node is not None:
                balancer.start(node)
            try:
                value = self._sync_channel(address, server_key, t0).call(
                    service, endpoint, entry.name, body, deadline, metadata, trace_hi, trace_lo,
                    span_id, ring, t0 + self.connect_timeout if self.connect_timeout > 0 else 0)
            except BaseException as exc:
                now = monotonic()
                if node is not None:
                    if _retiring(exc):
                        balancer.retire(node)
                    balancer.finish(node, now - t0, _node_failed(exc))
                if policy is None:
                    raise
                if _costs_budget(policy, exc):
                    budget.failure()
                if not policy.allows(exc, attempts, idempotent) or not budget.allows():
                    raise
                delay = policy.backoff(attempts, self.uniform())
                if now + delay >= deadline:
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
            if node is not None:
                balancer.finish(node, monotonic() - t0, False)
            if budget is not None:
                budget.success()
            break
        if decode is None:
            return value
        try:
            return decode(value)
        except Exception as exc:
            raise _undecodable(exc) from None

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
