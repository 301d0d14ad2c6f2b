cdef class Context:
    """What a handler knows about the request it serves (see context.pyx)."""

    cdef readonly str service          # service the request was sent to
    cdef readonly str endpoint         # endpoint called
    cdef readonly uint64_t request_id  # the caller's id for this request
    cdef readonly bytes peer           # routing id of the caller's socket
    cdef readonly str content_type     # codec of request and reply
    cdef readonly str user_id          # the caller's Curve public key (ZAP
                                       # User-Id, Z85), None in insecure mode
    cdef object _principal             # zmicro.auth.Principal once resolved
    cdef object _resolve               # user_id -> Principal, or None
    cdef double deadline_at            # CLOCK_MONOTONIC seconds; 0 = none
    cdef object _metadata              # dict[str, bytes], or None when empty
    cdef bint _cancelled               # the caller cancelled or gave up
    cdef object _task                  # asyncio Task of an async handler
    cdef object _ctype                 # the request's CodecEntry (encoder)
    cdef readonly str _blocks_address  # the service's own address when this
                                       # handler holds its thread (inline, async)
    cdef readonly uint64_t trace_hi    # W3C trace id, high half
    cdef readonly uint64_t trace_lo    # W3C trace id, low half
    cdef readonly uint64_t span_id     # the caller's span id
    cdef uint8_t nonce[ZM_NONCE_SIZE]  # the request's nonce: its answer's binding
    cdef bint signed                   # the request was signed (secure mode)
    cdef size_t reply_limit            # largest frame its answer may have (0: any)

    cdef void _cancel(self)


cdef double monotonic() noexcept nogil
