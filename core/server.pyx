# server.pyx - the server side of the path of one call (design.md): receive
# on a ROUTER, check in C, dispatch to handlers, send replies.
#
# Two wait strategies over one dispatch path:
# - run_blocking() waits in libzmq with the GIL released (zmq_poll on the
#   ROUTER and a wake pipe): the fast path, for services whose handlers are
#   all sync;
# - attach(loop) waits through asyncio (add_reader on the edge-triggered
#   ZMQ_FD): async handlers run as tasks on that loop.
# Blocking handlers run in a thread pool either way; their results come back
# to the socket's own thread (the ROUTER is never touched from the pool).

import collections as _collections
import contextvars as _contextvars
import functools as _functools
import logging as _logging
import os as _os
import threading as _threading

from libc.string cimport strlen

from zmicro.errors import Code as _Code, RPCError as _RPCError

cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1

# Handler modes, for Python (HandlerMode in server.pxd).
INLINE = MODE_INLINE
BLOCKING = MODE_BLOCKING
ASYNC = MODE_ASYNC

# A drained service keeps its socket this long after its last reply: a
# client's DEALER with ZMQ_IMMEDIATE drops the messages it has received but
# not read yet when the connection goes, so closing at once could lose the
# replies just sent.
cdef double CLOSE_DELAY = 0.5
cdef int BATCH = 256           # messages per wake before other work gets a turn
cdef Py_ssize_t DETAIL_MAX = 1024  # bytes of error detail sent (the wire allows 4096)


cdef str _clip(str text):
    """`text` cut to DETAIL_MAX bytes of UTF-8, on a character boundary."""
    if len(text) * 4 <= DETAIL_MAX:
        return text
    data = text.encode()
    if len(data) <= DETAIL_MAX:
        return text
    return data[:DETAIL_MAX - 3].decode("utf-8", "ignore") + "…"


cdef bint _same(bytes key, zm_slice s) noexcept:
    return (<size_t>PyBytes_GET_SIZE(key) == s.len
            and memcmp(PyBytes_AS_STRING(key), s.ptr, s.len) == 0)


@cython.auto_pickle(False)
cdef class Endpoint:
    """One handler as the loop sees it: `handler(request, ctx)` with the
    service's interceptors already applied, how to run it, what to decode.
    `builtin`: zmicro's own endpoint (health), still served while the
    service drains. `executor`: for a blocking handler, the pool to run it
    in instead of the service's (the caller owns and shuts it down)."""

    def __init__(self, str name, handler, int mode, request_type, *,
                 bint builtin=False, executor=None):
        if mode not in (MODE_INLINE, MODE_BLOCKING, MODE_ASYNC):
            raise ValueError(f"unknown handler mode {mode}")
        if executor is not None and mode != MODE_BLOCKING:
            raise ValueError("only a blocking endpoint takes an executor")
        self.name = name
        self.key = name.encode()
        self.handler = handler
        self.mode = mode
        self.request_type = request_type
        self.decoders = []
        self.builtin = builtin
        self.executor = executor


def _run_blocking(handler, request, Context ctx):
    """A blocking handler, in a pool thread, inside a copied context."""
    if ctx._cancelled:
        raise _RPCError(_Code.CANCELLED, "cancelled before the handler started")
    if ctx.deadline_at > 0 and monotonic() >= ctx.deadline_at:
        raise _RPCError(_Code.DEADLINE_EXCEEDED, "deadline passed before the handler started")
    CURRENT.set(ctx)  # this copy of the context only
    return handler(request, ctx)


async def _run_async(handler, request, Context ctx):
    """An async handler, as a task (tasks run in their own context copy)."""
    if ctx.deadline_at > 0 and monotonic() >= ctx.deadline_at:
        raise _RPCError(_Code.DEADLINE_EXCEEDED, "deadline passed before the handler started")
    CURRENT.set(ctx)
    result = handler(request, ctx)
    if hasattr(result, "__await__"):
        result = await result
    return result


