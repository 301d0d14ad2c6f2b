# socket.pyx - libzmq I/O on sockets pyzmq created: waiting with the GIL
# released, receiving whole multipart messages, received frames as Python
# objects without a copy, and the references zero-copy sends hand libzmq.
# (Building and sending messages is message.pyx's.)
#
# Uses: native.pyx (ZMQ, zm_graveyard_take), context.pyx (monotonic),
# errors.pyx (raise_errno).
#
# A socket is used by one thread at a time (libzmq sockets are not
# thread-safe); nothing here adds locking.

from libc.errno cimport EINTR
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.stdlib cimport free

cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1
    void *PyLong_AsVoidPtr(object) except? NULL
    int PyBuffer_FillInfo(Py_buffer *view, object obj, void *buf,
                          Py_ssize_t len, int readonly, int flags) except -1

cdef Py_ssize_t _ZERO_COPY_MIN = ZM_ZERO_COPY_MIN
# Messages read per wake-up before other work gets a turn (a server's loop,
# an async channel's reader).
cdef int BATCH = 256


cdef void *socket_handle(object socket) except NULL:
    """The libzmq socket behind a pyzmq Socket (or its `underlying` int)."""
    cdef void *handle
    if type(socket) is int:
        handle = PyLong_AsVoidPtr(socket)
    else:
        if socket.closed:
            raise_errno(ENOTSOCK)
        handle = PyLong_AsVoidPtr(socket.underlying)
    if handle == NULL:
        raise_errno(ENOTSOCK)
    return handle


cdef int poll_until(zmq_pollitem_t *items, int n, double deadline_at) except -1:
    """zmq_poll `items[0..n)`, GIL released, until one has its events (the
    number ready, > 0; see their revents) or the monotonic clock reaches
    `deadline_at` (0; deadline_at 0 waits forever). A signal handler's
    exception (KeyboardInterrupt) ends the wait."""
    cdef long ms
    cdef int rc, i
    while True:
        for i in range(n):
            items[i].revents = 0
        if deadline_at <= 0:
            ms = -1
        else:
            ms = <long>((deadline_at - monotonic()) * 1000.0 + 0.999)
            if ms < 0:
                ms = 0
        with nogil:
            rc = ZMQ.poll(items, n, ms)
        if rc > 0:
            return rc
        if rc == 0:
            if deadline_at > 0 and monotonic() >= deadline_at:
                return 0
            continue  # poll's millisecond rounding woke us early
        rc = ZMQ.errno_()
        if rc != EINTR:
            raise_errno(rc)
        PyErr_CheckSignals()


cdef int wait_until(void *sock, short events, double deadline_at) except -1:
    """Wait, GIL released, until `sock` has `events` (1) or the monotonic
    clock reaches `deadline_at` (0; deadline_at 0 waits forever). A signal
    handler's exception (KeyboardInterrupt) ends the wait."""
    cdef zmq_pollitem_t item
    item.socket = sock
    item.fd = 0
    item.events = events
    return 1 if poll_until(&item, 1, deadline_at) else 0


cdef int wait_socket(void *sock, short events, double timeout) except -1:
    """wait_until() for `timeout` seconds (< 0: forever); WouldBlock when
    it passes."""
    if wait_until(sock, events, 0.0 if timeout < 0 else monotonic() + timeout) == 0:
        raise_errno(EAGAIN)
    return 0


cdef int socket_events(void *sock) except -1:
    """ZMQ_EVENTS: the POLLIN/POLLOUT state, and the only way to re-arm the
    edge-triggered ZMQ_FD after a send or a read."""
    cdef int events = 0
    cdef size_t size = sizeof(int)
    if ZMQ.getsockopt(sock, ZM_OPT_EVENTS, &events, &size) < 0:
        raise_errno(ZMQ.errno_())
    return events


cdef int socket_fd(void *sock) except -1:
    """ZMQ_FD: the file descriptor an event loop watches for this socket."""
    cdef int fd = -1
    cdef size_t size = sizeof(int)
    if ZMQ.getsockopt(sock, ZM_OPT_FD, &fd, &size) < 0:
        raise_errno(ZMQ.errno_())
    return fd


