# server.pyx - the server side of the path of one call (design.md): receive
# on a ROUTER, check in the protocol's order, dispatch to handlers, answer.
#
# Uses: message.pyx (Incoming, in_parse, in_verify, in_body, out_build,
# out_send: every message in and out), keyring.pyx (KeySource, Keyring,
# MAC_FAILURE_NAMES), context.pyx (Context, CURRENT, monotonic), codecs.pyx
# (CodecEntry), socket.pyx (recv_parts, set_rcvtimeo, socket_events,
# socket_fd, release_sent), wire.pyx (_text, _data, _slice_text),
# buffers.pyx (same_bytes), errors.pyx (status codes, raise_errno).
#
# Two wait strategies over one dispatch path:
# - run_blocking() waits in libzmq with the GIL released (a blocking
#   receive on the ROUTER, woken by a private inproc peer): the fast path,
#   for services whose handlers are all sync;
# - attach(loop) waits through asyncio (add_reader on the edge-triggered
#   ZMQ_FD): async handlers run as tasks on that loop.
# Blocking handlers run in a thread pool either way; their results come back
# to the socket's own thread (the ROUTER is never touched from the pool).
#
# What a message goes through, in docs/protocol.md §4.2's order (the
# numbers are the document's):
#
#   1 frame    layout and header readable, else dropped (malformed)
#   2 version  another version or an unknown kind: UNIMPLEMENTED, unsigned;
#              kinds a server does not take: dropped (unexpected)
#   3 caller   secure: its Curve key still on the allowlist (a key removed
#              loses access on its next message), else UNAUTHENTICATED
#   4 service  the service the message names (empty: this one) picks the
#              MAC key: the answer is signed with it too
#   5 sizes    SIGNED, a 32-byte MAC, a 16-byte nonce      } UNAUTHENTICATED
#   6 MAC      key id, MAC (constant time), window         }
#   7 replay   nonce new to this service (its own requests only)
#   8 kind     cancel: acted on if it names this service, never answered;
#              ping: pong (UNAVAILABLE if it names another service)
#   9 target   a request for another service: UNAVAILABLE
#  10 deadline the budget becomes an absolute deadline, now
#  11 endpoint draining: UNAVAILABLE; unknown: UNIMPLEMENTED
#  12 body     content type known, at most one body, else INVALID_ARGUMENT
#  13 capacity max_in_flight (requests running, and inline ones queued),
#              else RESOURCE_EXHAUSTED
#  14 decode   into the handler's type, else INVALID_ARGUMENT
#  15 handler  (the policy's interceptors first); one that waited for its
#              turn is not run if cancelled meanwhile (no answer) or past
#              its deadline (DEADLINE_EXCEEDED)
#
# Refusals up to 14 carry NOT_PROCESSED. Every answer of a secure server is
# signed with the key of the service the request named and bound to the
# request's nonce.
#
# An event (kind 8, §4.6) leaves that path after check 2, for
# _handle_event(): 1 frame (one frame, body inline, at most ZM_EVENT_MAX,
# else dropped), 3 caller, 4 topic (a subscription of this node, else
# UNAVAILABLE; not a topic name: INVALID_ARGUMENT), 9 draining
# (UNAVAILABLE), 11 capacity (the subscription's max_in_flight, else
# RESOURCE_EXHAUSTED), all NOT_PROCESSED; then the subscription's callback
# gets an EventDelivery (an EventGlue without a Python call), and its
# EventInbox (every broker alike) checks the MAC, the age and duplicates.
# The delivery's ack (a reply), nack or term (errors) go out through _send
# like every answer, from this thread, signed with the topic's key and
# bound to the event's nonce.

import collections as _collections
import contextvars as _contextvars
import functools as _functools
import logging as _logging
import os as _os
import threading as _threading

from libc.string cimport strlen
from cpython.pythread cimport PyThread_get_thread_ident

cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1

# Handler modes, for Python (HandlerMode in server.pxd).
INLINE = MODE_INLINE
BLOCKING = MODE_BLOCKING
ASYNC = MODE_ASYNC

# A drained service keeps its socket this long after its last answer (the
# quiet period): a client's DEALER with ZMQ_IMMEDIATE drops the messages it
# has received but not read yet when the connection goes, so closing at once
# could lose the answers just sent; and while answers go out (refusals
# included) callers are still sending, and their calls on the way get their
# refusal rather than a lost connection. Counted from the last answer, not
# from drain(): a service idle for longer closes at once.
cdef double CLOSE_DELAY = 0.5
# Seconds between looks at the allowlist: a key removed from it loses access
# within this and the allowlist's own re-read interval.
cdef double ALLOWLIST_RECHECK = 0.25
# Rings of other services a server keeps (to answer requests that named
# them: a stale address), dropped beyond this.
cdef size_t OTHER_RINGS = 16
# The blocking wait wakes this often (ms) so that Python runs signal handlers.
cdef int SIGNAL_CHECK_MS = 250
# Inline handlers hold the loop: while one runs, requests and cancels pile up
# in the socket, where nobody counts their time. So once an inline request
# took this long (s) from receipt to answer, or READ_AHEAD_EVERY of them ran
# since the socket was last read ahead, the next inline request waits in
# the queue until the loop has read what is there: cancels act first,
# requests beyond max_in_flight are refused at once, and every request's
# deadline counts from when it was read. While the queue holds requests,
# the socket is read again whenever this much time has passed. (Otherwise
# nothing waits long enough to matter, and the fast path reads nothing more.)
cdef double READ_AHEAD = 0.001
cdef uint32_t READ_AHEAD_EVERY = 64
# Messages read at most per read-ahead, so that one keeps no handler waiting long.
cdef int READ_AHEAD_MAX = 4096
# When an event handled inline left its answer waiting (run_blocking), the
# loop first handles what else is in the socket already, at most this many
# messages or this long (s), then sends the answers together: libzmq wakes
# its I/O thread (a write to its mailbox) once per batch, not per answer.
cdef int ANSWER_BATCH = 64
cdef double ANSWER_BATCH_TIME = 0.0005
# Answers to a peer whose queue is full wait (parked) up to this many per
# peer and this many bytes in all, and are tried again every PARKED_RETRY s
# (by the loop's wait, the asyncio timer, and between queued inline requests).
cdef size_t PARKED_PER_PEER = 4096
cdef size_t PARKED_BYTES = 64 * 1024 * 1024
cdef double PARKED_RETRY = 0.005

