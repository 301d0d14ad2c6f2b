# message.pyx - the message layer: the one way the core builds, signs,
# sends, receives and checks a zmicro message (docs/protocol.md §2, §7).
#
# Uses: socket.pyx (Received, received_close, body_object,
# inline_body_object, release_sent), keyring.pyx (Keyring, MacKey, MAC
# failures), wire.pyx (Header), buffers.pyx (Views), errors.pyx (raise_zm,
# raise_errno), native.pyx (ZMQ, zm_graveyard_free).
#
# Every message kind - request, reply, error, cancel, ping, pong, and the
# stream and event kinds to come - is a header, maybe a body, maybe a MAC;
# the client, the async client, the server and the Python API all go
# through here:
#
#   out_build()   writes the header (flags set here), puts a short body in
#                 the header frame (BODY_INLINE) or a long one in a frame of
#                 its own (no copy for bytes), signs: the MAC is computed
#                 once, as a trailer of a one-frame message or a last frame;
#   out_send()    hands the parts to libzmq, or says EAGAIN and keeps them
#                 intact, so a full socket never costs a second build or
#                 MAC (Parked keeps them for later);
#   in_parse()    checks a received message's layout and reads its header;
#   in_verify()   checks its MAC against a binding (a request's nonce, for
#                 an answer), its window and, for a request, its nonce;
#   in_body()     hands over its body (no copy for long ones).
#
# The binding is the first item of the MAC input (zm_mac.h): empty for a
# request, a cancel or a ping; the request's nonce for its reply, error or
# pong, so that an answer is accepted by the one call that asked for it.

from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF

cdef zm_slice _NOTHING  # an empty binding (zero-initialised)

#: Python's view of the limits (src/zm_limits.h).
INLINE_MAX = ZM_INLINE_MAX
ZERO_COPY_MIN = ZM_ZERO_COPY_MIN
NONCE_SIZE = ZM_NONCE_SIZE
DETAIL_MAX = ZM_DETAIL_MAX
MESSAGE_MAX_DEFAULT = ZM_MESSAGE_MAX_DEFAULT


cdef void header_init(zm_header *h, uint16_t kind, uint64_t request_id) noexcept nogil:
    """A header of this protocol version, `kind`, `request_id`, nothing else
    (metadata entries are not cleared: n_metadata is)."""
    memset(h, 0, <size_t>(<char *>&h.metadata - <char *>h))
    h.version = ZM_WIRE_VERSION
    h.kind = kind
    h.request_id = request_id


cdef uint32_t reply_limit_stated(size_t max_frame) noexcept nogil:
    """A request's maxReplySize for a caller that accepts frames of up to
    `max_frame` bytes (0: any): 0 (not stated) for the default, which a
    server presumes; beyond 32 bits, the largest it can say."""
    cdef uint32_t most = <uint32_t>-1
    if max_frame == ZM_MESSAGE_MAX_DEFAULT:
        return 0
    if max_frame == 0 or max_frame > most:
        return most
    return <uint32_t>max_frame


cdef size_t reply_limit(uint32_t stated, size_t own) noexcept nogil:
    """The largest frame an answer to a request may have (0: no limit): the
    smaller of the caller's maxReplySize (not stated: the default) and the
    server's `own` limit (0: none)."""
    cdef size_t caller = stated if stated else ZM_MESSAGE_MAX_DEFAULT
    return caller if own == 0 or caller < own else own


# -- building ------------------------------------------------------------------


cdef int out_build(Outgoing *o, zm_header *h, object body, const zm_slice *b,
                   Keyring ring, uint8_t *nonce, const zm_slice *bind) except -1:
    """Build the message of header *h and body `b` (the bytes of `body`;
    NULL: none) into *o. A body shorter than ZM_INLINE_MAX rides in the
    header frame. With `ring`, the header is stamped (key id, timestamp, a
    fresh nonce written to nonce[0..16)) and signed over `bind` (NULL:
    empty) and the frames. out_close(o) must follow, even on error."""
    cdef MacKey key = None
    o.n = 0
    if ring is not None:
        key = ring.stamp(h, nonce)
    if b == NULL:
        return out_assemble(o, h, NULL, 0, None, False, key, bind)
    return out_assemble(o, h, b, 1, body, b.len < ZM_INLINE_MAX, key, bind)