cdef int recv_parts(Received *r, void *sock, int flags=ZM_DONTWAIT) noexcept nogil:
    """Receive every part of the next message into `r` (r.n and r.extra
    start at 0). `flags` apply to the first part: ZM_DONTWAIT (the default)
    returns EAGAIN when nothing is queued, 0 blocks (up to the socket's
    RCVTIMEO: EAGAIN then; EINTR on a signal). Returns 0 or an errno."""
    cdef zmq_msg_t spill
    cdef int rc = 0, more = 1, i
    while more:
        if r.n < ZM_FRAME_MAX + 1:
            ZMQ.msg_init(&r.msgs[r.n])
            r.n += 1
            rc = ZMQ.msg_recv(&r.msgs[r.n - 1], sock, flags if r.n == 1 else ZM_DONTWAIT)
            if rc < 0:
                return ZMQ.errno_()
            more = ZMQ.msg_more(&r.msgs[r.n - 1])
        else:  # read the rest so the next message starts clean
            ZMQ.msg_init(&spill)
            rc = ZMQ.msg_recv(&spill, sock, ZM_DONTWAIT)
            more = rc >= 0 and ZMQ.msg_more(&spill)
            ZMQ.msg_close(&spill)
            if rc < 0:
                return ZMQ.errno_()
            r.extra += 1
    for i in range(r.n):
        r.slices[i].ptr = <const uint8_t *>ZMQ.msg_data(&r.msgs[i])
        r.slices[i].len = ZMQ.msg_size(&r.msgs[i])
    return 0


cdef int set_rcvtimeo(void *sock, int ms) noexcept nogil:
    """ZMQ_RCVTIMEO (ms; -1 forever): how long a blocking receive waits."""
    return ZMQ.setsockopt(sock, ZM_OPT_RCVTIMEO, &ms, sizeof(int))


cdef int recv_until(Received *r, void *sock, double deadline_at) except -1:
    """Block in libzmq, GIL released, for the next message until the
    monotonic `deadline_at` (0: forever). Returns 1 with `r` filled, 0 when
    the deadline passed. Blocking in zmq_msg_recv costs about 10 µs less
    per wake-up than zmq_poll then recv (measured: bench/RESULTS.md)."""
    cdef int err, ms
    while True:
        if deadline_at <= 0:
            ms = -1
        else:
            ms = <int>((deadline_at - monotonic()) * 1000.0 + 0.999)
            if ms <= 0:
                if monotonic() >= deadline_at:
                    return 0
                ms = 1
        r.n = r.extra = 0
        with nogil:
            set_rcvtimeo(sock, ms)
            err = recv_parts(r, sock, 0)
        if err == 0:
            return 1
        received_close(r)
        if err == EAGAIN:
            continue  # RCVTIMEO passed: the loop decides whether it is over
        if err != EINTR:
            raise_errno(err)
        PyErr_CheckSignals()


cdef void received_close(Received *r) noexcept nogil:
    while r.n > 0:
        r.n -= 1
        ZMQ.msg_close(&r.msgs[r.n])


@cython.auto_pickle(False)
cdef class Frame:
    """A received frame exposed as a read-only buffer, without a copy.

    ``memoryview(frame)`` reads it; the bytes live until the Frame (and
    every view of it) is gone.
    """

    def __init__(self):
        raise TypeError("Frame objects are made by the core")

    @staticmethod
    cdef Frame take(zmq_msg_t *src):
        cdef Frame f = Frame.__new__(Frame)
        ZMQ.msg_init(&f.msg)
        ZMQ.msg_move(&f.msg, src)
        return f

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, ZMQ.msg_data(&self.msg),
                          <Py_ssize_t>ZMQ.msg_size(&self.msg), 1, flags)

    def __releasebuffer__(self, Py_buffer *view):
        pass

    def __len__(self):
        return ZMQ.msg_size(&self.msg)

    def __dealloc__(self):
        ZMQ.msg_close(&self.msg)


cdef object body_object(Received *r, int index):
    """Frame `index` of `r` as a Python object: bytes, or a memoryview over
    the frame itself from ZERO_COPY_MIN bytes on (the frame moves out of r)."""
    cdef size_t size = r.slices[index].len
    if <Py_ssize_t>size < _ZERO_COPY_MIN:
        return PyBytes_FromStringAndSize(<const char *>r.slices[index].ptr, <Py_ssize_t>size)
    return memoryview(Frame.take(&r.msgs[index]))


cdef object inline_body_object(Received *r, int index, zm_slice body):
    """An inline body (inside frame `index`) as bytes, or, from ZERO_COPY_MIN
    bytes on, a memoryview over the frame (which moves out of r)."""
    cdef size_t offset
    if <Py_ssize_t>body.len < _ZERO_COPY_MIN:
        return PyBytes_FromStringAndSize(<const char *>body.ptr, <Py_ssize_t>body.len)
    offset = <size_t>(body.ptr - r.slices[index].ptr)
    return memoryview(Frame.take(&r.msgs[index]))[offset:]


cdef void release_sent() noexcept:
    """Drop the references libzmq has finished with (zero-copy sends)."""
    cdef void **items = NULL
    cdef size_t n = zm_graveyard_take(&items), i
    for i in range(n):
        Py_XDECREF(<PyObject *>items[i])
    free(items)


def _release_sent():
    release_sent()