#: The keys of ServerCore.stats(), in order (what a service reports before
#: its core exists, too: empty_stats()).
STATS_KEYS = ("requests", "in_flight", "replies", "errors", "malformed", "unexpected",
              "cancels", "replies_dropped", "unauthenticated", "expired", "replies_parked",
              "events", "events_acked", "events_nacked", "events_refused")

cdef bint _delivery_registered = False


def empty_stats():
    """ServerCore.stats() of a server that received nothing."""
    return {key: ({} if key == "replies" else 0) for key in STATS_KEYS}


cdef str _clip(str text):
    """`text` cut to ZM_DETAIL_MAX bytes of UTF-8, on a character boundary."""
    if len(text) * 4 <= ZM_DETAIL_MAX:
        return text
    data = text.encode()
    if len(data) <= ZM_DETAIL_MAX:
        return text
    return data[:ZM_DETAIL_MAX - 3].decode("utf-8", "ignore") + "…"


cdef inline bint _same(bytes key, zm_slice s) noexcept:
    return same_bytes(key, s.ptr, s.len)


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
cdef class TopicSub:
    """A subscription of a ServerCore (add_subscription); made by the core."""

    def __init__(self):
        raise TypeError("TopicSub objects are made by ServerCore.add_subscription()")

    def stats(self):
        """``delivered`` (handed to on_delivery), ``acked``, ``nacked``,
        ``terminated`` (terms and refusals), ``in_flight`` (handed out, not
        ended)."""
        return {"delivered": self.n_delivered, "acked": self.n_ended[<int>END_ACK],
                "nacked": self.n_ended[<int>END_NACK],
                "terminated": self.n_ended[<int>END_TERM] + self.n_ended[<int>END_REFUSE],
                "in_flight": len(self.unended)}


@cython.freelist(64)
@cython.auto_pickle(False)
cdef class EventDelivery:
    """One event a ServerCore hands to a subscription: a
    zmicro.broker.base.Delivery. ``data`` is the event frame, ``user_id``
    the publisher's Curve key (Z85; None insecure), ``deliveries`` None.
    End it once with ack(), nack(), term() or refuse(), from any thread:
    the answer goes out from the server's own thread. Later calls do nothing."""

    def __init__(self):
        raise TypeError("EventDelivery objects are made by the ServerCore")

    def ack(self):
        """Handled: answer with a reply (empty body)."""
        self._end(END_ACK)

    def nack(self, *, delay=None):
        """Not handled: answer UNAVAILABLE; with `delay` (seconds), the
        publisher is asked to wait that long (metadata retry-after-ms)."""
        if delay is not None:
            delay = float(delay)
            if not 0 <= delay < 1e9:
                raise ValueError(f"delay must be seconds >= 0, not {delay!r}")
        if self.end == END_NONE:
            self.delay = -1.0 if delay is None else delay
        self._end(END_NACK)

    def term(self, str reason not None):
        """Never again: answer FAILED_PRECONDITION (processed) with
        `reason` as detail, whatever the reason says (a handler's Reject)."""
        if self.end == END_NONE:
            self.reason = reason
        self._end(END_TERM)

    def refuse(self, str reason not None):
        """This node refused the frame (EventInbox.check raised
        EventRefused(reason)): answer UNAUTHENTICATED, NOT_PROCESSED, so the
        publisher may try another member. Only the subscriber glue's
        EventRefused branch calls it; brokers without it term instead."""
        if self.end == END_NONE:
            self.reason = reason
        self._end(END_REFUSE)

    @property
    def ended(self):
        return self.end != END_NONE

    cdef int _end(self, int how) except -1:
        # Under the GIL, with nothing in between that could release it: one
        # caller wins, whatever the threads.
        cdef ServerCore core = self.core
        if self.end != END_NONE:
            return 0
        self.end = how
        self.sub.n_ended[how] += 1
        self.sub.in_flight -= 1  # (room for the next event now; its answer follows)
        self.sub.unended.discard(self)
        core.completions.append(self)
        if core.owner != 0 and core.owner == PyThread_get_thread_ident():
            # Ended on the socket's own thread (an inline handler, a task on
            # the loop): its loop flushes `completions` once the message (or
            # the batch) is handled; a wake-up through the socket would cost
            # a send and a receive per event.
            core.ended_here = True
            if core.loop is not None and not core.flush_queued:
                core.flush_queued = True
                core.loop.call_soon(core._flush_from_loop)
            return 0
        return core._completed()

    def __repr__(self):
        return f"<EventDelivery {self.sub.topic!r} request_id={self.request_id}>"


