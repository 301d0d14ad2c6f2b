cdef enum HandlerMode:
    MODE_INLINE = 0     # sync handler run on the socket's thread
    MODE_BLOCKING = 1   # sync handler run in the thread pool
    MODE_ASYNC = 2      # coroutine function run as a task on the event loop


cdef class Endpoint:
    """A registered handler as the server loop sees it."""

    cdef readonly str name            # "Greeter.Hello"
    cdef bytes key                    # name in UTF-8, matched against headers
    cdef readonly object handler      # callable(request, ctx), interceptors applied
    cdef readonly int mode            # HandlerMode
    cdef readonly object request_type # what the decoders produce (Any: untyped)
    cdef readonly bint builtin        # zmicro's own (health): still answered
                                      # while draining
    cdef readonly object executor     # blocking mode: its own pool (None:
                                      # the service's)
    cdef CodecEntry last_ct           # the codec of its last request, and
    cdef object last_decode           # its decoder (from the codec's cache)


cdef class TopicSub:
    """One subscription of a ServerCore to a topic (the embedded broker's)."""

    cdef readonly str topic
    cdef bytes name                   # "zmicro.topic.<topic>" in UTF-8, matched against headers
    cdef object on_delivery           # (EventDelivery) -> Any, on the server's thread
    cdef readonly uint32_t max_in_flight
    cdef readonly uint32_t in_flight  # deliveries handed out, not ended
    cdef Keyring ring                 # the topic's key (answers); None: insecure
    cdef set unended                  # EventDelivery handed out, not ended (given back
                                      # by remove_subscription)
    cdef uint64_t n_delivered         # deliveries handed to on_delivery
    cdef uint64_t n_ended[5]          # deliveries ended, by DeliveryEnd


cdef enum DeliveryEnd:
    END_NONE = 0                      # not ended yet
    END_ACK = 1                       # reply, empty body
    END_NACK = 2                      # error UNAVAILABLE (+ retry-after-ms)
    END_TERM = 3                      # error FAILED_PRECONDITION (processed)
    END_REFUSE = 4                    # error UNAUTHENTICATED + NOT_PROCESSED (EventRefused)


cdef class EventDelivery:
    """One event handed to a subscription; ended once, from any thread."""

    cdef ServerCore core
    cdef TopicSub sub
    cdef readonly bytes data          # the event frame
    cdef readonly object user_id      # the publisher's Curve key (Z85), None insecure
    cdef readonly object deliveries   # None: the embedded path cannot know
    cdef bytes peer                   # routing id of the publisher's connection
    cdef uint64_t request_id          # echoed in the answer
    cdef bytes nonce                  # the event's nonce as received: the answer's binding
    cdef int end                      # DeliveryEnd
    cdef double delay                 # nack: seconds (< 0: none given)
    cdef str reason                   # term

    cdef int _end(self, int how) except -1


