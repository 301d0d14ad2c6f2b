# keyring.pyx - the MAC end to end (docs/protocol.md, section 7): the keys
# of one service by id, signing (key id, timestamp, nonce, MAC frame) and
# checking in the issue's order:
#
#     sizes -> key id -> MAC (constant time) -> timestamp window -> nonce
#
# The nonce cache is partitioned by principal (the caller's Curve key on a
# server, the node's address on a client), inserted into only after the MAC
# passed, and refuses a full partition rather than evicting (zm_replay.h).
# Everything here runs with the GIL held: it is what serialises the caches
# between a client's threads. MACs are computed in C (src/zm_mac.c) but for
# BLAKE3, which only the `blake3` package computes.

from posix.time cimport CLOCK_REALTIME

MAC_BLAKE3 = 3
cdef int ALG_BLAKE3 = 3

MAC_FAILURE_NAMES = ("ok", "unsigned", "unknown_key", "bad_mac", "stale", "replay",
                     "replay_full")

cdef object _blake3 = None

# Nonces: 16 bytes each from the OS CSPRNG (libsodium's randombytes_buf, or
# os.urandom), drawn 4 KiB at a time: one getrandom() call costs ~0.5 µs
# whatever its size, per message that was most of what signing cost. Used
# bytes are wiped; a forked child starts with an empty pool (a copy of the
# parent's would repeat its nonces). The GIL serialises access.
cdef enum:
    NONCE_POOL = 4096
cdef uint8_t _nonce_pool[NONCE_POOL]
cdef size_t _nonce_pos = NONCE_POOL


cdef int next_nonce(uint8_t *out) except -1:
    global _nonce_pos
    if _nonce_pos + 16 > NONCE_POOL:
        if RANDOMBYTES != NULL:
            RANDOMBYTES(_nonce_pool, NONCE_POOL)
        else:
            memcpy(_nonce_pool, PyBytes_AS_STRING(_os.urandom(NONCE_POOL)), NONCE_POOL)
        _nonce_pos = 0
    memcpy(out, &_nonce_pool[_nonce_pos], 16)
    memset(&_nonce_pool[_nonce_pos], 0, 16)
    _nonce_pos += 16
    return 0


def _forget_nonces():
    global _nonce_pos
    memset(_nonce_pool, 0, NONCE_POOL)
    _nonce_pos = NONCE_POOL


_os.register_at_fork(after_in_child=_forget_nonces)


def _blake3_compute(key, frames):
    """BLAKE3 keyed with `key` (32 bytes) over the framed input."""
    global _blake3
    if _blake3 is None:
        import blake3
        _blake3 = blake3.blake3
    key = bytes(key)
    if len(key) != 32:
        raise_zm(ZM_E_MAC_KEY)
    h = _blake3(key=key)
    h.update(b"zmicro-mac-v1")
    h.update(len(frames).to_bytes(4, "little"))
    for frame in frames:
        view = memoryview(frame).cast("B")
        h.update(len(view).to_bytes(8, "little"))
        h.update(view)
    return h.digest(32)


@cython.auto_pickle(False)
cdef class MacKey:
    """A MAC key ready to use: MacKey(id, alg, secret). Its secret is not
    readable back and never shown."""

    def __init__(self, uint32_t id, int alg, secret):
        cdef Py_buffer view
        cdef zm_slice s
        cdef int rc
        secret = bytes(secret)
        self.id = id
        self.alg = alg
        if alg == ALG_BLAKE3:
            if len(secret) != 32:
                raise ValueError("BLAKE3 MAC keys are 32 bytes")
            self.secret = secret
            return
        if alg != ZM_MAC_HMAC_SHA256 and alg != ZM_MAC_BLAKE2B:
            raise_zm(ZM_E_MAC_ALG)
        if not ZM_MAC_KEY_MIN <= len(secret) <= ZM_MAC_KEY_MAX:
            raise_zm(ZM_E_MAC_KEY)
        self.in_c = c_mac(alg)
        if not self.in_c:
            self.secret = secret
            return
        view_get(secret, &view, &s)
        rc = zm_mac_key_init(&CRYPTO, &self.k, id, alg, s.ptr, s.len)
        if rc != ZM_OK:
            raise_zm(rc)

    def __repr__(self):
        return f"<MacKey id={self.id} alg={self.alg}>"

    def __dealloc__(self):
        memset(&self.k, 0, sizeof(zm_mac_key))


@cython.auto_pickle(False)
cdef class ReplayPartition:
    def __cinit__(self, size_t max_entries):
        zm_replay_init(&self.r, max_entries)

    def __dealloc__(self):
        zm_replay_free(&self.r)


cdef inline bint _same_text(bytes b, const char *p, size_t n) noexcept:
    return (<size_t>PyBytes_GET_SIZE(b) == n
            and memcmp(PyBytes_AS_STRING(b), p, n) == 0)


