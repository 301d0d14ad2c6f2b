cdef enum:                            # EventGlue counters (GLUE_COUNTERS)
    G_RECEIVED = 0                    # deliveries given to the glue
    G_REFUSED = 1                     # EventInbox.check refused them (but replay_full)
    G_DUPLICATES = 2                  # acked again, not run (acked here before)
    G_IN_PROGRESS = 3                 # nacked: another copy runs here now
    G_UNDECODABLE = 4                 # termed: the body did not decode
    G_ACKED = 5                       # the handler returned
    G_NACKED = 6                      # Nack, failures, replay_full, not started
    G_REJECTED = 7                    # Reject, terminal RPCErrors
    G_FAILED = 8                      # the handler (or the glue) failed
    G_COUNTERS = 9


cdef class EventContext:
    """What a subscriber's handler knows about its event (zmicro.EventContext)."""

    cdef public str topic
    cdef public object queue          # the subscription's queue group, None: broadcast
    cdef public bytes event_id        # the frame's nonce: the same for every delivery
    cdef public double published_at   # Unix seconds, the publisher's clock
    cdef public object deliveries     # int, or None where the broker cannot know
    cdef public object metadata       # read-only Mapping[str, str]
    cdef object _principal            # the Principal, once known
    cdef object _resolve              # key -> Principal, called on first read; None: known
    cdef object _key                  # what _resolve is given
    cdef public object user_id        # the transport-authenticated key (Z85), or None
    cdef public str content_type
    cdef public bint signed
    cdef public uint64_t trace_hi
    cdef public uint64_t trace_lo
    cdef public uint64_t span_id
    cdef public object _core          # the core Context the handler runs in (CURRENT)


cdef class EventGlue:
    """The per-event path of one subscription: check, decode, run, end."""

    cdef readonly EventInbox inbox
    cdef readonly str topic
    cdef object queue                 # the subscription's queue group (None: broadcast)
    cdef object handler               # (value, EventContext) -> Any, interceptors applied
    cdef object owner                 # zmicro.events._Subscriber: every path but the fast one
    cdef object resolve               # key -> Principal; None: insecure (no principal)
    cdef bint inline                  # run the handler on the delivering thread
    cdef public bint draining         # run no new handler (the service stops)
    cdef public str blocks_address    # the service's own address when inline handlers
                                      # run on its serving thread (a sync call back to
                                      # it fails fast, as from a call's handler), or None
    cdef str last_ct                  # the content type decoded last,
    cdef object last_decode           # its decoder (None: the body as is)
    cdef uint64_t n[G_COUNTERS]       # by G_* (GLUE_COUNTERS)
    cdef readonly int64_t active      # handlers started (or being started), not finished

    cdef int deliver(self, object d) except -1
    cdef int _deliver(self, object d, InEvent ev) except -1
    cdef EventContext _context(self, object d, InEvent ev)
    cdef int _run(self, object d, InEvent ev, object value, EventContext ctx) except -1
    cdef int _finish(self, object d, InEvent ev, object exc) except -1
