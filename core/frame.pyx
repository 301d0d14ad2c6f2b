# frame.pyx - zmicro messages as Python objects, for tools, tests and
# clients in Python that speak the protocol without zmicro's call path:
# send_message, recv_message, parse_frames.
#
# Uses: message.pyx (out_assemble, out_send, in_parse: the one send and
# receive path), socket.pyx (socket_handle, wait_socket, recv_parts),
# wire.pyx (Header), mac.pyx (mac_verify), buffers.pyx (Views).

@cython.auto_pickle(False)
cdef class Message:
    """A received message: routing id, header, bodies and MAC.

    Built by recv_message; not constructible from Python.
    """

    def __cinit__(self):
        self.bodies = []

    def __init__(self):
        raise TypeError("Message objects are made by recv_message()")

    def verify(self, int alg, key, bind=b""):
        """True if the message is signed and its MAC, bound to `bind` (an
        answer: its request's nonce), verifies under `key`."""
        if self.mac is None:
            return False
        frames = [self.raw_header] if self.inline else [self.raw_header, *self.bodies]
        return mac_verify(alg, key, [bind, *frames], self.mac)

    def __repr__(self):
        return (f"Message(routing_id={self.routing_id!r}, header={self.header!r}, "
                f"bodies={len(self.bodies)}, signed={self.mac is not None})")


def send_message(socket, Header header, bodies=(), *, routing_id=None,
                 mac_key=None, int mac_alg=ZM_MAC_HMAC_SHA256, bind=b"",
                 double timeout=-1.0, bint inline_body=False):
    """Send one message: [routing_id] header body* [mac].

    With `mac_key` the message is signed with the header's key id,
    timestamp and nonce as given: the SIGNED flag is set and the MAC over
    `bind` (an answer's binding: its request's nonce) and the frames ends
    the message, as a trailer when it is one frame (MAC_TRAILER), else as a
    last frame. Without it the flags are cleared. `inline_body` sends the
    one body inside the header frame (BODY_INLINE). `timeout` (seconds;
    < 0 waits forever, 0 never blocks) bounds the wait for room under the
    send high-water mark: WouldBlock when it passes.
    """
    cdef void *sock = socket_handle(socket)
    cdef zm_header h
    cdef Outgoing o
    cdef Views v
    cdef Py_buffer rview, bview
    cdef zm_slice rid, b
    cdef MacKey key = None
    cdef int err
    if len(bodies) > ZM_FRAME_MAX - 1:
        raise_zm(ZM_E_FRAME_COUNT)  # (out_assemble counts the MAC frame too)
    if mac_key is not None:
        key = MacKey(header.key_id, mac_alg, mac_key)
    header._to_c(&h)
    v.n = 0
    o.n = 0
    memset(&rview, 0, sizeof(Py_buffer))
    view_get(bind, &bview, &b)
    try:
        views_get(&v, bodies, ZM_FRAME_MAX - 1)
        out_assemble(&o, &h, v.slices, v.n, None, inline_body, key, &b)
        if routing_id is not None:
            view_get(routing_id, &rview, &rid)
        if timeout != 0:
            wait_socket(sock, ZM_POLLOUT, timeout)
        err = out_send(&o, sock, &rid if routing_id is not None else NULL, ZM_DONTWAIT)
        if err:
            raise_errno(err)
    finally:
        out_close(&o)
        views_release(&v)
        PyBuffer_Release(&rview)
        PyBuffer_Release(&bview)
    return None


cdef inline bytes _frame_bytes(zm_slice s):
    return PyBytes_FromStringAndSize(<const char *>s.ptr, <Py_ssize_t>s.len)


cdef Message _message(const zm_header *h, const zm_frame_view *v, const zm_slice *slices):
    """A new Message of a message parsed into *h, *v."""
    cdef Message m = Message.__new__(Message)
    cdef int i
    m.header = Header._from_c(h)
    # As the MAC covers it: without a MAC trailer.
    m.raw_header = PyBytes_FromStringAndSize(<const char *>slices[v.header].ptr,
                                             <Py_ssize_t>v.header_len)
    if v.routing >= 0:
        m.routing_id = _frame_bytes(slices[v.routing])
    m.inline = bool(v.inline_body)
    if v.inline_body:
        m.bodies.append(_frame_bytes(v.body))
    for i in range(v.body_first, v.body_first + v.body_count):
        m.bodies.append(_frame_bytes(slices[i]))
    if v.tag != NULL:
        m.mac = PyBytes_FromStringAndSize(<const char *>v.tag, ZM_MAC_SIZE)
    return m


def parse_frames(frames, *, bint routed=False):
    """Parse a message already split into frames (bytes-like objects), as
    recv_message does with what it receives; raises WireError."""
    cdef Views v
    cdef zm_header h
    cdef zm_frame_view fv
    cdef int rc
    if len(frames) > ZM_FRAME_MAX + routed:
        raise_zm(ZM_E_FRAME_COUNT)
    v.n = 0
    try:
        views_get(&v, frames, ZM_FRAME_MAX + 1)
        rc = zm_frame_parse(v.slices, v.n, routed, &h, &fv)
        if rc != ZM_OK:
            raise_zm(rc)
        return _message(&h, &fv, v.slices)
    finally:
        views_release(&v)


def recv_message(socket, *, bint routed=False, double timeout=-1.0):
    """Receive and parse one message: [routing_id] header body* [mac].

    `routed`: the socket is a ROUTER, so the first frame is the peer's
    routing id. `timeout` in seconds (< 0 waits forever, 0 never blocks);
    WouldBlock when it passes. A message that breaks the layout or carries
    a bad header raises WireError and is consumed whole, so the next call
    reads the next message. The MAC, if any, is returned, not checked: call
    Message.verify().
    """
    cdef void *sock = socket_handle(socket)
    cdef Incoming m
    cdef Message msg
    cdef const char *uid
    cdef int err
    wait_socket(sock, ZM_POLLIN, timeout)
    m.r.n = m.r.extra = 0
    try:
        with nogil:
            err = recv_parts(&m.r, sock)
        if err:
            raise_errno(err)
        if in_parse(&m, routed) != ZM_OK:
            raise_zm(m.rc)
        msg = _message(&m.h, &m.v, m.r.slices)
        uid = ZMQ.msg_gets(&m.r.msgs[m.v.header], b"User-Id")
        if uid != NULL:
            msg.user_id = (<bytes>uid).decode("utf-8", "replace")
        return msg
    finally:
        in_close(&m)
