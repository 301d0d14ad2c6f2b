cdef class Header:
    """The zmicro wire header (wire.capnp `Header`), as Python values."""

    cdef public uint16_t version       # protocol version (ZM_WIRE_VERSION)
    cdef public uint16_t kind          # Kind: request, reply, error, ...
    cdef public uint32_t flags         # Flags: SIGNED
    cdef public uint64_t request_id    # caller-chosen, echoed in answers
    cdef public uint64_t deadline_us   # remaining budget, µs; 0 = none
    cdef public uint16_t status        # gRPC canonical status code
    cdef public uint32_t key_id        # MAC key id
    cdef public uint64_t timestamp_us  # sender clock, µs since the epoch
    cdef uint64_t trace_hi             # W3C trace id, high half (trace_id)
    cdef uint64_t trace_lo             # W3C trace id, low half (trace_id)
    cdef public uint64_t span_id       # W3C parent span id
    cdef public str content_type       # codec of the body frames
    cdef public str service            # target service
    cdef public str endpoint           # target endpoint
    cdef public dict metadata          # str -> bytes; None means empty
    cdef public bytes nonce            # per-message random bytes
    cdef public str principal          # caller identity from a trusted hop
    cdef public str detail             # error detail
    cdef public uint32_t max_reply_size  # requests: largest reply frame the
                                       # caller accepts; 0 = not stated

    @staticmethod
    cdef Header _from_c(const zm_header *h)
    cdef int _to_c(self, zm_header *h) except -1


cdef int fill_metadata(dict metadata, zm_header *h) except -1
