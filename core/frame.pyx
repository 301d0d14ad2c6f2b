# frame.pyx - zmicro messages (zm_frame.h's layout) as Python objects:
# send_message, recv_message and parse_frames, over socket.pyx.

@cython.auto_pickle(False)
cdef class Message:
    """A received message: routing id, header, bodies and MAC.

    Built by recv_message; not constructible from Python.
    """

    def __cinit__(self):
        self.bodies = []

    def __init__(self):
        raise TypeError("Message objects are made by recv_message()")

    def verify(self, int alg, key):
        """True if the message is signed and its MAC verifies under `key`."""
        if self.mac is None:
            return False
        frames = [self.raw_header] if self.inline else [self.raw_header, *self.bodies]
        return mac_verify(alg, key, frames, self.mac)

    def __repr__(self):
        return (f"Message(routing_id={self.routing_id!r}, header={self.header!r}, "
                f"bodies={len(self.bodies)}, signed={self.mac is not None})")


def send_message(socket, Header header, bodies=(), *, routing_id=None,
                 mac_key=None, int mac_alg=ZM_MAC_HMAC_SHA256,
                 double timeout=-1.0, bint inline_body=False):
    """Send one message: [routing_id] header body* [mac].

    With `mac_key` the header goes out with the SIGNED flag and a MAC frame
    over the header and bodies is appended; without it the flag is cleared.
    `inline_body` sends the one body inside the header frame (the
    BODY_INLINE flag). `timeout` (seconds; < 0 waits forever, 0 never
    blocks) bounds the wait for room under the send high-water mark:
    WouldBlock when it passes.
    """
    cdef void *sock = socket_handle(socket)
    cdef uint8_t hbuf[ZM_WIRE_MAX_HEADER]
    cdef size_t hlen = 0
    cdef unsigned char mac[ZM_MAC_OUT]
    cdef uint32_t flags = header.flags & ~(<uint32_t>(ZM_FLAG_SIGNED | ZM_FLAG_MAC_TRAILER))
    cdef bint signed = mac_key is not None
    cdef Views v          # slot 0: the header, then the bodies
    cdef Py_buffer rview, kview
    cdef zm_slice rid, key
    cdef int rc = 0

    if len(bodies) > ZM_FRAME_MAX - 1 - signed:  # header (+ MAC) count too
        raise_zm(ZM_E_FRAME_COUNT)
    if signed:
        flags |= ZM_FLAG_SIGNED
    flags &= ~(<uint32_t>ZM_FLAG_BODY_INLINE)
    if inline_body:
        if len(bodies) != 1:
            raise ValueError("an inline body is exactly one body")
        return _send_inline_message(sock, header, flags | ZM_FLAG_BODY_INLINE, bodies[0],
                                    routing_id, mac_key, mac_alg, timeout)
    header_write(header, flags, hbuf, sizeof(hbuf), &hlen)

    v.n = 0
    memset(&rview, 0, sizeof(Py_buffer))
    try:
        views_get(&v, bodies, ZM_FRAME_MAX - 1)
        if signed:
            _sign(mac_alg, mac_key, hbuf, hlen, &v, bodies, mac)
        if routing_id is not None:
            view_get(routing_id, &rview, &rid)
        if timeout != 0:
            wait_socket(sock, ZM_POLLOUT, timeout)
        _send_frames(sock, &rid if routing_id is not None else NULL,
                     hbuf, hlen, &v, mac if signed else NULL)
    finally:
        views_release(&v)
        PyBuffer_Release(&rview)
    return None


cdef object _send_inline_message(void *sock, Header header, uint32_t flags, body,
                                 routing_id, mac_key, int mac_alg, double timeout):
    # The low-level API builds the frame as bytes: simple, not the hot path.
    cdef uint8_t hbuf[ZM_WIRE_MAX_HEADER]
    cdef size_t hlen = 0
    header_write(header, flags, hbuf, sizeof(hbuf), &hlen)
    frame = PyBytes_FromStringAndSize(<char *>hbuf, <Py_ssize_t>hlen) + bytes(body)
    frames = [frame]
    if mac_key is not None:
        frames.append(mac_compute(mac_alg, mac_key, [frame]))
    if routing_id is not None:
        frames.insert(0, bytes(routing_id))
    if timeout != 0:
        wait_socket(sock, ZM_POLLOUT, timeout)
    for i, f in enumerate(frames):
        more = ZM_SNDMORE if i + 1 < len(frames) else 0
        if ZMQ.send(sock, PyBytes_AS_STRING(f), <size_t>PyBytes_GET_SIZE(f),
                    more | (ZM_DONTWAIT if i == 0 else 0)) < 0:
            raise_errno(ZMQ.errno_())
    return None


