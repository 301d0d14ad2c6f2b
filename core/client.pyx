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
import heapq as _heapq
import weakref as _weakref
from typing import Any as _Any

SELECT_RANDOM = 0
SELECT_ROUND_ROBIN = 1



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


cdef object _handshake_error(monitor, str address):
    """The RPCError a failed handshake in `monitor`'s queue means, or None."""
    from zmq.utils.monitor import recv_monitor_message
    error = None
    while monitor.poll(0):
        event = recv_monitor_message(monitor)["event"]
        if event & _HANDSHAKE_REFUSED:
            error = _RPCError(_Code.UNAUTHENTICATED,
                              f"{address} refused this client's key (it is not on the "
                              f"server's allowlist)")
        elif event & _HANDSHAKE_FAILED and error is None:
            error = _RPCError(_Code.UNAUTHENTICATED,
                              f"the secure handshake with {address} failed (is the "
                              f"server key right?)")
    return error


cdef object reply_value(Received *r, zm_header *h, zm_frame_view *v, object rpc_error):
    """(is_error, value): the body object, or the RPCError an error reply says."""
    if h.kind == ZM_KIND_ERROR:
        code = h.status if h.status else _Code.UNKNOWN
        return True, rpc_error(code, _text(h.detail), id=_text(h.service))
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
        reconnecting (libzmq's RECONNECT_STOP is a draft API)."""
        if self.monitor is None:
            return wait_until(self.sock, ZM_POLLOUT, deadline_at)
        import zmq
        poller = zmq.Poller()
        poller.register(self.zsock, zmq.POLLOUT)
        poller.register(self.monitor, zmq.POLLIN)
        while True:
            left = deadline_at - monotonic() if deadline_at > 0 else 1.0
            if left <= 0:
                return 0
            ready = dict(poller.poll(max(1, int(left * 1000))))
            if self.monitor in ready:
                error = _handshake_error(self.monitor, self.address)
                if error is not None:
                    self.close()
                    raise error
            if self.zsock in ready:
                return 1

    def __dealloc__(self):
        if self.zsock is not None and not self.zsock.closed:
            self.zsock.close(linger=0)

    def call(self, str service, str endpoint, str content_type, body,
             double deadline_at, dict metadata=None, uint64_t trace_hi=0,
             uint64_t trace_lo=0, uint64_t span_id=0, Keyring ring=None):
        """One request and its reply. Returns the reply body (bytes, or a
        memoryview for large ones); raises RPCError for an error reply,
        UNAVAILABLE if the request could not be sent before the deadline
        (nothing was processed), DEADLINE_EXCEEDED if the reply did not come
        in time (a cancel frame is sent)."""
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
            raise _RPCError(_Code.UNAVAILABLE, "channel closed")
        if deadline_at > 0 and monotonic() >= deadline_at:
            raise _RPCError(_Code.DEADLINE_EXCEEDED, "deadline passed before the call was sent")
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
                if not self._wait_writable(deadline_at):
                    raise _RPCError(_Code.UNAVAILABLE,
                                    f"could not reach {self.address} before the deadline")
        finally:
            PyBuffer_Release(&bview)

        # Wait for the reply to this request id; anything else is stale.
        while True:
            if not recv_until(&r, self.sock, deadline_at):
                send_cancel(self.sock, request_id, ring)
                raise _RPCError(_Code.DEADLINE_EXCEEDED,
                                f"no reply from {self.address} before the deadline")
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
                        raise _RPCError(_Code.UNAUTHENTICATED, _reply_refused(self.address))
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
        # now, and the socket closes so that it stops reconnecting.
        if self.closed or self.monitor is None:
            return
        error = _handshake_error(self.monitor, self.address)
        if error is not None:
            self.close(error)

    def close(self, error=None):
        """Fail what is pending (UNAVAILABLE, or `error`) and close the socket."""
        cdef _Pending p
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.fd)
        if self.timer is not None:
            self.timer.cancel()
        for p in list(self.pending.values()):
            if not p.future.done():
                p.future.set_exception(error if error is not None
                                       else self.rpc_error(C_UNAVAILABLE, "client closed"))
        self.pending.clear()
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
             Keyring ring=None):
        """Send now; return a Future of the decoded reply (see Channel.call)."""
        cdef uint8_t hbuf[ZM_WIRE_MAX_HEADER]
        cdef size_t hlen = 0
        cdef Py_buffer bview
        cdef zm_slice b
        cdef uint8_t nonce[16]
        cdef MacKey key
        cdef _Pending p = _Pending.__new__(_Pending)
        fut = CallFuture(loop=self.loop)
        if self.closed:
            fut.set_exception(self.rpc_error(C_UNAVAILABLE, "client closed"))
            return fut
        if deadline_at > 0 and monotonic() >= deadline_at:
            fut.set_exception(self.rpc_error(C_DEADLINE_EXCEEDED, "deadline passed before the call was sent"))
            return fut
        self.next_id += 1
        p.request_id = self.next_id
        p.deadline_at = deadline_at
        p.future = fut
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
                fut.set_exception(exc)
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
        self._schedule_read()
        return fut

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
                    continue
                refused = (p.ring is not None
                           and check_reply(p.ring, &r, &h, &v, self.partition) != MAC_OK)
                if refused:
                    self.n_unauthenticated += 1
                    failed, value = True, self.rpc_error(
                        _Code.UNAUTHENTICATED, _reply_refused(self.address))
                else:
                    failed, value = reply_value(&r, &h, &v, self.rpc_error)
            finally:
                received_close(&r)
            if failed:
                p.future.set_exception(value)
                continue
            if p.decode is not None:
                try:
                    value = p.decode(value)
                except Exception as exc:
                    p.future.set_exception(_undecodable(exc))
                    continue
            p.future.set_result(value)
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
            p = self.pending.pop(request_id, None)
            if p is None or p.future.done():
                continue
            if p.sent:
                self._cancel_remote(request_id, p.ring)
                p.future.set_exception(self.rpc_error(
                    C_DEADLINE_EXCEEDED, f"no reply from {self.address} before the deadline"))
            else:
                p.future.set_exception(self.rpc_error(
                    C_UNAVAILABLE, f"could not reach {self.address} before the deadline"))
        # Entries of answered calls stay in the heap until their deadline;
        # rebuild when they outnumber the live ones, so memory follows load.
        if len(self.timers) > 2 * len(self.pending) + 64:
            self.timers = [(p.deadline_at, rid) for rid, p in self.pending.items()
                           if p.deadline_at > 0]
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