@cython.auto_pickle(False)
cdef class ServerCore:
    """Receives requests on `zsock` (a bound pyzmq ROUTER), runs endpoints,
    answers. Used by zmicro.Service; one thread (or event loop) drives it."""

    def __init__(self, zsock, str service, endpoints, dict codecs, *,
                 str default_content_type, uint32_t max_in_flight,
                 executor_factory, logger=None, Keyring keyring=None,
                 on_refused=None, resolve_principal=None):
        cdef CodecEntry ct
        self.zsock = zsock
        self.sock = socket_handle(zsock)
        self.service = service
        self.service_key = service.encode()
        self.endpoints = list(endpoints)
        self.ctypes = list(codec_entries(codecs).values())
        for ct in self.ctypes:
            if ct.name == default_content_type:
                self.default_ctype = ct
        if self.default_ctype is None:
            raise ValueError(f"no codec for the default content type {default_content_type}")
        for ep in self.endpoints:
            (<Endpoint>ep).decoders = [None] * len(self.ctypes)
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self.running = {}
        self.executor_factory = executor_factory
        self.completions = _collections.deque()
        # The loop blocks in zmq_msg_recv on the ROUTER; to wake it (stop, a
        # blocking handler done) a private inproc peer sends it an empty
        # message. Its routing id is random: a remote peer cannot pose as it,
        # and a wake-up means only "look at your flags and queues".
        self.wake_id = _os.urandom(16)
        wake_address = f"inproc://zmicro-wake-{self.wake_id.hex()}"
        zsock.bind(wake_address)
        self.waker = zsock.context.socket(5)  # DEALER
        self.waker.setsockopt(5, self.wake_id)  # ZMQ_ROUTING_ID
        self.waker.setsockopt(17, 0)  # ZMQ_LINGER
        self.waker.connect(wake_address)
        self.wake_lock = _threading.Lock()
        self.logger = logger or _logging.getLogger("zmicro.server")
        self.rpc_error = _RPCError
        self.keyring = keyring
        self.close_delay = CLOSE_DELAY
        self.on_refused = on_refused
        self.resolve_principal = resolve_principal

    def close(self):
        """Release the waker and the thread pool (not the ROUTER)."""
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None
        if self.waker is not None:
            with self.wake_lock:
                self.waker.close(0)
                self.waker = None

    def _wake(self):
        # From any thread: pool workers, stop(), signal handlers.
        with self.wake_lock:
            if self.waker is not None:
                try:
                    self.waker.send(b"", 1)  # NOBLOCK: a full queue is awake already
                except Exception:
                    pass

    # -- waiting ---------------------------------------------------------

    def run_blocking(self):
        """Serve until stop(), or after drain() until no request is in
        flight or the grace period is over; blocks in libzmq with the GIL
        released. A signal handler's exception (KeyboardInterrupt) ends it
        too."""
        cdef Received r
        cdef int err
        # A signal may be delivered to any thread of the process (the
        # heartbeat's, say): Python runs its handler only when this thread
        # next runs Python code. So the wait wakes up every 250 ms to let it
        # (a timeout set once, not per message: no cost per request).
        set_rcvtimeo(self.sock, 250)
        # A core is used once: stop() and drain() are for good.
        while not self.stopping and not (self.draining and self._drained()):
            r.n = r.extra = 0
            with nogil:
                err = recv_parts(&r, self.sock, 0)
            if err:
                received_close(&r)
                if err != EAGAIN and err != EINTR:
                    raise_errno(err)
                PyErr_CheckSignals()
                continue
            self._handle_safely(&r)
            if self.completions:
                self._flush_completions()
            release_sent()

    def stop(self):
        """Make run_blocking() return (from any thread or a signal handler)."""
        self.stopping = True
        if self.loop is None:
            self._wake()

    def drain(self, double grace):
        """Begin a graceful stop (from any thread or a signal handler): new
        requests are refused at once with UNAVAILABLE and the NOT_PROCESSED
        flag (builtin endpoints still answer), requests in flight go on and
        are answered, and run_blocking() returns when none is left (and no
        reply went out for `close_delay` seconds, so that clients read the
        last ones before the socket closes) or when `grace` seconds have
        passed. A second call keeps the first deadline."""
        if not self.draining:
            self.drain_until = monotonic() + (grace if grace > 0 else 0.0)
            # The quiet period starts now: calls already on their way get
            # their refusal before the socket closes (a node nobody ever
            # called has nobody to wait for).
            self.last_reply_at = monotonic() if self.n_requests else 0.0
            self.draining = True
        if self.loop is None:
            self._wake()

    @property
    def drained(self):
        """True once draining and no request is in flight, or the grace
        period is over (what the asyncio path waits for)."""
        return self.draining and self._drained()

    cdef bint _drained(self):
        cdef double now = monotonic()
        if now >= self.drain_until:
            return True
        return self.in_flight == 0 and now >= self.last_reply_at + self.close_delay

    def attach(self, loop):
        """Serve on `loop` (asyncio) from now on, until detach()."""
        self.loop = loop
        loop.add_reader(socket_fd(self.sock), self._on_readable)
        loop.call_soon(self._on_readable)

    def detach(self):
        if self.loop is not None:
            self.loop.remove_reader(socket_fd(self.sock))
            self.loop = None

    def _on_readable(self):
        # ZMQ_FD is edge-triggered and only says "look at ZMQ_EVENTS": drain a
        # batch, and if more is queued come back after other callbacks ran.
        self.draining_scheduled = False
        if self.loop is None:
            return
        if socket_events(self.sock) & ZM_POLLIN:
            self._drain(BATCH)
            self._after_send()

    cdef int _after_send(self) except -1:
        # Sending can consume the FD's edge for messages already queued.
        if self.loop is not None and not self.draining_scheduled:
            if socket_events(self.sock) & ZM_POLLIN:
                self.draining_scheduled = True
                self.loop.call_soon(self._on_readable)
        return 0

    # -- receiving and dispatch ------------------------------------------

    cdef int _drain(self, int budget) except -1:
        cdef Received r
        cdef int err, i
        for i in range(budget):
            r.n = r.extra = 0
            err = recv_parts(&r, self.sock)  # DONTWAIT: never blocks
            if err:
                received_close(&r)
                if err == EAGAIN:
                    break
                raise_errno(err)
            self._handle_safely(&r)
        release_sent()
        return 0

    cdef int _handle_safely(self, Received *r) except -1:
        """_handle() one message, then close its frames. A bug of ours must
        not stop the service: it is logged loudly, and serving goes on."""
        try:
            self._handle(r)
        except Exception:
            self.logger.exception("zmicro: internal error handling a message")
        finally:
            received_close(r)
        return 0

    cdef int _handle(self, Received *r) except -1:
        cdef zm_header h
        cdef zm_frame_view v
        cdef int rc
        cdef Context ctx
        cdef const char *uid
        if r.extra:
            self.n_malformed += 1
            return 0
        if r.n == 2 and _same(self.wake_id, r.slices[0]):
            return 0  # a wake-up: the loop looks at its flags and queues
        rc = zm_frame_parse(r.slices, r.n, 1, &h, &v)
        if rc != ZM_OK:
            self.n_malformed += 1
            if (rc == ZM_E_VERSION or rc == ZM_E_KIND) and h.kind != ZM_KIND_CANCEL:
                what = (f"unsupported protocol version {h.version} (this server speaks {ZM_WIRE_VERSION})"
                        if rc == ZM_E_VERSION else f"unknown message kind {h.kind}")
                self._refuse(&r.slices[0], h.request_id, C_UNIMPLEMENTED, what)
            return 0
        # The caller's Curve key (ZAP User-Id): secure mode only.
        uid = ZMQ.msg_gets(&r.msgs[v.header], b"User-Id") if self.keyring is not None else NULL
        if self.keyring is not None and not (
                h.kind == ZM_KIND_REQUEST and h.service.len
                and not _same(self.service_key, h.service)) and self._authenticate(r, &h, &v, uid):
            # (A request for another service is not checked: nothing runs
            # for it, and _dispatch answers UNAVAILABLE, signed with our key.)
            return 0
        if h.kind == ZM_KIND_REQUEST:
            return self._dispatch(r, &h, &v, uid)
        if h.kind == ZM_KIND_CANCEL:
            self.n_cancels += 1
            ctx = self.running.get((_frame_bytes(r.slices[0]), h.request_id))
            if ctx is not None:
                ctx._cancel()
            return 0
        if h.kind == ZM_KIND_PING:
            return self._reply(&r.slices[0], h.request_id, ZM_KIND_PONG, C_OK, None, "", None)
        self.n_unexpected += 1
        return 0

    cdef int _authenticate(self, Received *r, zm_header *h, zm_frame_view *v,
                           const char *uid) except -1:
        """0 if the message's MAC, timestamp and nonce pass (keyring.pyx);
        else 1, counted, audited and, for a request or ping, answered
        UNAUTHENTICATED without saying which check failed. `uid`: the
        caller's ZAP User-Id (NULL: none), the nonce partition."""
        cdef const char *partition = uid if uid != NULL else <const char *>""
        cdef int failure = check_view(self.keyring, r.slices, h, v, partition,
                                      strlen(partition))
        if failure == MAC_OK:
            return 0
        self.n_unauthenticated += 1
        if self.on_refused is not None:
            try:
                self.on_refused(MAC_FAILURE_NAMES[failure], self._user_id(uid),
                                _text(h.endpoint))
            except Exception:
                self.logger.exception("zmicro: the audit hook failed")
        if h.kind == ZM_KIND_REQUEST or h.kind == ZM_KIND_PING:
            self._refuse(&r.slices[0], h.request_id, C_UNAUTHENTICATED, "unauthenticated")
        return 1

    cdef str _user_id(self, const char *uid):
        """`uid` (a ZAP User-Id: a Z85 key) as a str, None for NULL. The
        str of the last caller is reused: most messages come from it."""
        cdef size_t n
        if uid == NULL:
            return None
        n = strlen(uid)
        if self.last_uid is None or not _same_text(self.last_uid, uid, n):
            self.last_uid = PyBytes_FromStringAndSize(uid, <Py_ssize_t>n)
            self.last_uid_str = self.last_uid.decode("utf-8", "replace")
        return self.last_uid_str

    cdef Endpoint _endpoint(self, zm_slice name):
        for ep in self.endpoints:
            if _same((<Endpoint>ep).key, name):
                return <Endpoint>ep
        return None

    cdef CodecEntry _ctype(self, zm_slice name):
        for ct in self.ctypes:
            if _same((<CodecEntry>ct).key, name):
                return <CodecEntry>ct
        return None

    cdef object _decoder(self, Endpoint ep, CodecEntry ct):
        decode = ep.decoders[ct.index]
        if decode is None:
            decode = ct.codec.decoder(ep.request_type)
            ep.decoders[ct.index] = IDENTITY if decode is None else decode
        return ep.decoders[ct.index]

    cdef int _dispatch(self, Received *r, zm_header *h, zm_frame_view *v,
                       const char *uid) except -1:
        cdef const zm_slice *peer = &r.slices[0]
        cdef Endpoint ep
        cdef CodecEntry ct
        cdef Context ctx
        cdef uint32_t i
        self.n_requests += 1
        # Every refusal before a handler runs carries NOT_PROCESSED: the
        # caller may retry it on any node, idempotent endpoint or not.
        if h.service.len and not _same(self.service_key, h.service):
            # A stale address, now another service's: never run its endpoint.
            return self._refuse(peer, h.request_id, C_UNAVAILABLE,
                                f"this node serves {self.service!r}, not {_text(h.service)!r}")
        ep = self._endpoint(h.endpoint)
        if self.draining and (ep is None or not ep.builtin):
            return self._refuse(peer, h.request_id, C_UNAVAILABLE,
                                f"{self.service} is shutting down")
        if ep is None:
            return self._refuse(peer, h.request_id, C_UNIMPLEMENTED,
                                f"{self.service} has no endpoint {_text(h.endpoint)!r}")
        ct = self._ctype(h.content_type) if h.content_type.len else self.default_ctype
        if ct is None:
            return self._refuse(peer, h.request_id, C_INVALID_ARGUMENT,
                                f"unsupported content type {_text(h.content_type)!r}")
        if v.body_count > 1:
            return self._refuse(peer, h.request_id, C_INVALID_ARGUMENT,
                                "a request carries at most one body frame")
        if self.in_flight >= self.max_in_flight:
            return self._refuse(peer, h.request_id, C_RESOURCE_EXHAUSTED,
                                f"{self.service} is busy ({self.in_flight} requests in flight)")

        if v.inline_body:
            body = inline_body_object(r, v.header, v.body)
        else:
            body = body_object(r, v.body_first) if v.body_count else b""
        decode = self._decoder(ep, ct)
        if decode is IDENTITY:
            request = body
        else:
            try:
                request = decode(body)
            except Exception as exc:
                if isinstance(exc, ct.invalid):  # the codec's words name the field
                    exc = self.rpc_error(C_INVALID_ARGUMENT, str(exc))
                elif not isinstance(exc, self.rpc_error):
                    exc = self.rpc_error(C_INVALID_ARGUMENT,
                                         f"request does not decode as {ct.name}: {exc}")
                return self._error_reply(peer, h.request_id, exc, ZM_FLAG_NOT_PROCESSED)

        ctx = Context.__new__(Context)
        ctx.service = self.service
        ctx.endpoint = ep.name
        ctx.request_id = h.request_id
        ctx.peer = _frame_bytes(peer[0])
        ctx.content_type = ct.name
        ctx._ctype = ct
        ctx.deadline_at = monotonic() + <double>h.deadline_us * 1e-6 if h.deadline_us else 0.0
        if h.n_metadata:
            ctx._metadata = {_text(h.metadata[i].key): _data(h.metadata[i].value)
                             for i in range(h.n_metadata)}
        ctx.trace_hi = h.trace_hi
        ctx.trace_lo = h.trace_lo
        ctx.span_id = h.span_id
        if uid != NULL:  # secure: the ZAP User-Id names the caller
            ctx.user_id = self._user_id(uid)
            ctx._resolve = self.resolve_principal

        if ep.mode != MODE_BLOCKING:
            # The service's own thread runs this handler: a sync call back
            # into this service from it could never be answered.
            ctx._blocks_address = self.local_address
        self.in_flight += 1
        if ep.mode == MODE_INLINE:
            result = exc = None
            token = PyContextVar_Set(CURRENT, ctx)  # the C API: no attribute lookups
            try:
                result = ep.handler(request, ctx)
            except Exception as e:
                exc = e
            finally:
                PyContextVar_Reset(CURRENT, token)
                self.in_flight -= 1
            return self._answer(ctx, result, exc)

        self.running[(ctx.peer, ctx.request_id)] = ctx
        try:
            if ep.mode == MODE_BLOCKING:
                executor = ep.executor
                if executor is None:
                    if self.executor is None:
                        self.executor = self.executor_factory()
                    executor = self.executor
                fut = executor.submit(_contextvars.copy_context().run,
                                           _run_blocking, ep.handler, request, ctx)
                fut.add_done_callback(_functools.partial(self._pool_done, ctx))
            else:
                if self.loop is None:
                    raise RuntimeError(f"{ep.name} is async: serve it with Service.serve()")
                ctx._task = self.loop.create_task(_run_async(ep.handler, request, ctx))
                ctx._task.add_done_callback(_functools.partial(self._task_done, ctx))
        except Exception as exc:
            self.in_flight -= 1
            self.running.pop((ctx.peer, ctx.request_id), None)
            return self._answer(ctx, None, exc)
        return 0

    # -- answers ---------------------------------------------------------

    def _pool_done(self, Context ctx, fut):
        # In a pool thread: hand the outcome to the socket's thread.
        self.completions.append((ctx, fut))
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._flush_from_loop)
        else:
            self._wake()

    def _flush_from_loop(self):
        self._flush_completions()

    cdef int _flush_completions(self) except -1:
        cdef Context ctx
        while self.completions:
            ctx, fut = self.completions.popleft()
            self.in_flight -= 1
            self.running.pop((ctx.peer, ctx.request_id), None)
            if fut.cancelled():
                continue  # the pool shut down under it: the service is stopping
            exc = fut.exception()
            self._answer(ctx, None if exc is not None else fut.result(), exc)
        release_sent()
        self._after_send()
        return 0

    def _task_done(self, Context ctx, task):
        self.in_flight -= 1
        self.running.pop((ctx.peer, ctx.request_id), None)
        if task.cancelled():
            if not ctx._cancelled:  # cancelled by us stopping, not by the caller
                self._answer(ctx, None, self.rpc_error(C_CANCELLED, "the service is stopping"))
        else:
            exc = task.exception()
            self._answer(ctx, None if exc is not None else task.result(), exc)
        release_sent()
        self._after_send()

    cdef int _answer(self, Context ctx, object result, object exc) except -1:
        cdef zm_slice peer
        cdef CodecEntry ct = <CodecEntry>ctx._ctype
        if ctx._cancelled:
            return 0  # the caller gave up: nobody is waiting for this
        peer.ptr = <const uint8_t *>PyBytes_AS_STRING(ctx.peer)
        peer.len = <size_t>PyBytes_GET_SIZE(ctx.peer)
        if exc is None:
            try:
                body = ct.encode_value(result)
            except Exception as e:
                self.logger.error("zmicro: %s/%s returned a value %s cannot encode: %s",
                                  self.service, ctx.endpoint, ct.name, e)
                exc = self.rpc_error(C_INTERNAL, "internal error")
            else:
                return self._reply(&peer, ctx.request_id, ZM_KIND_REPLY, C_OK, None,
                                   ct.name, body)
        return self._error_reply(&peer, ctx.request_id, exc)

    cdef int _error_reply(self, const zm_slice *peer, uint64_t request_id, object exc,
                          uint32_t flags=0) except -1:
        if isinstance(exc, self.rpc_error):
            return self._reply(peer, request_id, ZM_KIND_ERROR, int(exc.code), exc.detail,
                               "", None, exc.id or self.service, flags)
        if type(exc).__name__ == "CancelledError":
            return self._reply(peer, request_id, ZM_KIND_ERROR, C_CANCELLED, "cancelled", "", None)
        # Logged here with its traceback; the caller learns only that it failed.
        self.logger.error("zmicro: handler of %s failed", self.service, exc_info=exc)
        return self._reply(peer, request_id, ZM_KIND_ERROR, C_INTERNAL, "internal error", "", None)

    cdef int _refuse(self, const zm_slice *peer, uint64_t request_id, int status,
                     object detail) except -1:
        """An error reply for a request no handler ran for (NOT_PROCESSED)."""
        return self._reply(peer, request_id, ZM_KIND_ERROR, status, detail, "", None, "",
                           ZM_FLAG_NOT_PROCESSED)

    cdef int _reply(self, const zm_slice *peer, uint64_t request_id, int kind,
                    int status, object detail, str content_type, object body,
                    str error_id="", uint32_t flags=0) except -1:
        cdef zm_header h
        cdef uint8_t hbuf[ZM_WIRE_MAX_HEADER]
        cdef size_t hlen = 0
        cdef Py_buffer bview
        cdef zm_slice b
        cdef bint inline = False
        cdef int rc
        cdef uint8_t nonce[16]
        cdef MacKey key = None
        memset(&h, 0, <size_t>(<char *>&h.metadata - <char *>&h))
        memset(&bview, 0, sizeof(Py_buffer))
        h.version = ZM_WIRE_VERSION
        h.kind = <uint16_t>kind
        h.request_id = request_id
        h.status = <uint16_t>status
        h.flags = flags
        _slice_text(content_type, &h.content_type)
        if detail:
            detail = _clip(str(detail))
            _slice_text(detail, &h.detail)
        if kind == ZM_KIND_ERROR:  # every error names where it comes from
            _slice_text(error_id or self.service, &h.service)
        try:
            if kind == ZM_KIND_REPLY:
                view_get(body, &bview, &b)
                inline = b.len < 65536  # small bodies ride in the header frame
                if inline:
                    h.flags |= ZM_FLAG_BODY_INLINE
            if self.keyring is not None:
                # One frame with the MAC at its end, unless a large body
                # has its own frame.
                key = self.keyring.sign_header(&h, nonce, inline or kind != ZM_KIND_REPLY)
            rc = zm_wire_write_ex(&h, hbuf, sizeof(hbuf), &hlen, ZM_WIRE_TRUSTED_UTF8)
            if rc != ZM_OK:  # only an absurd error id or detail gets here
                h.detail.len = h.service.len = 0
                rc = zm_wire_write_ex(&h, hbuf, sizeof(hbuf), &hlen, ZM_WIRE_TRUSTED_UTF8)
                if rc != ZM_OK:
                    raise_zm(rc)
            # ROUTER_MANDATORY + DONTWAIT: a caller that is gone (EHOSTUNREACH)
            # or not reading (EAGAIN: its queue is full) loses this reply,
            # counted.
            rc = ZMQ.send(self.sock, peer.ptr, peer.len, ZM_SNDMORE | ZM_DONTWAIT)
            if rc < 0:
                rc = ZMQ.errno_()
                if rc == EHOSTUNREACH or rc == EAGAIN:
                    self.n_replies_dropped += 1
                    return 0
                raise_errno(rc)
            if key is not None:
                send_signed(self.sock, key, self.keyring, hbuf, hlen,
                            body if kind == ZM_KIND_REPLY else None, &b, inline, 0)
            elif inline:
                send_inline(self.sock, hbuf, hlen, &b, 0)
            elif kind == ZM_KIND_REPLY:
                if ZMQ.send(self.sock, hbuf, hlen, ZM_SNDMORE) < 0:
                    raise_errno(ZMQ.errno_())
                send_body(self.sock, body, &b, 0)
            elif ZMQ.send(self.sock, hbuf, hlen, 0) < 0:
                raise_errno(ZMQ.errno_())
        finally:
            PyBuffer_Release(&bview)
        self.n_codes[status if status <= 16 else 2] += 1
        if self.draining:
            self.last_reply_at = monotonic()
        return 0

    # -- reporting -------------------------------------------------------

    def stats(self):
        """Counters since start: requests, replies by status code, frames
        dropped as malformed, requests in flight."""
        codes = {}
        for i in range(17):
            if self.n_codes[i]:
                codes[_Code(i).name] = self.n_codes[i]
        return {
            "requests": self.n_requests,
            "in_flight": self.in_flight,
            "replies": codes,
            "errors": sum(n for name, n in codes.items() if name != "OK"),
            "malformed": self.n_malformed,
            "unexpected": self.n_unexpected,
            "cancels": self.n_cancels,
            "replies_dropped": self.n_replies_dropped,
            "unauthenticated": self.n_unauthenticated,
        }