@cython.auto_pickle(False)
cdef class ServerCore:
    """Receives requests on `zsock` (a bound pyzmq ROUTER), runs endpoints,
    answers. Used by zmicro.Service; one thread (or event loop) drives it.

    Secure: `secrets` (a zmicro.security MacSecrets) gives the MAC keys,
    `allowlist` (() -> Mapping whose keys are the Curve keys allowed now,
    Z85) is looked at again every ALLOWLIST_RECHECK s, `on_refused` audits
    refusals, `resolve_principal` names callers. `max_message_size`: the
    largest frame an answer may have (0: no limit), as the clients' own."""

    def __init__(self, zsock, str service, endpoints, dict codecs, *,
                 str default_content_type, uint32_t max_in_flight,
                 executor_factory, logger=None, secrets=None, allowlist=None,
                 on_refused=None, resolve_principal=None, size_t max_message_size=0):
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
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self.max_frame = max_message_size
        self.running = {}
        self.executor_factory = executor_factory
        self.completions = []
        self.queue = _collections.deque()
        self.parked = {}
        # The loop blocks in zmq_msg_recv on the ROUTER; to wake it (stop, a
        # blocking handler done) a private inproc peer sends it an empty
        # message. Its routing id is random: a remote peer cannot pose as it,
        # and a wake-up means only "look at your flags and queues".
        self.wake_id = _os.urandom(16)
        wake_address = f"inproc://zmicro-wake-{self.wake_id.hex()}"
        zsock.bind(wake_address)
        self.waker = zsock.context.socket(ZM_SOCK_DEALER)
        self.waker.setsockopt(ZM_OPT_ROUTING_ID, self.wake_id)
        self.waker.setsockopt(ZM_OPT_LINGER, 0)
        self.waker.connect(wake_address)
        self.wake_lock = _threading.Lock()
        self.logger = logger or _logging.getLogger("zmicro.server")
        self.rpc_error = _RPCError
        self.subs = {}
        if secrets is not None:
            self.keys = KeySource(secrets, service=service, max_rings=OTHER_RINGS)
        self.allowlist = allowlist
        self.close_delay = CLOSE_DELAY
        self.on_refused = on_refused
        self.resolve_principal = resolve_principal

    def close(self):
        """Release the waker and the thread pool (not the ROUTER). Answers
        still parked (stop(), or a grace period over before their callers
        read) are tried once more, without blocking, as the socket is still
        open; those that still find no room are dropped and counted
        (replies_dropped). Returns how many went out now (on the socket's
        thread, after its loop ended)."""
        cdef Py_ssize_t sent = 0
        cdef uint64_t gone
        if self.parked:
            for waiting in self.parked.values():
                sent += len(waiting)
            gone = self.n_replies_dropped
            # A send looks at the caller's "I have read" notices only if
            # none was looked at for a while (libzmq throttles that); asking
            # for the socket's events looks at them now.
            socket_events(self.sock)
            self._send_parked()
            sent -= <Py_ssize_t>(self.n_replies_dropped - gone)  # (callers gone)
            for waiting in self.parked.values():
                sent -= len(waiting)
                self.n_replies_dropped += len(waiting)
            self.parked.clear()  # (frees their messages)
            self.parked_bytes = 0
            release_sent()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None
        if self.waker is not None:
            with self.wake_lock:
                self.waker.close(0)
                self.waker = None
        return sent

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
        cdef Incoming m
        cdef int err
        # A signal may be delivered to any thread of the process (the
        # heartbeat's, say): Python runs its handler only when this thread
        # next runs Python code. So the wait wakes up every 250 ms to let it
        # (a timeout set once, not per message: no cost per request).
        set_rcvtimeo(self.sock, SIGNAL_CHECK_MS)
        self.owner = PyThread_get_thread_ident()
        try:
            # A core is used once: stop() and drain() are for good.
            while not self.stopping and not (self.draining and self._drained()):
                m.r.n = m.r.extra = 0
                with nogil:
                    err = recv_parts(&m.r, self.sock, 0)
                if err:
                    in_close(&m)
                    if err != EAGAIN and err != EINTR:
                        raise_errno(err)
                    PyErr_CheckSignals()
                else:
                    self._handle_safely(&m)
                    if self.ended_here and self.completions:
                        self._answer_batch()
                    if self.queued:
                        self._run_queue()
                if self.completions:
                    self._flush_completions()
                if self.parked and monotonic() >= self.parked_retry_at:
                    self._send_parked()
                release_sent()
        finally:
            # Later ends (a subscription closing as the service stops) find no
            # loop to flush them: the service does (_flush_from_loop).
            self.owner = 0

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
        answer went out for `close_delay` seconds, so that clients read the
        last ones before the socket closes) or when `grace` seconds have
        passed. A second call keeps the first deadline."""
        if not self.draining:
            self.drain_until = monotonic() + (grace if grace > 0 else 0.0)
            # The quiet period counts from the last answer (CLOSE_DELAY),
            # sent before now or while draining: a node that answered calls
            # or events a moment ago keeps its socket, for their callers and
            # for those whose calls are on their way (still sending: they
            # get their refusal); one idle for longer, or never called, has
            # nobody to wait for and closes at once.
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
        return (self.in_flight == 0 and self.events_in_flight == 0 and not self.parked
                and now >= self.last_reply_at + self.close_delay)

    def attach(self, loop):
        """Serve on `loop` (asyncio) from now on, until detach()."""
        self.loop = loop
        self.owner = PyThread_get_thread_ident()  # (called on the loop's thread)
        loop.add_reader(socket_fd(self.sock), self._on_readable)
        loop.call_soon(self._on_readable)

    def detach(self):
        if self.loop is not None:
            self.loop.remove_reader(socket_fd(self.sock))
            self.loop = None
            self.owner = 0

    def _on_readable(self):
        # ZMQ_FD is edge-triggered and only says "look at ZMQ_EVENTS": drain a
        # batch, and if more is queued come back after other callbacks ran.
        self.draining_scheduled = False
        if self.loop is None:
            return
        if socket_events(self.sock) & ZM_POLLIN:
            queued, self.flush_queued = self.flush_queued, True  # (flushed below)
            try:
                self._drain(BATCH)
                if self.queued:
                    self._run_queue()
            finally:
                self.flush_queued = queued
            if self.completions:
                self._flush_completions()  # the batch's acks, together
            self._after_send()

    cdef int _answer_batch(self) except -1:
        """An event was ended on this thread, its answer waits: handle the
        messages already in the socket (ANSWER_BATCH at most, for
        ANSWER_BATCH_TIME at most) before run_blocking sends the answers."""
        self.ended_here = False
        self._drain(ANSWER_BATCH, monotonic() + ANSWER_BATCH_TIME)
        self.ended_here = False
        return 0

    cdef int _after_send(self) except -1:
        # Sending can consume the FD's edge for messages already queued.
        if self.loop is not None and not self.draining_scheduled:
            if socket_events(self.sock) & ZM_POLLIN:
                self.draining_scheduled = True
                self.loop.call_soon(self._on_readable)
        return 0

    # -- receiving and checking (the numbers are protocol.md §4.2's) --------

    cdef int _drain(self, int budget, double until=0) except -1:
        """Handle up to `budget` messages already in the socket (and, with
        `until`, none after that monotonic time, nor once stopping)."""
        cdef Incoming m
        cdef int err, i
        for i in range(budget):
            m.r.n = m.r.extra = 0
            err = recv_parts(&m.r, self.sock)  # DONTWAIT: never blocks
            if err:
                in_close(&m)
                if err == EAGAIN:
                    break
                raise_errno(err)
            self._handle_safely(&m)
            if until > 0 and (self.stopping or monotonic() >= until):
                break
        release_sent()
        return 0

    cdef int _handle_safely(self, Incoming *m) except -1:
        """_handle() one message, then close its frames. A bug of ours must
        not stop the service: it is logged loudly, and serving goes on."""
        try:
            self._handle(m)
        except Exception:
            self.logger.exception("zmicro: internal error handling a message")
        finally:
            in_close(m)
        return 0

    cdef int _handle(self, Incoming *m) except -1:
        cdef Keyring ring = None
        cdef const char *uid = NULL
        cdef int failure
        cdef zm_slice caller
        cdef uint16_t kind
        cdef double now
        cdef Context ctx
        if m.r.n == 2 and not m.r.extra and _same(self.wake_id, m.r.slices[0]):
            return 0  # a wake-up: the loop looks at its flags and queues
        # 1. frame
        if in_parse(m, True) != ZM_OK:
            self.n_malformed += 1
            # 2. version, kind: the header was read, so the caller hears why
            if (m.rc == ZM_E_VERSION or m.rc == ZM_E_KIND) and m.h.kind != ZM_KIND_CANCEL:
                self._refuse_version(m)
            return 0
        kind = m.h.kind
        if kind != ZM_KIND_REQUEST and kind != ZM_KIND_CANCEL and kind != ZM_KIND_PING:
            if kind == ZM_KIND_EVENT:
                return self._handle_event(m)
            self.n_unexpected += 1
            return 0
        now = monotonic()
        if self.keys is not None:
            uid = ZMQ.msg_gets(&m.r.msgs[m.v.header], b"User-Id")
            # 4. service: its key checks this message and signs the answer
            if m.h.service.len == 0 or _same(self.service_key, m.h.service):
                self.keys.tick(now)
                ring = self.keys.own
            else:
                ring = self.keys.ring_slice(m.h.service, now)
            # 3. caller
            if not self._caller_allowed(uid, now):
                return self._refused_caller(m, ring, "revoked", uid)
            # 5, 6, 7. sizes, MAC, window; the nonce only where a handler may run
            caller.ptr = <const uint8_t *>(uid if uid != NULL else <const char *>"")
            caller.len = strlen(<const char *>caller.ptr)
            failure = in_verify(m, ring, NULL, &caller if ring is self.keys.own else NULL)
            if failure != MAC_OK:
                return self._refused_caller(m, ring, MAC_FAILURE_NAMES[failure], uid)
        # 8. kind
        if kind == ZM_KIND_CANCEL:
            # A cancel for another service names none of this node's requests.
            if m.h.service.len and not _same(self.service_key, m.h.service):
                return 0
            self.n_cancels += 1
            ctx = self.running.get((_data(m.r.slices[0]), m.h.request_id))
            if ctx is None and self.queued:  # an inline request waiting its turn
                ctx = self._queued(m)
            if ctx is not None:
                ctx._cancel()
            return 0
        if kind == ZM_KIND_PING:
            if m.h.service.len and not _same(self.service_key, m.h.service):
                return self._refuse(m, ring, C_UNAVAILABLE, self._not_ours(m))
            return self._pong(m, ring)
        return self._dispatch(m, ring, uid, now)

    cdef bint _caller_allowed(self, const char *uid, double now) except -1:
        """Is the Curve key `uid` (the message's ZAP User-Id) on the
        allowlist now? ZAP asked at the handshake; this asks again, so that
        a key removed loses access on its next message, not its next
        connection."""
        cdef size_t n
        if self.allowlist is None:
            return True
        if uid == NULL:
            return False
        if now >= self.allow_next:
            self.allow_next = now + ALLOWLIST_RECHECK
            current = self.allowlist()
            if current is not self.allowed:
                self.allowed = current
                self.last_uid = None  # look every caller up again
        self._user_id(uid)
        return self.last_uid_ok

    cdef str _user_id(self, const char *uid):
        """`uid` (a ZAP User-Id: a Z85 key) as a str, None for NULL. The
        str of the last caller is reused (most messages come from it), with
        whether the allowlist holds it."""
        cdef size_t n
        if uid == NULL:
            return None
        n = strlen(uid)
        if self.last_uid is None or not same_bytes(self.last_uid, uid, n):
            self.last_uid = PyBytes_FromStringAndSize(uid, <Py_ssize_t>n)
            self.last_uid_str = self.last_uid.decode("utf-8", "replace")
            self.last_uid_ok = self.allowed is not None and self.last_uid_str in self.allowed
        return self.last_uid_str

    cdef int _refused_caller(self, Incoming *m, Keyring ring, str reason,
                             const char *uid) except -1:
        """A message refused at checks 3 to 7: counted, audited with the
        reason, and, for a request or a ping, answered UNAUTHENTICATED
        without saying which check failed."""
        self.n_unauthenticated += 1
        if self.on_refused is not None:
            try:
                self.on_refused(reason, self._user_id(uid), _text(m.h.endpoint))
            except Exception:
                self.logger.exception("zmicro: the audit hook failed")
        if m.h.kind == ZM_KIND_REQUEST or m.h.kind == ZM_KIND_PING or m.h.kind == ZM_KIND_EVENT:
            self._refuse(m, ring, C_UNAUTHENTICATED, "unauthenticated")
        return 1

    # -- events (protocol.md §4.6) -----------------------------------------

    def add_subscription(self, str topic not None, on_delivery, uint32_t max_in_flight):
        """Hand this node's events on `topic` to `on_delivery(EventDelivery)`
        (an EventGlue is called without a Python call), on the server's
        thread (it must not block), at most `max_in_flight` not ended at
        once (beyond: RESOURCE_EXHAUSTED to the publisher). One subscription
        per topic (ValueError). Returns the TopicSub (its stats() count its
        deliveries, also once removed). Callable from any thread."""
        global _delivery_registered
        cdef TopicSub sub
        _late_imports()
        _check_topic(topic)
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if not _delivery_registered:
            from zmicro.broker.base import Delivery
            Delivery.register(EventDelivery)
            _delivery_registered = True
        name = _TOPIC_PREFIX + topic
        key = name.encode()
        if key in self.subs:
            raise ValueError(f"{self.service} subscribes to {topic!r} already")
        sub = TopicSub.__new__(TopicSub)
        sub.topic = topic
        sub.name = key
        sub.on_delivery = on_delivery
        sub.max_in_flight = max_in_flight
        sub.unended = set()
        if self.keys is not None:  # the secrets' own ring: rotated in place
            sub.ring = <Keyring?>self.keys.secrets.keyring(name)
        self.subs[key] = sub  # one dict store: the server's thread sees it whole
        return sub

    def remove_subscription(self, str topic not None):
        """Stop handing `topic`'s events over (later ones: UNAVAILABLE);
        deliveries already handed out can still be ended. Idempotent.
        Returns the deliveries handed out and not ended yet (a list)."""
        cdef TopicSub sub
        _late_imports()
        sub = self.subs.pop((_TOPIC_PREFIX + topic).encode(), None)
        self.last_sub = None
        return [] if sub is None else list(sub.unended)

    def subscriptions(self):
        """topic -> (in_flight, max_in_flight), for stats."""
        return {(<TopicSub>sub).topic: ((<TopicSub>sub).in_flight, (<TopicSub>sub).max_in_flight)
                for sub in self.subs.values()}

    cdef int _handle_event(self, Incoming *m) except -1:
        """An event for this node (the file's comment: checks 1, 3, 4, 9, 11)."""
        cdef Keyring ring = None
        cdef const char *uid = NULL
        cdef TopicSub sub
        cdef EventDelivery d
        cdef double now
        # 1. frame: one frame (after the routing id), body inline, bounded
        if m.r.n != 2 or not m.v.inline_body or m.r.slices[1].len > ZM_EVENT_MAX:
            self.n_malformed += 1
            self.n_events_refused += 1
            return 0
        sub = self.last_sub
        if sub is None or not _same(sub.name, m.h.service):
            sub = self.subs.get(_data(m.h.service)) if self.subs else None
            self.last_sub = sub
        if self.keys is not None:
            now = monotonic()
            uid = ZMQ.msg_gets(&m.r.msgs[m.v.header], b"User-Id")
            if sub is not None:
                self.keys.tick(now)
                ring = sub.ring
            else:
                ring = self.keys.ring_slice(m.h.service, now)
            # 3. caller
            if not self._caller_allowed(uid, now):
                self.n_events_refused += 1
                return self._refused_caller(m, ring, "revoked", uid)
        # 4. topic; 9. draining; 11. capacity
        if sub is None or self.draining or sub.in_flight >= sub.max_in_flight:
            self.n_events_refused += 1
            if sub is not None and not self.draining:
                return self._refuse(m, ring, C_RESOURCE_EXHAUSTED,
                                    f"{self.service} is busy ({sub.in_flight} events of "
                                    f"{sub.topic!r} in flight)")
            if self.draining:
                return self._refuse(m, ring, C_UNAVAILABLE, f"{self.service} is shutting down")
            service = _text(m.h.service)
            if not service.startswith(_TOPIC_PREFIX):
                return self._refuse(m, ring, C_INVALID_ARGUMENT,
                                    f"{service!r} is not a topic name")
            return self._refuse(m, ring, C_UNAVAILABLE,
                                f"this node does not subscribe to {service[len(_TOPIC_PREFIX):]!r}")
        d = EventDelivery.__new__(EventDelivery)
        d.core = self
        d.sub = sub
        d.data = _data(m.r.slices[1])
        d.user_id = self._user_id(uid)
        d.peer = _data(m.r.slices[0])
        d.request_id = m.h.request_id
        d.nonce = _data(m.h.nonce)
        d.delay = -1.0  # no pushback unless nack(delay=) says so (the
                        # callback failing: the publisher's backoff applies)
        sub.in_flight += 1
        self.events_in_flight += 1
        self.n_events += 1
        sub.n_delivered += 1
        sub.unended.add(d)
        try:
            if type(sub.on_delivery) is EventGlue:
                (<EventGlue>sub.on_delivery).deliver(d)
            else:
                sub.on_delivery(d)
        except Exception:
            self.logger.exception("zmicro: the delivery callback of %r failed", sub.topic)
            d._end(END_NACK)  # (nothing if it ended the delivery before failing)
        return 0

    cdef int _completed(self) except -1:
        """Something was put in `completions` (from any thread): make the
        socket's thread flush it."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._flush_from_loop)
        else:
            self._wake()
        return 0

    cdef int _end_delivery(self, EventDelivery d) except -1:
        """Answer an ended delivery (on the socket's thread): ack = reply,
        nack = UNAVAILABLE (+ retry-after-ms), term = FAILED_PRECONDITION,
        refuse = UNAUTHENTICATED + NOT_PROCESSED; signed with the topic's key, bound to its nonce."""
        cdef zm_header h
        cdef zm_slice peer, bind
        cdef dict meta = None
        cdef str detail
        self.events_in_flight -= 1
        peer.ptr = <const uint8_t *>PyBytes_AS_STRING(d.peer)
        peer.len = <size_t>PyBytes_GET_SIZE(d.peer)
        bind.ptr = <const uint8_t *>PyBytes_AS_STRING(d.nonce)
        bind.len = <size_t>PyBytes_GET_SIZE(d.nonce)
        if d.end == END_ACK:
            header_init(&h, ZM_KIND_REPLY, d.request_id)
            self.n_events_acked += 1
        else:
            header_init(&h, ZM_KIND_ERROR, d.request_id)
            if d.end == END_NACK:
                h.status = <uint16_t>C_UNAVAILABLE
                detail = "not handled yet (nack)"
                if d.delay >= 0:
                    meta = {"retry-after-ms": str(<uint64_t>(d.delay * 1000 + 0.5))}
                    fill_metadata(meta, &h)
                self.n_events_nacked += 1
            else:
                detail = _clip(d.reason)
                if d.end == END_REFUSE:
                    h.status = <uint16_t>C_UNAUTHENTICATED
                    h.flags = ZM_FLAG_NOT_PROCESSED
                else:
                    h.status = <uint16_t>C_FAILED_PRECONDITION
                self.n_events_refused += 1
            _slice_text(detail, &h.detail)
            _slice_text(self.service, &h.service)
        return self._send(&peer, &h, None, d.sub.ring, &bind, reply_limit(0, self.max_frame))

    cdef str _not_ours(self, Incoming *m):
        return f"this node serves {self.service!r}, not {_text(m.h.service)!r}"

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

    cdef int _dispatch(self, Incoming *m, Keyring ring, const char *uid,
                       double now) except -1:
        cdef zm_header *h = &m.h
        cdef Endpoint ep
        cdef CodecEntry ct
        cdef Context ctx
        cdef uint32_t i
        self.n_requests += 1
        # Every refusal before a handler runs carries NOT_PROCESSED: the
        # caller may retry it on any node, idempotent endpoint or not.
        # 9. target: a stale address, now another service's node
        if h.service.len and not _same(self.service_key, h.service):
            return self._refuse(m, ring, C_UNAVAILABLE, self._not_ours(m))
        # 11. endpoint
        ep = self._endpoint(h.endpoint)
        if self.draining and (ep is None or not ep.builtin):
            return self._refuse(m, ring, C_UNAVAILABLE, f"{self.service} is shutting down")
        if ep is None:
            return self._refuse(m, ring, C_UNIMPLEMENTED,
                                f"{self.service} has no endpoint {_text(h.endpoint)!r}")
        # 12. body
        ct = self._ctype(h.content_type) if h.content_type.len else self.default_ctype
        if ct is None:
            return self._refuse(m, ring, C_INVALID_ARGUMENT,
                                f"unsupported content type {_text(h.content_type)!r}")
        if m.v.body_count > 1:
            return self._refuse(m, ring, C_INVALID_ARGUMENT,
                                "a request carries at most one body frame")
        # 13. capacity
        if self.in_flight >= self.max_in_flight:
            return self._refuse(m, ring, C_RESOURCE_EXHAUSTED,
                                f"{self.service} is busy ({self.in_flight} requests in flight)")
        # 14. decode
        body = in_body(m)
        if ct is ep.last_ct:  # (most requests use the endpoint's usual codec)
            decode = ep.last_decode
        else:
            decode = ep.last_decode = ct.decoder_for(ep.request_type)
            ep.last_ct = ct
        if decode is IDENTITY:
            request = body
        else:
            try:
                request = decode(body)
            except Exception as exc:
                if isinstance(exc, ct.invalid):  # the codec's words name the field
                    detail = str(exc)
                elif isinstance(exc, self.rpc_error):
                    return self._error(&m.r.slices[0], h.request_id, exc, ring, &h.nonce,
                                       ZM_FLAG_NOT_PROCESSED,
                                       reply_limit(h.max_reply, self.max_frame))
                else:
                    detail = f"request does not decode as {ct.name}: {exc}"
                return self._refuse(m, ring, C_INVALID_ARGUMENT, detail)

        ctx = Context.__new__(Context)
        ctx.service = self.service
        ctx.endpoint = ep.name
        ctx.request_id = h.request_id
        ctx.peer = _data(m.r.slices[0])
        ctx.content_type = ct.name
        ctx._ctype = ct
        # 10. deadline: the budget counts from receipt (protocol.md §5.1)
        ctx.deadline_at = now + <double>h.deadline_us * 1e-6 if h.deadline_us else 0.0
        if h.n_metadata:
            ctx._metadata = {_text(h.metadata[i].key): _data(h.metadata[i].value)
                             for i in range(h.n_metadata)}
        ctx.trace_hi = h.trace_hi
        ctx.trace_lo = h.trace_lo
        ctx.span_id = h.span_id
        ctx.reply_limit = reply_limit(h.max_reply, self.max_frame)
        if ring is not None:  # secure: the answer is bound to this nonce
            memcpy(ctx.nonce, h.nonce.ptr, ZM_NONCE_SIZE)
            ctx.signed = True
        if uid != NULL:  # secure: the ZAP User-Id names the caller
            ctx.user_id = self._user_id(uid)
            ctx._resolve = self.resolve_principal

        # 15. handler
        if ep.mode != MODE_BLOCKING:
            # The service's own thread runs this handler: a sync call back
            # into this service from it could never be answered.
            ctx._blocks_address = self.local_address
        self.in_flight += 1
        if ep.mode == MODE_INLINE:
            if self.queued or self.late:
                # Its turn comes after what waits in the socket was read.
                self.queue.append((ep, request, ctx))
                self.queued += 1
                return 0
            return self._run_inline(ep, request, ctx, now)

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

    cdef int _run_inline(self, Endpoint ep, object request, Context ctx,
                         double since) except -1:
        """Run an inline handler (admitted: counted in in_flight) and answer;
        the next inline request is late if this one took READ_AHEAD from
        `since` (its receipt, or the start of its turn)."""
        result = exc = None
        token = PyContextVar_Set(CURRENT, ctx)  # the C API: no attribute lookups
        try:
            result = ep.handler(request, ctx)
        except Exception as e:
            exc = e
        finally:
            PyContextVar_Reset(CURRENT, token)
            self.in_flight -= 1
            self.since_read += 1
            if self.since_read >= READ_AHEAD_EVERY or monotonic() - since >= READ_AHEAD:
                self.late = True
        return self._answer(ctx, result, exc)

    cdef int _run_queue(self) except -1:
        """Run the queued inline requests in order, reading the socket again
        whenever READ_AHEAD has passed (so a cancel overtakes the request it
        cancels, and a request over capacity is refused while others wait),
        and skipping those cancelled or whose deadline passed while they
        waited (DEADLINE_EXCEEDED, protocol.md §4.2)."""
        cdef Endpoint ep
        cdef Context ctx
        cdef double now
        while self.queued and not self.stopping:
            now = monotonic()
            if now >= self.read_ahead_at:
                self._read_ahead()
                now = monotonic()
            # Answers parked for a full peer go out between queued runs as
            # soon as it has room: the loop's retry (run_blocking) and the
            # asyncio timer cannot run until the queue is done, and a queue
            # of slow handlers outlasts its callers' deadlines (a refusal
            # would arrive as DEADLINE_EXCEEDED). Nothing parked: a field
            # check, no syscall.
            if self.parked and now >= self.parked_retry_at:
                self._send_parked()
            ep, request, ctx = self.queue.popleft()
            self.queued -= 1
            if ctx._cancelled:
                self.in_flight -= 1
                continue  # nobody waits for its answer
            if ctx.deadline_at > 0 and now >= ctx.deadline_at:
                self.in_flight -= 1
                self.n_expired += 1
                self._answer(ctx, None, self.rpc_error(
                    C_DEADLINE_EXCEEDED, "deadline passed before the handler started"))
                continue
            self._run_inline(ep, request, ctx, now)
            if self.completions:
                self._flush_completions()
        if self.stopping:  # never run, never answered: the service is going away
            self.in_flight -= self.queued
            self.queue.clear()
            self.queued = 0
        release_sent()
        return 0

    cdef Context _queued(self, Incoming *m):
        """The queued request that the cancel *m names, or None. (A scan:
        cancels are rare, a map kept per queued request would cost every
        request.)"""
        cdef Context ctx
        cdef uint64_t request_id = m.h.request_id
        for item in self.queue:
            ctx = <Context>(<tuple>item)[2]
            if ctx.request_id == request_id and _same(ctx.peer, m.r.slices[0]):
                return ctx
        return None

    cdef int _read_ahead(self) except -1:
        """Read and check what waits in the socket, without blocking: cancels
        act, refusals go out, inline requests join the queue (stamped with
        their deadline now)."""
        self.read_ahead_at = monotonic() + READ_AHEAD
        self.late = False
        self.since_read = 0
        return self._drain(READ_AHEAD_MAX)

    # -- answers ---------------------------------------------------------

    def _pool_done(self, Context ctx, fut):
        # In a pool thread: hand the outcome to the socket's thread.
        self.completions.append((ctx, fut))
        self._completed()

    def _flush_from_loop(self):
        self.flush_queued = False
        self._flush_completions()

    cdef int _flush_completions(self) except -1:
        cdef Context ctx
        cdef list items
        cdef Py_ssize_t i
        while self.completions:
            # Taken whole (no Python code in between): other threads append
            # to the new list meanwhile, answered by the next turn.
            items = self.completions
            self.completions = []
            for i in range(len(items)):
                item = items[i]
                try:
                    if type(item) is EventDelivery:
                        self._end_delivery(<EventDelivery>item)
                        continue
                    ctx, fut = <tuple>item
                    self.in_flight -= 1
                    self.running.pop((ctx.peer, ctx.request_id), None)
                    if fut.cancelled():
                        continue  # the pool shut down under it: the service is stopping
                    exc = fut.exception()
                    self._answer(ctx, None if exc is not None else fut.result(), exc)
                except BaseException:
                    self.completions[:0] = items[i + 1:]  # (the rest, for the next flush)
                    raise
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
        cdef zm_slice peer, bind
        cdef zm_header h
        cdef CodecEntry ct = <CodecEntry>ctx._ctype
        cdef Keyring ring = self.keys.own if ctx.signed else None
        if ctx._cancelled:
            return 0  # the caller gave up: nobody is waiting for this
        peer.ptr = <const uint8_t *>PyBytes_AS_STRING(ctx.peer)
        peer.len = <size_t>PyBytes_GET_SIZE(ctx.peer)
        bind.ptr = ctx.nonce
        bind.len = ZM_NONCE_SIZE if ctx.signed else 0
        if exc is None:
            try:
                body = ct.encode_value(result)
            except Exception as e:
                self.logger.error("zmicro: %s/%s returned a value %s cannot encode: %s",
                                  self.service, ctx.endpoint, ct.name, e)
                exc = self.rpc_error(C_INTERNAL, "internal error")
            else:
                header_init(&h, ZM_KIND_REPLY, ctx.request_id)
                _slice_text(ct.name, &h.content_type)
                return self._send(&peer, &h, body, ring, &bind, ctx.reply_limit)
        return self._error(&peer, ctx.request_id, exc, ring, &bind, 0, ctx.reply_limit)

    cdef int _error(self, const zm_slice *peer, uint64_t request_id, object exc,
                    Keyring ring, const zm_slice *bind, uint32_t flags,
                    size_t limit) except -1:
        """The error answer for a handler's exception: an RPCError's code,
        detail and id; anything else INTERNAL, logged here with its
        traceback (the caller learns only that it failed)."""
        cdef zm_header h
        cdef int status
        cdef str detail, error_id = self.service
        if isinstance(exc, self.rpc_error):
            status, detail, error_id = int(exc.code), exc.detail, exc.id or self.service
        elif type(exc).__name__ == "CancelledError":
            status, detail = C_CANCELLED, "cancelled"
        else:
            self.logger.error("zmicro: handler of %s failed", self.service, exc_info=exc)
            status, detail = C_INTERNAL, "internal error"
        header_init(&h, ZM_KIND_ERROR, request_id)
        h.status = <uint16_t>status
        h.flags = flags
        if detail:
            detail = _clip(detail)
            _slice_text(detail, &h.detail)
        _slice_text(error_id, &h.service)  # every error names where it comes from
        return self._send(peer, &h, None, ring, bind, limit)

    cdef int _refuse(self, Incoming *m, Keyring ring, int status, object detail) except -1:
        """An error answer to *m, no handler having run (NOT_PROCESSED):
        signed with `ring` (the key of the service *m named), bound to its
        nonce."""
        cdef zm_header h
        cdef str text = _clip(str(detail))
        header_init(&h, ZM_KIND_ERROR, m.h.request_id)
        h.status = <uint16_t>status
        h.flags = ZM_FLAG_NOT_PROCESSED
        _slice_text(text, &h.detail)
        _slice_text(self.service, &h.service)
        return self._send(&m.r.slices[0], &h, None, ring, &m.h.nonce,
                          reply_limit(m.h.max_reply, self.max_frame))

    cdef int _pong(self, Incoming *m, Keyring ring) except -1:
        cdef zm_header h
        header_init(&h, ZM_KIND_PONG, m.h.request_id)
        return self._send(&m.r.slices[0], &h, None, ring, &m.h.nonce,
                          reply_limit(m.h.max_reply, self.max_frame))

    cdef int _refuse_version(self, Incoming *m) except -1:
        """UNIMPLEMENTED for a message of another protocol version or an
        unknown kind (check 2), unsigned: no key can be trusted to mean
        the same there. A peer of an older version gets it in its own
        version's layout (every version keeps requestId where version 1
        had it)."""
        cdef zm_header h
        cdef str what
        if m.rc == ZM_E_VERSION:
            what = (f"unsupported protocol version {m.h.version} "
                    f"(this server speaks {ZM_WIRE_VERSION})")
        else:
            what = f"unknown message kind {m.h.kind}"
        header_init(&h, ZM_KIND_ERROR, m.h.request_id)
        if m.rc == ZM_E_VERSION and 0 < m.h.version < ZM_WIRE_VERSION:
            h.version = m.h.version
        h.status = <uint16_t>C_UNIMPLEMENTED
        h.flags = ZM_FLAG_NOT_PROCESSED
        _slice_text(what, &h.detail)
        _slice_text(self.service, &h.service)
        return self._send(&m.r.slices[0], &h, None, None, NULL, self.max_frame)

    cdef int _send(self, const zm_slice *peer, zm_header *h, object body,
                   Keyring ring, const zm_slice *bind, size_t limit) except -1:
        """Build and send one answer to `peer` through the message layer.
        ROUTER_MANDATORY + DONTWAIT: a caller that is gone (EHOSTUNREACH)
        loses it, counted; one not reading fast enough (EAGAIN: its queue is
        full) gets it later (_park). A reply with a frame over `limit` (the
        smaller of the caller's and the server's max_message_size; 0: none)
        would make the caller's libzmq drop the connection and every call on
        it: it is answered RESOURCE_EXHAUSTED instead (the handler ran), and
        logged."""
        cdef Outgoing o
        cdef Py_buffer bview
        cdef zm_slice b
        cdef zm_header e
        cdef uint8_t nonce[ZM_NONCE_SIZE]
        cdef int err
        cdef uint16_t status = h.status
        cdef str detail
        o.n = 0
        memset(&bview, 0, sizeof(Py_buffer))
        try:
            if body is not None:
                view_get(body, &bview, &b)
            try:
                out_build(&o, h, body, &b if body is not None else NULL, ring, nonce, bind)
            except WireError:
                if h.kind != ZM_KIND_ERROR:
                    raise
                # Only an absurd error id gets here (details are clipped).
                out_close(&o)
                h.detail.len = h.service.len = 0
                out_build(&o, h, None, NULL, ring, nonce, bind)
            if limit and o.largest > limit:
                detail = too_large("reply", o.largest, limit, True).detail
                self.logger.error("zmicro: %s: %s", self.service, detail)
                out_close(&o)
                header_init(&e, ZM_KIND_ERROR, h.request_id)
                status = e.status = <uint16_t>C_RESOURCE_EXHAUSTED
                _slice_text(detail, &e.detail)
                _slice_text(self.service, &e.service)
                out_build(&o, &e, None, NULL, ring, nonce, bind)
            if self.parked:  # after the answers already waiting for this peer
                if _data(peer[0]) in self.parked:
                    return self._park(peer, &o, status)
            err = out_send(&o, self.sock, peer, 0)
            if err == EAGAIN:
                return self._park(peer, &o, status)
        finally:
            out_close(&o)
            PyBuffer_Release(&bview)
        if err:
            self.n_replies_dropped += 1
            return 0
        self.n_codes[status if status < C_CODES else C_UNKNOWN] += 1
        self.last_reply_at = monotonic()  # (the quiet period's start: drain())
        return 0

    cdef int _park(self, const zm_slice *peer, Outgoing *o, uint16_t status) except -1:
        """Keep the built answer *o to `peer`, whose queue is full, for
        _send_parked() to send when the peer has read: a caller must learn
        its outcome (a refusal above all) long before its deadline. Bounded
        per peer and in bytes; beyond, dropped and counted."""
        cdef Parked p
        cdef size_t size = 0
        cdef int i
        for i in range(o.n):
            size += ZMQ.msg_size(&o.parts[i])
        key = _data(peer[0])
        waiting = self.parked.get(key)
        if (waiting is not None and len(waiting) >= PARKED_PER_PEER) or \
                self.parked_bytes + size > PARKED_BYTES:
            self.n_replies_dropped += 1
            return 0
        p = Parked.take(o)
        if waiting is None:
            if not self.parked:  # the first: look again soon, traffic or not
                self.parked_retry_at = monotonic() + PARKED_RETRY
                if self.loop is not None:
                    if not self.parked_timer:  # (one may wait still: _run_queue sent)
                        self.parked_timer = True
                        self.loop.call_later(PARKED_RETRY, self._retry_parked)
                else:
                    set_rcvtimeo(self.sock, <int>(PARKED_RETRY * 1000))
            waiting = self.parked[key] = _collections.deque()
        waiting.append((p, status))
        self.parked_bytes += size
        self.n_parked += 1
        return 0

    def _retry_parked(self):
        # asyncio: the timer of parked answers (one at a time: parked_timer).
        self.parked_timer = False
        if self.parked and self.loop is not None:
            self._send_parked()
            if self.parked:
                self.parked_timer = True
                self.loop.call_later(PARKED_RETRY, self._retry_parked)
            self._after_send()

    cdef int _send_parked(self) except -1:
        """Send what waits for each peer, in order, until its queue is full
        again; a peer gone loses all of it (counted)."""
        cdef zm_slice peer
        cdef Parked p
        cdef int err, i
        cdef size_t size
        self.parked_retry_at = monotonic() + PARKED_RETRY
        for key in list(self.parked):
            waiting = self.parked[key]
            peer.ptr = <const uint8_t *>PyBytes_AS_STRING(key)
            peer.len = <size_t>PyBytes_GET_SIZE(key)
            while waiting:
                p, status = waiting[0]
                size = 0
                for i in range(p.o.n):
                    size += ZMQ.msg_size(&p.o.parts[i])
                err = out_send(&p.o, self.sock, &peer, 0)
                if err == EAGAIN:
                    break
                waiting.popleft()
                self.parked_bytes -= size
                if err:
                    self.n_replies_dropped += 1
                else:
                    self.n_codes[status if status < C_CODES else C_UNKNOWN] += 1
                    self.last_reply_at = monotonic()
            if not waiting:
                del self.parked[key]
        if not self.parked and self.loop is None:
            set_rcvtimeo(self.sock, SIGNAL_CHECK_MS)
        return 0

    # -- reporting -------------------------------------------------------

    def stats(self):
        """Counters since start (STATS_KEYS): requests, replies by status
        code, errors, frames dropped as malformed, messages of kinds a
        server ignores, cancels, replies dropped, messages refused by the
        MAC checks or a revoked key, queued inline requests skipped because
        their deadline passed, answers that waited for room in a caller's
        queue; requests in flight."""
        codes = {}
        for i in range(C_CODES):
            if self.n_codes[i]:
                codes[_Code(i).name] = self.n_codes[i]
        values = (self.n_requests, self.in_flight, codes,
                  sum(n for name, n in codes.items() if name != "OK"),
                  self.n_malformed, self.n_unexpected, self.n_cancels,
                  self.n_replies_dropped, self.n_unauthenticated, self.n_expired,
                  self.n_parked, self.n_events, self.n_events_acked, self.n_events_nacked,
                  self.n_events_refused)
        return dict(zip(STATS_KEYS, values))