cdef int _out_part(Outgoing *o, const zm_slice *b, object owner) except -1:
    """One body frame holding `b`. A bytes `owner` of ZM_ZERO_COPY_MIN
    bytes or more is handed to libzmq without a copy: it keeps a reference
    until it is done (released later by release_sent)."""
    cdef zmq_msg_t *part = &o.parts[o.n]
    if b.len > o.largest:
        o.largest = b.len
    if type(owner) is bytes and b.len >= ZM_ZERO_COPY_MIN:
        Py_INCREF(owner)  # bytes are immutable: their buffer lives as long as they do
        if ZMQ.msg_init_data(part, <void *>b.ptr, b.len, zm_graveyard_free,
                             <void *>owner) < 0:
            Py_DECREF(owner)
            raise_errno(ZMQ.errno_())
        o.n += 1
        return 0
    if ZMQ.msg_init_size(part, b.len) < 0:
        raise_errno(ZMQ.errno_())
    o.n += 1
    if b.len >= ZM_ZERO_COPY_MIN:  # a copy this large costs more than a GIL round trip
        with nogil:
            memcpy(ZMQ.msg_data(part), b.ptr, b.len)
    elif b.len:
        memcpy(ZMQ.msg_data(part), b.ptr, b.len)
    return 0


cdef int out_assemble(Outgoing *o, zm_header *h, const zm_slice *bodies, int nbodies,
                      object owner, bint inline, MacKey key, const zm_slice *bind) except -1:
    """Build *o from header *h (its key id, timestamp and nonce already set
    when `key` signs) and bodies[0..nbodies): with `inline`, the one body
    in the header frame; else one frame each (`owner`: the object behind a
    lone body, for zero-copy). Sets the flags SIGNED, MAC_TRAILER and
    BODY_INLINE. Signed one-frame messages carry the MAC as a trailer
    (CurveZMQ pays per frame), others as a last frame."""
    cdef uint8_t hbuf[ZM_WIRE_MAX_HEADER]
    cdef zm_slice items[ZM_FRAME_MAX + 1]
    cdef size_t hlen = 0, first
    cdef uint8_t *data
    cdef bint trailer = key is not None and (inline or nbodies == 0)
    cdef int i, rc
    o.n = 0
    o.largest = 0
    if inline and nbodies != 1:
        raise ValueError("an inline body is exactly one body")
    if 1 + (0 if inline else nbodies) + (key is not None and not trailer) > ZM_FRAME_MAX:
        raise_zm(ZM_E_FRAME_COUNT)
    h.flags &= ~(<uint32_t>(ZM_FLAG_SIGNED | ZM_FLAG_MAC_TRAILER | ZM_FLAG_BODY_INLINE))
    if inline:
        h.flags |= ZM_FLAG_BODY_INLINE
    if key is not None:
        h.flags |= ZM_FLAG_SIGNED | (ZM_FLAG_MAC_TRAILER if trailer else 0)
    # Every text comes from a Python str (valid UTF-8; bytes metadata
    # values are Data, never checked): only sizes and NULs need checking.
    rc = zm_wire_write_ex(h, hbuf, ZM_WIRE_MAX_HEADER, &hlen, ZM_WIRE_TRUSTED_UTF8)
    if rc != ZM_OK:
        raise_zm(rc)
    first = hlen + (bodies[0].len if inline else 0)
    o.largest = first + (ZM_MAC_SIZE if trailer else 0)
    if ZMQ.msg_init_size(&o.parts[0], o.largest) < 0:
        raise_errno(ZMQ.errno_())
    o.n = 1
    data = <uint8_t *>ZMQ.msg_data(&o.parts[0])
    memcpy(data, hbuf, hlen)
    if inline and bodies[0].len:
        memcpy(data + hlen, bodies[0].ptr, bodies[0].len)
    if not inline:
        for i in range(nbodies):
            _out_part(o, &bodies[i], owner if nbodies == 1 else None)
    if key is not None:
        items[0] = bind[0] if bind != NULL else _NOTHING
        items[1].ptr = data
        items[1].len = first
        for i in range(1, o.n):
            items[i + 1].ptr = <const uint8_t *>ZMQ.msg_data(&o.parts[i])
            items[i + 1].len = ZMQ.msg_size(&o.parts[i])
        if trailer:
            key.mac(items, 2, data + first)
        else:
            if ZMQ.msg_init_size(&o.parts[o.n], ZM_MAC_SIZE) < 0:
                raise_errno(ZMQ.errno_())
            o.n += 1
            key.mac(items, <size_t>o.n, <uint8_t *>ZMQ.msg_data(&o.parts[o.n - 1]))
    return 0


