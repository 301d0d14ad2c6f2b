cdef struct Outgoing:
    # One message on its way out as libzmq messages: built and signed once
    # by out_build(), sent by out_send() now or later (a full socket), and
    # always closed by out_close(). Lives on the caller's stack, or in a
    # Parked object while it waits for room.
    zmq_msg_t parts[ZM_FRAME_MAX]     # header frame (+ inline body, + MAC trailer),
                                      # body frames, MAC frame
    int n                             # parts initialised
    size_t largest                    # bytes of the largest part (MAXMSGSIZE is per frame)


cdef struct Incoming:
    # One received message while it is handled; in_close() releases it.
    Received r                        # its frames (socket.pxd)
    zm_header h                       # the header, pointing into r
    zm_frame_view v                   # where the parts are (zm_frame.h)
    int rc                            # zm_frame_parse's result: ZM_OK or why it is malformed


cdef class Parked:
    """An Outgoing kept until the socket has room (AsyncChannel's backlog)."""
    cdef Outgoing o

    @staticmethod
    cdef Parked take(Outgoing *o)


# -- building and sending ------------------------------------------------------

cdef void header_init(zm_header *h, uint16_t kind, uint64_t request_id) noexcept nogil
cdef uint32_t reply_limit_stated(size_t max_frame) noexcept nogil
cdef size_t reply_limit(uint32_t stated, size_t own) noexcept nogil
cdef int out_build(Outgoing *o, zm_header *h, object body, const zm_slice *b,
                   Keyring ring, uint8_t *nonce, const zm_slice *bind) except -1
cdef int out_assemble(Outgoing *o, zm_header *h, const zm_slice *bodies, int nbodies,
                      object owner, bint inline, MacKey key, const zm_slice *bind) except -1
cdef int out_send(Outgoing *o, void *sock, const zm_slice *peer, int flags) except -1
cdef void out_close(Outgoing *o) noexcept nogil

# -- receiving and checking ----------------------------------------------------

cdef int in_parse(Incoming *m, bint routed) noexcept nogil
cdef size_t mac_items(const zm_frame_view *v, const zm_slice *slices,
                      const zm_slice *bind, zm_slice *items) noexcept nogil
cdef int in_verify(Incoming *m, Keyring ring, const zm_slice *bind,
                   const zm_slice *principal) except -1
cdef object in_body(Incoming *m)
cdef void in_close(Incoming *m) noexcept nogil

# -- the Python side (keyring.pyx's seal/open, frame.pyx) ----------------------

cdef list out_frames(Outgoing *o)
cdef list seal_frames(Keyring ring, Header header, bodies, bind, bint inline)
cdef str open_frames(Keyring ring, frames, principal, bind, bint remember)
