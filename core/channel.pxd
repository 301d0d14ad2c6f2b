cdef class _Call
cdef class ClientCore


# What a channel's monitor last said about its connection.
cdef enum PeerState:
    PEER_DOWN = -1                    # connecting fails (refused, unreachable): libzmq retries
    PEER_NEW = 0                      # no news yet (connecting)
    PEER_UP = 1                       # connected
    PEER_LOST = -2                    # dropped, and libzmq said nothing of reconnecting:
                                      # after a frame over MAXMSGSIZE (a protocol error)
                                      # it never does, and the socket is dead for good


cdef class Request:
    """One call as each of its attempts sends it (made once per call)."""

    cdef str service                  # the service called: names the MAC key
    cdef str endpoint
    cdef str content_type             # the codec's name
    cdef object body                  # the encoded request (bytes-like)
    cdef double deadline              # monotonic; 0: none
    cdef dict metadata                # str -> bytes | str, or None
    cdef uint64_t trace_hi, trace_lo  # W3C trace id
    cdef uint64_t span_id             # the caller's span
    cdef Keyring ring                 # signs it, checks its answer (None: insecure)
    cdef object decode                # reply body -> value (None: the body is the value)
    cdef ClientCore core              # the client that makes it
    cdef object server_key            # the server key asked for (None: the trust rules')
    cdef RetryPolicy policy           # None: no retries
    cdef RetryBudget budget           # the service's (None without a policy)
    cdef bint idempotent              # retrying is safe even if a handler ran
    cdef bint wait_for_ready          # a node that refuses connections is waited for
                                      # (to the deadline), not an error at once
    cdef bint event                   # an event delivery (ClientCore.deliver): `body`
                                      # is the prebuilt frame, `service` the topic name


cdef class ChannelBase:
    """One DEALER connected to one node: what the sync and the async
    channel share (building a request, reading its answer, cancelling)."""

    cdef object zsock                 # pyzmq DEALER, kept alive
    cdef void *sock                   # its libzmq socket (NULL once closed)
    cdef object monitor               # PAIR receiving its connection events, or None
    cdef void *msock                  # the monitor's libzmq socket (NULL: none)
    cdef readonly str address         # the node's endpoint
    cdef public size_t max_frame      # largest frame the peer accepts (0: no limit)
    cdef uint64_t next_id             # request ids, unique on this socket
    cdef readonly uint64_t n_stale    # answers to requests no longer awaited
    cdef readonly uint64_t n_malformed  # frames that were not a valid answer
    cdef readonly uint64_t n_unauthenticated  # answers that failed the MAC checks
    cdef double last_used             # monotonic: the pool's idle TTL
    cdef int peer_state               # the monitor's last word (PeerState)
    cdef object __weakref__           # the client tracks its channels weakly

    cdef int build(self, Outgoing *o, Request rq, uint64_t request_id,
                   uint8_t *nonce) except -1
    cdef bint accept(self, Incoming *m) except -1
    cdef object answer(self, Incoming *m, Request rq, const uint8_t *nonce,
                       bint *failed)
    cdef int send_cancel(self, uint64_t request_id, Request rq) except -1
    cdef bint is_closed(self) noexcept
    cdef bint is_busy(self) noexcept


cdef class Channel(ChannelBase):
    """A sync client's connection to one node (one thread uses it)."""

    cdef readonly uint64_t n_wakes    # returns from call()'s waits for an answer: one
                                      # per message or monitor event (and one when the
                                      # quick slice ends), never one per period of time

    cdef object call(self, Request rq, double connect_by, bint may_reopen=*)
    cdef int _wait_writable(self, double deadline_at, bint wait_for_ready) except -2
    cdef int _read_monitor(self, bint in_flight) except -1


cdef class Completion:
    """Where an event delivery's end goes, instead of a Future (the
    embedded publisher's fast path: no Future, no loop callback per
    event). complete() is called once, on the channel's loop: with None
    when the node acked, else with the exception a Future would have got.
    It must not raise (the channel reports what it raises to the loop's
    exception handler and reads on)."""

    cdef int complete(self, object error) except -1


cdef class _Pending:
    """One attempt of an async call, from send to answer."""

    cdef uint64_t request_id
    cdef Request rq
    cdef double deadline_at           # monotonic; 0 = none
    cdef double connect_by            # monotonic: unsent by then -> UNAVAILABLE (0: deadline)
    cdef object future
    cdef bint sent
    cdef uint8_t nonce[ZM_NONCE_SIZE] # the request's nonce: its answer's binding
    cdef Parked parked                # built, waiting for room (None: sent)
    cdef _Call owner                  # node accounting, retries, hedging; None: a
                                      # first attempt to a fixed address (a _Call is
                                      # made only if it fails and may be retried)
    cdef NodeState node               # the attempt's node (None: accounted for)
    cdef double started               # monotonic: when the attempt was sent
    cdef AsyncChannel channel         # the channel it went on
    cdef bint requeued                # put back after a forged answer: its deadline is
                                      # in `timers` already (pushed once, not per answer)
    cdef Completion sink              # an event's end goes here (None: to `future`)
    cdef bint sending                 # inside send_event: an end now is deferred


cdef class AsyncChannel(ChannelBase):
    """One DEALER connected to one node, owned by one asyncio loop."""

    cdef object loop                  # the event loop that owns it
    cdef dict future_kw               # {"loop": loop}: CallFuture's arguments
    cdef int fd                       # ZMQ_FD, watched with add_reader
    cdef dict pending                 # request id -> _Pending
    cdef list timers                  # heap of (deadline, request id): deadlines
                                      # out of sending order, connect deadlines
    cdef double last_deadline         # the latest deadline sent in order
    cdef object timer                 # loop handle firing at the earliest deadline
    cdef double timer_at              # when `timer` fires (monotonic)
    cdef list outbox                  # _Pending built this loop iteration, sent at its end
    cdef object backlog               # deque of _Pending not yet sent (no room)
    cdef bint read_scheduled          # a drain is queued with call_soon
    cdef bint closed
    cdef object rpc_error             # zmicro.errors.RPCError

    cdef object send(self, Request rq, double connect_by, _Call owner, object fut)
    cdef object send_event(self, Request rq, uint64_t request_id, bytes event_id,
                           double connect_by, Completion sink=*)
    cdef bint _enqueue(self, _Pending p, Outgoing *o) except -1
    cdef int _timers_for(self, _Pending p) except -1
    cdef int _flush_backlog(self) except -1
    cdef int _flush_outbox(self) except -1
    cdef int _connect_timer(self, _Pending p) except -1
    cdef int _arm_timer(self, double deadline_at) except -1
    cdef int _check_events(self) except -1
    cdef int _refused(self) except -1
    cdef int _schedule_read(self) except -1
    cdef int _drain(self) except -1
    cdef int _cancel_remote(self, _Pending p) except -1
    cdef bint _open(self, _Pending p) except -1
    cdef int _complete(self, _Pending p, object error) except -1
    cdef int _fail(self, _Pending p, exc) except -1
    cdef int _answered(self, _Pending p) except -1
    cdef int _succeed(self, _Pending p, value) except -1