@cython.auto_pickle(False)
cdef class ClientCore:
    """The call path of Client and AsyncClient: codec, deadline and
    metadata inheritance, node choice, channel, send, reply, decode - in C,
    calling Python only for the codec and, when the node cache expires,
    the registry. Policy (which registry, which codecs, defaults) comes
    from the Python client that builds it."""

    def __init__(self, dict codecs, str default_content_type, double timeout, *,
                 refresh, double cache_ttl, make_socket, bint is_async,
                 keyring_for=None, refresh_keys=None, size_t max_message_size=0):
        self.codecs = codec_entries(codecs)
        if default_content_type not in self.codecs:
            raise ValueError(f"no codec registered for {default_content_type!r}")
        self.default_codec = self.codecs[default_content_type]
        self.timeout = timeout
        self.refresh = refresh
        self.cache_ttl = cache_ttl
        self.make_socket = make_socket
        self.is_async = is_async
        self.keyring_for = keyring_for
        self.refresh_keys = refresh_keys
        self.keyrings = {}
        self.keys_checked = monotonic()
        self.max_message_size = max_message_size
        self.selectors = {}
        self.expires = {}
        self.local = _threading.local()
        self.channels = {}
        self.all_channels = _weakref.WeakSet()

    cdef CodecEntry _codec(self, str content_type):
        entry = self.codecs.get(content_type)
        if entry is None:
            raise ValueError(f"no codec registered for {content_type!r}")
        return <CodecEntry>entry

    cdef str _pick(self, str service):
        cdef NodeSelector selector = self.selectors.get(service)
        cdef double now = monotonic()
        if selector is None or now >= <double>self.expires[service]:
            selector = self.refresh(service, selector)
            self.selectors[service] = selector
            self.expires[service] = now + self.cache_ttl
        address = selector.pick()
        if address is None:
            raise _RPCError(_Code.UNAVAILABLE, f"no node of service {service!r} is registered")
        return address

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

    cdef Channel _sync_channel(self, str address, object server_key):
        key = address if server_key is None else (address, server_key)
        channels = getattr(self.local, "channels", None)
        if channels is None:
            channels = self.local.channels = {}
        channel = (<dict>channels).get(key)
        if channel is None or (<Channel>channel).sock == NULL:  # refused: try anew
            zsock, monitor = self.make_socket(address, server_key)
            channel = Channel(zsock, address, monitor)
            (<Channel>channel).max_frame = self.max_message_size
            (<dict>channels)[key] = channel
            self.all_channels.add(channel)
        return <Channel>channel

    cdef AsyncChannel _async_channel(self, str address, object server_key):
        key = address if server_key is None else (address, server_key)
        channel = self.channels.get(key)
        if channel is None or (<AsyncChannel>channel).closed:
            loop = _asyncio.get_running_loop()
            if self.loop is None:
                self.loop = loop
            elif loop is not self.loop:
                raise RuntimeError("an AsyncClient belongs to the event loop it was first used on")
            zsock, monitor = self.make_socket(address, server_key)
            channel = AsyncChannel(zsock, address, loop, monitor)
            (<AsyncChannel>channel).max_frame = self.max_message_size
            self.channels[key] = channel
        return <AsyncChannel>channel

    def call(self, str service, str endpoint, request=None, *, timeout=None,
             dict metadata=None, str address=None, response_type=None,
             str content_type=None, server_key=None):
        """One call (see zmicro.Client.call / zmicro.AsyncClient.call)."""
        cdef CodecEntry entry
        cdef Context parent
        cdef double deadline
        cdef Keyring ring
        cdef uint64_t trace_hi = 0, trace_lo = 0, span_id = 0
        if self.closed:
            raise _RPCError(_Code.UNAVAILABLE, "client closed")
        entry = self.default_codec if content_type is None else self._codec(content_type)
        body = entry.encode_value(request)
        if self.max_message_size and len(body) > self.max_message_size:
            # MAXMSGSIZE is per frame, and a peer that gets a bigger one
            # drops the connection (every call on it): refuse it here.
            raise _RPCError(_Code.RESOURCE_EXHAUSTED,
                            f"the request body is {len(body)} bytes, over the "
                            f"max_message_size of {self.max_message_size} bytes")
        deadline = monotonic() + (self.timeout if timeout is None else <double>timeout)
        parent = contextvar_get(CURRENT, None)
        if parent is not None:  # inside a handler: inherit deadline and metadata
            if 0 < parent.deadline_at < deadline:
                deadline = parent.deadline_at
            if parent._metadata:
                metadata = ({**parent._metadata, **metadata} if metadata
                            else dict(parent._metadata))
            trace_hi, trace_lo, span_id = parent.trace_hi, parent.trace_lo, parent.span_id
        if address is None:
            address = self._pick(service)
        ring = self._keyring(service)
        decode = entry.decoder_for(_Any if response_type is None else response_type)
        if decode is IDENTITY:
            decode = None
        if self.is_async:
            return self._async_channel(address, server_key).call(
                service, endpoint, entry.name, body, deadline, decode, metadata,
                trace_hi, trace_lo, span_id, ring)
        if parent is not None and parent._blocks_address == address:
            raise _RPCError(
                _Code.FAILED_PRECONDITION,
                f"{parent.service}/{parent.endpoint} calls its own service from the thread "
                f"that serves it: the call could never be answered; make the handler "
                f"blocking=True, or async with AsyncClient")
        value = self._sync_channel(address, server_key).call(
            service, endpoint, entry.name, body, deadline, metadata, trace_hi, trace_lo,
            span_id, ring)
        if decode is None:
            return value
        try:
            return decode(value)
        except Exception as exc:
            raise _undecodable(exc) from None

    def pick(self, str service):
        """The node the next call to `service` would go to."""
        return self._pick(service)

    def close(self):
        """Close every channel (sync: of every thread; do not call meanwhile)."""
        self.closed = True
        for channel in list(self.all_channels):
            channel.close()
        for channel in self.channels.values():
            (<AsyncChannel>channel).close()
        self.channels.clear()