cdef int _sign(int alg, object key, const uint8_t *hbuf, size_t hlen,
               Views *bodies, object body_objs, unsigned char *mac) except -1:
    """MAC of [header, bodies...] into mac[ZM_MAC_OUT]."""
    cdef zm_slice frames[ZM_FRAME_MAX]
    cdef Py_buffer kview
    cdef zm_slice k
    cdef int i, rc = 0
    if python_mac(alg):
        tag = _fallback_module().compute(
            alg, key, [PyBytes_FromStringAndSize(<const char *>hbuf, <Py_ssize_t>hlen),
                       *body_objs])
        memcpy(mac, PyBytes_AS_STRING(tag), ZM_MAC_OUT)
        return 0
    frames[0].ptr = hbuf
    frames[0].len = hlen
    for i in range(bodies.n):
        frames[i + 1] = bodies.slices[i]
    memset(&kview, 0, sizeof(Py_buffer))
    try:
        view_get(key, &kview, &k)
        with nogil:
            rc = zm_mac_compute(&CRYPTO, alg, k.ptr, k.len, frames,
                                <size_t>(bodies.n + 1), mac)
    finally:
        PyBuffer_Release(&kview)
    if rc != ZM_OK:
        raise_zm(rc)
    return 0


cdef int _send_frames(void *sock, const zm_slice *rid, const uint8_t *hbuf,
                      size_t hlen, const Views *bodies,
                      const unsigned char *mac) except -1:
    """[rid] header bodies [mac] as one multipart message. Only the first
    frame can fail for lack of room: libzmq admits or refuses a multipart
    message as a whole, so it goes DONTWAIT and the rest may block."""
    cdef int i, rc = 0, err = 0, nbody = bodies.n
    cdef int last_more = ZM_SNDMORE if mac != NULL else 0
    if rid != NULL:
        rc = ZMQ.send(sock, rid.ptr, rid.len, ZM_SNDMORE | ZM_DONTWAIT)
        if rc < 0:
            raise_errno(ZMQ.errno_())
    rc = ZMQ.send(sock, hbuf, hlen,
                  (ZM_SNDMORE if nbody else last_more) | ZM_DONTWAIT)
    if rc < 0:
        raise_errno(ZMQ.errno_())
    with nogil:
        for i in range(nbody):
            rc = ZMQ.send(sock, bodies.slices[i].ptr, bodies.slices[i].len,
                          ZM_SNDMORE if i + 1 < nbody else last_more)
            if rc < 0:
                break
        if rc >= 0 and mac != NULL:
            rc = ZMQ.send(sock, mac, ZM_MAC_OUT, 0)
        if rc < 0:
            err = ZMQ.errno_()
    if rc < 0:
        raise_errno(err)
    return 0


cdef int received_recv(Received *r, void *sock) except -1:
    """Receive every part of the next message (it is already queued)."""
    cdef int err
    with nogil:
        err = recv_parts(r, sock)
    if err:
        raise_errno(err)
    return 0


cdef inline bytes _frame_bytes(zm_slice s):
    return PyBytes_FromStringAndSize(<const char *>s.ptr, <Py_ssize_t>s.len)


cdef Message _parse(const zm_slice *slices, int n, bint routed):
    """Check the layout of slices[0..n) and copy it into a new Message."""
    cdef zm_header h
    cdef zm_frame_view v
    cdef Message m
    cdef int i
    rc = zm_frame_parse(slices, n, routed, &h, &v)
    if rc != ZM_OK:
        raise_zm(rc)
    m = Message.__new__(Message)
    m.header = Header._from_c(&h)
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
    if len(frames) > ZM_FRAME_MAX + routed:
        raise_zm(ZM_E_FRAME_COUNT)
    v.n = 0
    try:
        views_get(&v, frames, ZM_FRAME_MAX + 1)
        return _parse(v.slices, v.n, routed)
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
    cdef Received r
    cdef Message m
    cdef const char *uid

    wait_socket(sock, ZM_POLLIN, timeout)
    r.n = r.extra = 0
    try:
        received_recv(&r, sock)
        if r.extra:
            raise_zm(ZM_E_FRAME_COUNT)
        m = _parse(r.slices, r.n, routed)
        uid = ZMQ.msg_gets(&r.msgs[routed], b"User-Id")
        if uid != NULL:
            m.user_id = (<bytes>uid).decode("utf-8", "replace")
        return m
    finally:
        received_close(&r)