cdef class ServerCore:
    """The receive loop and dispatch of one service (one ROUTER socket)."""

    cdef object zsock                 # pyzmq ROUTER, kept alive
    cdef void *sock                   # its libzmq socket
    cdef readonly str service         # service name (error replies' id)
    cdef bytes service_key            # the same in UTF-8, matched against requests
    cdef public str local_address     # where it is bound (self-call detection)
    cdef list endpoints               # Endpoint
    cdef list ctypes                  # CodecEntry, known content types
    cdef CodecEntry default_ctype     # for requests that name none
    cdef readonly uint32_t max_in_flight
    cdef readonly size_t max_frame    # largest frame an answer may have (0: no limit)
    cdef readonly uint32_t in_flight  # requests admitted, not yet answered
    cdef dict running                 # (peer, request id) -> Context (pool, tasks)
    cdef object executor_factory      # () -> Executor for blocking handlers
    cdef object executor              # created on first blocking handler
    cdef object loop                  # asyncio loop while serving with asyncio
    cdef list completions             # what to answer, appended from any thread: an
                                      # EventDelivery ended, or (Context, future) of a
                                      # pooled handler
    cdef object queue                 # deque of (Endpoint, request, Context): inline
                                      # requests admitted, waiting their turn
    cdef uint32_t queued              # len(queue), looked at per request
    cdef double read_ahead_at         # monotonic(): while requests are queued, read
                                      # the socket again from then on
    cdef bint late                    # an inline request may have kept others waiting
                                      # in the socket: the next one is queued
    cdef uint32_t since_read          # inline requests run since the last read-ahead
    cdef dict parked                  # peer -> deque of (Parked, status): answers
                                      # waiting for room in that peer's queue
    cdef size_t parked_bytes          # bytes they hold, all peers
    cdef double parked_retry_at       # monotonic(): try sending them again then
    cdef bint parked_timer            # asyncio: a _retry_parked call is scheduled
    cdef bytes wake_id                # routing id of the waker (random)
    cdef object waker                 # inproc DEALER: wakes the blocking wait
    cdef object wake_lock             # the waker is used from many threads
    cdef bint stopping                # stop() was called
    cdef readonly bint draining       # drain() was called: new requests refused
    cdef double drain_until           # monotonic(): run_blocking returns then
    cdef double last_reply_at         # monotonic() of the last answer sent (0: none yet)
    cdef public double close_delay    # seconds a drained socket stays open after it
    cdef bint draining_scheduled      # an asyncio drain is already queued
    cdef object logger
    cdef KeySource keys               # MAC keyrings: None = unsigned (insecure mode)
    cdef object allowlist             # () -> Mapping of the Curve keys allowed now
    cdef object allowed               # the mapping looked at last
    cdef double allow_next            # monotonic(): call allowlist() again then
    cdef object on_refused            # (reason, user_id, endpoint) -> None: audit
    cdef object resolve_principal     # user_id -> Principal, or None
    cdef bytes last_uid               # User-Id of the last caller, as received,
    cdef str last_uid_str             # as a str,
    cdef bint last_uid_ok             # and whether `allowed` holds it
    cdef object rpc_error             # zmicro.errors.RPCError
    cdef dict subs                    # topic name (bytes, "zmicro.topic.<t>") -> TopicSub
    cdef TopicSub last_sub            # the subscription of the last event (most events
                                      # name the same topic); None after a removal
    cdef uint32_t events_in_flight    # deliveries of every subscription, not ended
    cdef unsigned long owner          # thread id of the socket's thread while it serves
                                      # (run_blocking, attach..detach); 0: not serving
    cdef bint flush_queued            # asyncio: a flush of `completions` is queued on
                                      # the loop (or _on_readable flushes after its batch)
    cdef bint ended_here              # a delivery was ended on the socket's thread since
                                      # the loop last looked (run_blocking: _answer_batch)
    # counters (stats())
    cdef uint64_t n_requests          # requests admitted or refused
    cdef uint64_t n_malformed         # frames dropped: bad layout or header
    cdef uint64_t n_unexpected        # well-formed messages of a kind we ignore
    cdef uint64_t n_cancels           # cancel frames received
    cdef uint64_t n_replies_dropped   # replies libzmq could not route or queue
    cdef uint64_t n_codes[17]         # replies by status code (0: OK)
    cdef uint64_t n_unauthenticated   # messages refused: MAC checks, revoked keys
    cdef uint64_t n_expired           # requests whose deadline passed before their
                                      # inline handler's turn came
    cdef uint64_t n_parked            # answers that waited for room to be sent
    cdef uint64_t n_events            # event messages handed to a subscription
    cdef uint64_t n_events_acked      # acks sent
    cdef uint64_t n_events_nacked     # nacks sent
    cdef uint64_t n_events_refused    # events refused here (frame, caller, topic,
                                      # capacity) or terminated by the subscriber

    cdef int _drain(self, int budget, double until=*) except -1
    cdef int _handle_safely(self, Incoming *m) except -1
    cdef int _handle(self, Incoming *m) except -1
    cdef int _handle_event(self, Incoming *m) except -1
    cdef int _answer_batch(self) except -1
    cdef int _completed(self) except -1
    cdef int _end_delivery(self, EventDelivery d) except -1
    cdef int _dispatch(self, Incoming *m, Keyring ring, const char *uid,
                       double now) except -1
    cdef int _run_inline(self, Endpoint ep, object request, Context ctx,
                         double since) except -1
    cdef int _run_queue(self) except -1
    cdef int _read_ahead(self) except -1
    cdef Context _queued(self, Incoming *m)
    cdef bint _caller_allowed(self, const char *uid, double now) except -1
    cdef int _refused_caller(self, Incoming *m, Keyring ring, str reason,
                             const char *uid) except -1
    cdef Endpoint _endpoint(self, zm_slice name)
    cdef str _user_id(self, const char *uid)
    cdef CodecEntry _ctype(self, zm_slice name)
    cdef int _send(self, const zm_slice *peer, zm_header *h, object body,
                   Keyring ring, const zm_slice *bind, size_t limit) except -1
    cdef int _park(self, const zm_slice *peer, Outgoing *o, uint16_t status) except -1
    cdef int _send_parked(self) except -1
    cdef int _refuse(self, Incoming *m, Keyring ring, int status, object detail) except -1
    cdef int _refuse_version(self, Incoming *m) except -1
    cdef int _pong(self, Incoming *m, Keyring ring) except -1
    cdef str _not_ours(self, Incoming *m)
    cdef int _answer(self, Context ctx, object result, object exc) except -1
    cdef int _error(self, const zm_slice *peer, uint64_t request_id, object exc,
                    Keyring ring, const zm_slice *bind, uint32_t flags,
                    size_t limit) except -1
    cdef bint _drained(self)
    cdef int _flush_completions(self) except -1
    cdef int _after_send(self) except -1