# -- sending -------------------------------------------------------------------


cdef int out_send(Outgoing *o, void *sock, const zm_slice *peer, int flags) except -1:
    """Send *o: 0 once libzmq has it. `peer` (a ROUTER's routing id, or
    NULL) goes first, with DONTWAIT: a peer gone or not reading returns
    EHOSTUNREACH or EAGAIN (nothing sent). Without a peer, `flags` apply to
    the first part: with ZM_DONTWAIT and no room, EAGAIN (nothing sent, *o
    intact for a later try). libzmq takes a multipart message whole once it
    took its first part, so later parts never wait."""
    cdef int i, err, more
    if peer != NULL:
        if ZMQ.send(sock, peer.ptr, peer.len, ZM_SNDMORE | ZM_DONTWAIT) < 0:
            err = ZMQ.errno_()
            if err == EHOSTUNREACH or err == EAGAIN:
                return err
            raise_errno(err)
        flags = 0
    for i in range(o.n):
        more = ZM_SNDMORE if i + 1 < o.n else 0
        if ZMQ.msg_send(&o.parts[i], sock, more | (flags if i == 0 else 0)) < 0:
            err = ZMQ.errno_()
            if i == 0 and err == EAGAIN and flags & ZM_DONTWAIT:
                return EAGAIN
            raise_errno(err)
    return 0


cdef void out_close(Outgoing *o) noexcept nogil:
    """Release the parts libzmq did not take (a sent part is empty)."""
    while o.n > 0:
        o.n -= 1
        ZMQ.msg_close(&o.parts[o.n])


@cython.auto_pickle(False)
cdef class Parked:
    """A built message waiting for room on its socket."""

    def __init__(self):
        raise TypeError("Parked objects are made by the core")

    @staticmethod
    cdef Parked take(Outgoing *o):
        """Move *o's parts into a new Parked (*o is left empty)."""
        cdef Parked p = Parked.__new__(Parked)
        cdef int i
        for i in range(o.n):
            ZMQ.msg_init(&p.o.parts[i])
            ZMQ.msg_move(&p.o.parts[i], &o.parts[i])
        p.o.n = o.n
        p.o.largest = o.largest
        return p

    def __dealloc__(self):
        out_close(&self.o)


# -- receiving and checking ----------------------------------------------------


cdef int in_parse(Incoming *m, bint routed) noexcept nogil:
    """Check the layout of the received m.r and read its header: m.rc is
    ZM_OK, or the zm_err code that makes it malformed (on ZM_E_VERSION and
    ZM_E_KIND the header was read anyway: zm_frame.h)."""
    if m.r.extra:
        m.rc = ZM_E_FRAME_COUNT
    else:
        m.rc = zm_frame_parse(m.r.slices, m.r.n, routed, &m.h, &m.v)
    return m.rc


cdef size_t mac_items(const zm_frame_view *v, const zm_slice *slices,
                      const zm_slice *bind, zm_slice *items) noexcept nogil:
    """The MAC input of a parsed message into items[0..ZM_FRAME_MAX + 1):
    the binding (NULL: empty), the header frame without a MAC trailer (an
    inline body included), the body frames. Returns how many items."""
    cdef int i
    items[0] = bind[0] if bind != NULL else _NOTHING
    items[1] = slices[v.header]
    items[1].len = v.header_len
    for i in range(v.body_count):
        items[2 + i] = slices[v.body_first + i]
    return <size_t>(2 + v.body_count)