@cython.auto_pickle(False)
cdef class Keyring:
    """The MAC keys of one service and what checking them needs.

    ``Keyring(keys, current, window=30.0, replay_max=..., clock=None)``:
    `keys` are MacKey objects (distinct ids), `current` the id that signs.
    Every key is accepted: that is what lets keys rotate without downtime.
    `window`: seconds a message's timestamp may differ from our clock.
    `replay_max`: nonces remembered per principal - at least the rate one
    principal may send at times the window (2 × 30 s × 25,000/s by
    default); a partition that is full refuses its principal, nobody else.
    `clock`: a callable returning Unix seconds (tests); default the system's
    real-time clock.
    """

    def __init__(self, keys, uint32_t current, *, double window=30.0,
                 size_t replay_max=1_500_000, size_t max_partitions=65536, clock=None):
        if window <= 0:
            raise ValueError("window must be positive")
        if replay_max < 1 or max_partitions < 1:
            raise ValueError("replay_max and max_partitions must be positive")
        self.window = window
        self.window_us = <int64_t>(window * 1e6)
        self.replay_max = replay_max
        self.max_partitions = max_partitions
        self.partitions = {}
        self.clock = clock
        self.update(keys, current)

    def update(self, keys, uint32_t current):
        """Replace the keys (a rotation step); the nonce caches stay."""
        by_id = {}
        for key in keys:
            if not isinstance(key, MacKey):
                raise TypeError("keys are MacKey objects")
            if (<MacKey>key).id in by_id:
                raise ValueError(f"two keys with id {(<MacKey>key).id}")
            by_id[(<MacKey>key).id] = key
        if current not in by_id:
            raise ValueError(f"the current key id {current} is not among the keys")
        self.keys = by_id
        self.current = by_id[current]

    @property
    def current_id(self):
        return self.current.id

    @property
    def key_ids(self):
        return sorted(self.keys)

    # -- the core's side ---------------------------------------------------

    cdef int64_t now_us(self) except? -1:
        cdef timespec ts
        if self.clock is not None:
            return <int64_t>(self.clock() * 1e6)
        clock_gettime(CLOCK_REALTIME, &ts)
        return <int64_t>ts.tv_sec * 1000000 + ts.tv_nsec // 1000

    cdef MacKey sign_header(self, zm_header *h, uint8_t *nonce, bint trailer):
        """Set *h's key id, timestamp, nonce (written to nonce[0..16), which
        must outlive *h) and SIGNED flag, before the header is written;
        `trailer`: the MAC will end the header frame (MAC_TRAILER; the
        message must be that one frame). Returns the key to compute the MAC
        with (a rotation may change `current` meanwhile)."""
        cdef MacKey key = self.current
        h.flags |= ZM_FLAG_SIGNED
        if trailer:
            h.flags |= ZM_FLAG_MAC_TRAILER
        else:
            h.flags &= ~(<uint32_t>ZM_FLAG_MAC_TRAILER)
        h.key_id = key.id
        h.timestamp_us = <uint64_t>self.now_us()
        next_nonce(nonce)
        h.nonce.ptr = nonce
        h.nonce.len = 16
        self.n_signed += 1
        return key

    cdef int mac_frames(self, MacKey key, const zm_slice *frames, size_t n,
                        uint8_t *out) except -1:
        """The MAC of frames[0..n) under `key` into out[ZM_MAC_OUT]."""
        cdef int rc
        cdef size_t i, total = 0
        if key.in_c:
            for i in range(n):
                total += frames[i].len
            if total < 65536:  # less than a GIL round trip costs
                rc = zm_mac_sign(&CRYPTO, &key.k, frames, n, out)
            else:
                with nogil:
                    rc = zm_mac_sign(&CRYPTO, &key.k, frames, n, out)
            if rc != ZM_OK:
                raise_zm(rc)
            return 0
        objs = [PyBytes_FromStringAndSize(<const char *>frames[i].ptr, <Py_ssize_t>frames[i].len)
                for i in range(n)]
        if key.alg == ALG_BLAKE3:
            tag = _blake3_compute(key.secret, objs)
        else:
            tag = _fallback_module().compute(key.alg, key.secret, objs)
        memcpy(out, PyBytes_AS_STRING(tag), ZM_MAC_OUT)
        return 0

    cdef int check(self, const zm_header *h, const zm_slice *frames, size_t n,
                   const uint8_t *tag, const char *principal, size_t plen) except -1:
        """MAC_OK, or the MacFailure that refuses the message whose header
        is *h, whose MAC input is frames[0..n) and whose MAC frame is `tag`
        (NULL: unsigned); `principal` names the nonce partition."""
        cdef MacKey key
        cdef uint8_t mac[ZM_MAC_OUT]
        cdef int64_t now, ts, skew
        cdef uint32_t expires
        cdef int rc
        cdef ReplayPartition part
        # 1. sizes (the frame layer already checked the MAC frame's)
        if tag == NULL or not (h.flags & ZM_FLAG_SIGNED) or h.nonce.len != 16:
            return self._count(MAC_UNSIGNED)
        # 2. key id
        key = self.current
        if key.id != h.key_id:
            key = self.keys.get(h.key_id)
            if key is None:
                return self._count(MAC_UNKNOWN_KEY)
        # 3. MAC, in constant time
        self.mac_frames(key, frames, n, mac)
        if not zm_equal32(mac, tag):
            return self._count(MAC_BAD)
        # 4. timestamp within the window
        now = self.now_us()
        ts = <int64_t>h.timestamp_us if h.timestamp_us < 0x7FFFFFFFFFFFFFFF else -1
        skew = now - ts if now >= ts else ts - now
        if ts < 0 or skew > self.window_us:
            return self._count(MAC_STALE)
        # 5. nonce not seen: remembered until the message's window has passed
        part = self._partition(principal, plen)
        if part is None:
            return self._count(MAC_FULL)
        expires = <uint32_t>((ts + self.window_us + 999999) // 1000000)
        rc = zm_replay_insert(&part.r, h.nonce.ptr, expires, <uint32_t>(now // 1000000))
        if rc == ZM_OK:
            return self._count(MAC_OK)
        if rc == ZM_E_REPLAY:
            return self._count(MAC_REPLAY)
        if rc == ZM_E_REPLAY_FULL:
            return self._count(MAC_FULL)
        raise_zm(rc)

    cdef int _count(self, int failure) noexcept:
        self.n_checked[failure] += 1
        return failure

    cdef ReplayPartition _partition(self, const char *principal, size_t plen):
        if self.last_partition is not None and _same_text(self.last_principal, principal, plen):
            return self.last_partition
        name = PyBytes_FromStringAndSize(principal, <Py_ssize_t>plen)
        part = self.partitions.get(name)
        if part is None:
            if len(self.partitions) >= self.max_partitions:
                return None
            part = ReplayPartition(self.replay_max)
            self.partitions[name] = part
        self.last_principal = name
        self.last_partition = part
        return part

    # -- Python's side (tests, tools) ----------------------------------------

    def stats(self):
        """Messages signed, and checked by outcome."""
        cdef int i
        out = {"signed": self.n_signed}
        for i in range(<int>MAC_FAILURES):
            out[MAC_FAILURE_NAMES[i]] = self.n_checked[i]
        out["partitions"] = len(self.partitions)
        return out

    def seal(self, Header header, bodies=(), *, bint inline=False, bint trailer=False):
        """The frames of `header` + `bodies` signed with the current key:
        [header frame, body frames..., MAC]. Sets the header's key id,
        timestamp and nonce. `inline`: the one body rides in the header
        frame. `trailer`: the MAC ends the header frame (MAC_TRAILER), which
        must then be the only frame (no bodies, or one inline)."""
        cdef zm_header h
        cdef uint8_t nonce[16]
        cdef uint8_t hbuf[ZM_WIRE_MAX_HEADER]
        cdef uint8_t mac[ZM_MAC_OUT]
        cdef size_t hlen = 0
        cdef Views v
        cdef int rc
        header._to_c(&h)
        h.flags &= ~(<uint32_t>(ZM_FLAG_SIGNED | ZM_FLAG_BODY_INLINE))
        if inline:
            if len(bodies) != 1:
                raise ValueError("an inline body is exactly one body")
            h.flags |= ZM_FLAG_BODY_INLINE
        if trailer and not inline and len(bodies):
            raise ValueError("a MAC trailer needs a message of one frame")
        key = self.sign_header(&h, nonce, trailer)
        rc = zm_wire_write(&h, hbuf, sizeof(hbuf), &hlen)
        if rc != ZM_OK:
            raise_zm(rc)
        header.flags = h.flags
        header.key_id = h.key_id
        header.timestamp_us = h.timestamp_us
        header.nonce = PyBytes_FromStringAndSize(<char *>nonce, 16)
        first = PyBytes_FromStringAndSize(<char *>hbuf, <Py_ssize_t>hlen)
        frames = [first + bytes(bodies[0])] if inline else [first, *map(bytes, bodies)]
        v.n = 0
        try:
            views_get(&v, frames, ZM_FRAME_MAX - 1)
            self.mac_frames(key, v.slices, <size_t>v.n, mac)
        finally:
            views_release(&v)
        tag = PyBytes_FromStringAndSize(<char *>mac, ZM_MAC_OUT)
        if trailer:
            return [frames[0] + tag]
        frames.append(tag)
        return frames

    def open(self, frames, principal=b""):
        """Check a received message (frames without routing id) as a server
        would: returns "ok" or the failure's name (see MAC_FAILURE_NAMES);
        raises WireError when the frames are not a zmicro message at all."""
        cdef Views v
        cdef zm_header h
        cdef zm_frame_view fv
        cdef int rc
        cdef bytes p = bytes(principal)
        if len(frames) > ZM_FRAME_MAX:
            raise_zm(ZM_E_FRAME_COUNT)
        v.n = 0
        try:
            views_get(&v, frames, ZM_FRAME_MAX)
            rc = zm_frame_parse(v.slices, v.n, 0, &h, &fv)
            if rc != ZM_OK:
                raise_zm(rc)
            rc = check_view(self, v.slices, &h, &fv, PyBytes_AS_STRING(p),
                            <size_t>PyBytes_GET_SIZE(p))
        finally:
            views_release(&v)
        return MAC_FAILURE_NAMES[rc]


# -- sending signed messages (server.pyx, client.pyx) --------------------------

cdef int send_signed(void *sock, MacKey key, Keyring ring, const uint8_t *hbuf,
                     size_t hlen, object body, const zm_slice *b, bint inline,
                     int flags) except -1:
    """Send a header written after ring.sign_header() returned `key`, its
    body (`b` over `body`; None: no body), and the MAC. `inline` (the body
    rides in the header frame) or no body: one frame ending with the MAC,
    the header signed with `trailer`; else header, body, MAC frames.
    Returns 0, or EAGAIN when `flags` has ZM_DONTWAIT and there is no room
    (nothing was sent)."""
    cdef zmq_msg_t msg
    cdef zm_slice frames[2]
    cdef uint8_t mac[ZM_MAC_OUT]
    cdef uint8_t *data
    cdef size_t blen = b.len if inline else 0
    cdef int rc, err, n = 1
    if inline or body is None:
        # One frame, the header written with MAC_TRAILER: build it, MAC it
        # where it lies, the MAC at its end (CurveZMQ pays per frame).
        if ZMQ.msg_init_size(&msg, hlen + blen + ZM_MAC_OUT) < 0:
            raise_errno(ZMQ.errno_())
        data = <uint8_t *>ZMQ.msg_data(&msg)
        memcpy(data, hbuf, hlen)
        if blen:
            memcpy(data + hlen, b.ptr, blen)
        frames[0].ptr = data
        frames[0].len = hlen + blen
        try:
            ring.mac_frames(key, frames, 1, data + hlen + blen)
        except BaseException:
            ZMQ.msg_close(&msg)
            raise
        rc = ZMQ.msg_send(&msg, sock, flags)
        if rc < 0:
            err = ZMQ.errno_()
            ZMQ.msg_close(&msg)
            if err == EAGAIN and flags & ZM_DONTWAIT:
                return EAGAIN
            raise_errno(err)
        return 0
    else:
        frames[0].ptr = hbuf
        frames[0].len = hlen
        if body is not None:
            frames[1] = b[0]
            n = 2
        ring.mac_frames(key, frames, <size_t>n, mac)
        if ZMQ.send(sock, hbuf, hlen, flags | ZM_SNDMORE) < 0:
            err = ZMQ.errno_()
            if err == EAGAIN and flags & ZM_DONTWAIT:
                return EAGAIN
            raise_errno(err)
        if body is not None:
            send_body(sock, body, b, ZM_SNDMORE)
    # libzmq took the first frame: the rest of the message cannot be refused.
    if ZMQ.send(sock, mac, ZM_MAC_OUT, 0) < 0:
        raise_errno(ZMQ.errno_())
    return 0


cdef bytes sign_to_bytes(Keyring ring, MacKey key, list frames):
    """The MAC frame of `frames` (bytes objects) under `key`."""
    cdef zm_slice s[ZM_FRAME_MAX]
    cdef uint8_t mac[ZM_MAC_OUT]
    cdef Py_ssize_t i, n = len(frames)
    for i in range(n):
        s[i].ptr = <const uint8_t *>PyBytes_AS_STRING(frames[i])
        s[i].len = <size_t>PyBytes_GET_SIZE(frames[i])
    ring.mac_frames(key, s, <size_t>n, mac)
    return PyBytes_FromStringAndSize(<char *>mac, ZM_MAC_OUT)


cdef int check_view(Keyring ring, const zm_slice *slices, const zm_header *h,
                    const zm_frame_view *v, const char *principal, size_t plen) except -1:
    """ring.check() of a message parsed into *v (zm_frame_parse): the MAC
    covers the header frame (without a MAC trailer) and the body frames."""
    cdef zm_slice covered[ZM_FRAME_MAX]
    cdef int n = 1 + v.body_count
    memcpy(covered, &slices[v.header], <size_t>n * sizeof(zm_slice))
    covered[0].len = v.header_len
    return ring.check(h, covered, <size_t>n, v.tag, principal, plen)