@cython.auto_pickle(False)
cdef class NodeSelector:
    """Picks a node address per call, in the core: SELECT_RANDOM, or
    SELECT_ROUND_ROBIN, whose position persists across calls so that load
    really rotates (go-micro's round robin restarted at every lookup)."""

    def __init__(self, nodes, int strategy=SELECT_ROUND_ROBIN, uint64_t seed=0):
        if strategy not in (SELECT_RANDOM, SELECT_ROUND_ROBIN):
            raise ValueError(f"unknown strategy {strategy}")
        self.strategy = strategy
        self.rng = seed or (<uint64_t>(monotonic() * 1e9) | 1)
        self.update(nodes)

    def update(self, nodes):
        """Replace the node set; the rotation continues where it was."""
        self._nodes = tuple(nodes)

    @property
    def nodes(self):
        return self._nodes

    cpdef str pick(self):
        cdef Py_ssize_t n = len(self._nodes)
        cdef uint64_t x
        if n == 0:
            return None
        if self.strategy == SELECT_ROUND_ROBIN:
            self.position += 1
            return <str>self._nodes[<Py_ssize_t>(self.position % <uint64_t>n)]
        x = self.rng  # xorshift64* (Vigna): fast, plenty for spreading load
        x ^= x >> 12
        x ^= x << 25
        x ^= x >> 27
        self.rng = x
        return <str>self._nodes[<Py_ssize_t>((x * 2685821657736338717ULL) % <uint64_t>n)]