cdef int _verify(Keyring ring, const zm_header *h, const zm_frame_view *v,
                 const zm_slice *slices, const zm_slice *bind,
                 const zm_slice *principal) except -1:
    """ring.check() of a parsed message (its MAC input: mac_items())."""
    cdef zm_slice items[ZM_FRAME_MAX + 1]
    cdef size_t n = mac_items(v, slices, bind, items)
    return ring.check(h, items, n, v.tag, principal)


cdef int in_verify(Incoming *m, Keyring ring, const zm_slice *bind,
                   const zm_slice *principal) except -1:
    """MAC_OK, or the MacFailure that refuses *m (keyring.pyx): bound to
    `bind`; its nonce remembered under `principal` (NULL: not looked at)."""
    return _verify(ring, &m.h, &m.v, m.r.slices, bind, principal)


cdef object in_body(Incoming *m):
    """*m's body: bytes, or from ZM_ZERO_COPY_MIN bytes on a memoryview
    over the received frame (moved out of m.r); b"" when it has none."""
    if m.v.inline_body:
        return inline_body_object(&m.r, m.v.header, m.v.body)
    return body_object(&m.r, m.v.body_first) if m.v.body_count else b""


cdef void in_close(Incoming *m) noexcept nogil:
    received_close(&m.r)


# -- the Python side -----------------------------------------------------------


cdef list out_frames(Outgoing *o):
    """*o's parts as bytes objects (copies)."""
    cdef int i
    return [PyBytes_FromStringAndSize(<const char *>ZMQ.msg_data(&o.parts[i]),
                                      <Py_ssize_t>ZMQ.msg_size(&o.parts[i]))
            for i in range(o.n)]


cdef list seal_frames(Keyring ring, Header header, bodies, bind, bint inline):
    cdef zm_header h
    cdef uint8_t nonce[ZM_NONCE_SIZE]
    cdef Outgoing o
    cdef Views v
    cdef Py_buffer bview
    cdef zm_slice b
    cdef MacKey key
    if len(bodies) > ZM_FRAME_MAX - 1:
        raise_zm(ZM_E_FRAME_COUNT)  # (out_assemble counts the MAC frame too)
    header._to_c(&h)
    v.n = 0
    o.n = 0
    view_get(bind, &bview, &b)
    try:
        views_get(&v, bodies, ZM_FRAME_MAX - 1)
        key = ring.stamp(&h, nonce)
        out_assemble(&o, &h, v.slices, v.n, None, inline, key, &b)
        frames = out_frames(&o)
    finally:
        out_close(&o)
        views_release(&v)
        PyBuffer_Release(&bview)
    header.flags = h.flags
    header.key_id = h.key_id
    header.timestamp_us = h.timestamp_us
    header.nonce = PyBytes_FromStringAndSize(<char *>nonce, ZM_NONCE_SIZE)
    return frames


cdef str open_frames(Keyring ring, frames, principal, bind, bint remember):
    cdef Views v
    cdef zm_header h
    cdef zm_frame_view fv
    cdef Py_buffer bview
    cdef zm_slice b
    cdef int rc
    cdef zm_slice who
    cdef bytes p = bytes(principal)
    if len(frames) > ZM_FRAME_MAX:
        raise_zm(ZM_E_FRAME_COUNT)
    v.n = 0
    view_get(bind, &bview, &b)
    try:
        views_get(&v, frames, ZM_FRAME_MAX)
        rc = zm_frame_parse(v.slices, v.n, 0, &h, &fv)
        if rc != ZM_OK:
            raise_zm(rc)
        who.ptr = <const uint8_t *>PyBytes_AS_STRING(p)
        who.len = <size_t>PyBytes_GET_SIZE(p)
        rc = _verify(ring, &h, &fv, v.slices, &b, &who if remember else NULL)
    finally:
        views_release(&v)
        PyBuffer_Release(&bview)
    return MAC_FAILURE_NAMES[rc]
