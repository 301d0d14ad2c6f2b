cdef class Message:
    """One received zmicro message, its frames parsed (zm_frame.h)."""

    cdef readonly object routing_id   # bytes: the peer, when a ROUTER received
    cdef readonly Header header       # the decoded header
    cdef readonly bytes raw_header    # the header frame as received (MAC input)
    cdef readonly list bodies         # body frames, as bytes
    cdef readonly object mac          # the 32-byte MAC frame, or None
    cdef readonly object user_id      # ZAP User-Id of the sender, or None
    cdef readonly bint inline         # the body came inside the header frame
