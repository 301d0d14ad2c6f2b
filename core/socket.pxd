cdef struct Received:
    # Frames of one message while it is handled; received_close() closes them.
    zmq_msg_t msgs[ZM_FRAME_MAX + 1]  # routing id + ZM_FRAME_MAX frames
    zm_slice slices[ZM_FRAME_MAX + 1]  # their bytes
    int n                              # messages initialised
    int extra                          # frames beyond capacity, dropped


cdef class Frame:
    """A received frame kept as libzmq received it: a read-only buffer
    over its bytes, no copy (large octet-stream bodies)."""
    cdef zmq_msg_t msg                 # owns the bytes until dealloc

    @staticmethod
    cdef Frame take(zmq_msg_t *src)


cdef void *socket_handle(object socket) except NULL
cdef int wait_socket(void *sock, short events, double timeout) except -1
cdef int wait_until(void *sock, short events, double deadline_at) except -1
cdef int poll_until(zmq_pollitem_t *items, int n, double deadline_at) except -1
cdef int socket_events(void *sock) except -1
cdef int socket_fd(void *sock) except -1
cdef int recv_parts(Received *r, void *sock, int flags=*) noexcept nogil
cdef int set_rcvtimeo(void *sock, int ms) noexcept nogil
cdef int recv_until(Received *r, void *sock, double deadline_at) except -1
cdef void received_close(Received *r) noexcept nogil
cdef object body_object(Received *r, int index)
cdef object inline_body_object(Received *r, int index, zm_slice body)
cdef void release_sent() noexcept
