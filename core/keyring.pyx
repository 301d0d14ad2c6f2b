# keyring.pyx - the MAC end to end (docs/protocol.md §7): the keys of one
# service by id, stamping a header (key id, timestamp, nonce), and checking
# a received message in the protocol's order:
#
#     sizes -> key id -> MAC (constant time) -> timestamp window -> nonce
#
# Uses: native.pyx (CRYPTO, RANDOMBYTES), mac.pyx (c_mac, _python_module,
# _fallback_module),
# buffers.pyx (view_get), context.pyx (monotonic), errors.pyx (raise_zm),
# src/zm_mac.h, src/zm_replay.h.
#
# One nonce set per service (a Keyring), whoever sent the message: a request
# captured and resent under another caller's key is a replay too. Each
# principal (the caller's Curve key) may hold a quota of live nonces, so one
# noisy key fills only its own share and is refused when it is full (never
# an entry evicted early: zm_replay.h). Nonces are inserted only after the
# MAC passed. Answers are bound to their request's nonce in the MAC
# (message.pyx), so a client keeps no nonce set: each answer can match one
# call only. Everything here runs with the GIL held. MACs are computed in C
# (src/zm_mac.c) but for BLAKE3, which only the `blake3` package computes.

from posix.time cimport CLOCK_REALTIME

MAC_FAILURE_NAMES = ("ok", "unsigned", "unknown_key", "bad_mac", "stale", "replay",
                     "replay_full")

#: Seconds between looks at the MAC secrets file (KeySource.tick).
KEYS_RELOAD_INTERVAL = 1.0
cdef double _RELOAD = KEYS_RELOAD_INTERVAL

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
    if _nonce_pos + ZM_NONCE_SIZE > NONCE_POOL:
        if RANDOMBYTES != NULL:
            RANDOMBYTES(_nonce_pool, NONCE_POOL)
        else:
            memcpy(_nonce_pool, PyBytes_AS_STRING(_os.urandom(NONCE_POOL)), NONCE_POOL)
        _nonce_pos = 0
    memcpy(out, &_nonce_pool[_nonce_pos], ZM_NONCE_SIZE)
    memset(&_nonce_pool[_nonce_pos], 0, ZM_NONCE_SIZE)
    _nonce_pos += ZM_NONCE_SIZE
    return 0


def _forget_nonces():
    global _nonce_pos
    memset(_nonce_pool, 0, NONCE_POOL)
    _nonce_pos = NONCE_POOL


_os.register_at_fork(after_in_child=_forget_nonces)


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
        if self.k == NULL:
            self.k = zm_mac_key_new()
            if self.k == NULL:
                raise MemoryError()
        view_get(secret, &view, &s)
        rc = zm_mac_key_init(&CRYPTO, self.k, id, alg, s.ptr, s.len)
        if rc != ZM_OK:
            raise_zm(rc)

    cdef int mac(self, const zm_slice *items, size_t n, uint8_t *out) except -1:
        """The MAC of items[0..n) (binding, then frames) into out[ZM_MAC_SIZE]."""
        cdef int rc
        cdef size_t i, total = 0
        if self.in_c:
            for i in range(n):
                total += items[i].len
            if total < 65536:  # less than a GIL round trip costs
                rc = zm_mac_sign(&CRYPTO, self.k, items, n, out)
            else:
                with nogil:
                    rc = zm_mac_sign(&CRYPTO, self.k, items, n, out)
            if rc != ZM_OK:
                raise_zm(rc)
            return 0
        objs = [PyBytes_FromStringAndSize(<const char *>items[i].ptr, <Py_ssize_t>items[i].len)
                for i in range(n)]
        if self.alg == ALG_BLAKE3:
            tag = _python_module().compute(self.alg, self.secret, objs)
        else:
            tag = _fallback_module().compute(self.alg, self.secret, objs)
        memcpy(out, PyBytes_AS_STRING(tag), ZM_MAC_SIZE)
        return 0

    def __repr__(self):
        return f"<MacKey id={self.id} alg={self.alg}>"

    def __dealloc__(self):
        zm_mac_key_free(self.k)  # wiped first
        self.k = NULL


@cython.auto_pickle(False)
cdef class Keyring:
    """The MAC keys of one service and what checking them needs.

    ``Keyring(keys, current, window=30.0, replay_quota=..., clock=None)``:
    `keys` are MacKey objects (distinct ids), `current` the id that signs.
    Every key is accepted: that is what lets keys rotate without downtime.
    `window`: seconds a message's timestamp may differ from our clock.
    `replay_quota`: live nonces one principal may hold in the service's
    nonce set - at least the rate one principal may send at times the
    window (2 × 30 s × 25,000/s by default); a principal whose quota is full
    is refused, nobody else. `max_principals`: principals tracked at once
    (more are refused). `clock`: a callable returning Unix seconds (tests);
    default the system's real-time clock.
    """

    def __init__(self, keys, uint32_t current, *, double window=30.0,
                 size_t replay_quota=1_500_000, size_t max_principals=65536, clock=None):
        if window <= 0:
            raise ValueError("window must be positive")
        if replay_quota < 1 or max_principals < 1:
            raise ValueError("replay_quota and max_principals must be positive")
        self.window = window
        self.window_us = <int64_t>(window * 1e6)
        self.replay_quota = replay_quota
        self.max_principals = max_principals
        zm_replay_init(&self.replay, replay_quota)
        self.owners = {}
        self.last_owner = -1
        self.clock = clock
        self.update(keys, current)

    def __dealloc__(self):
        zm_replay_free(&self.replay)

    def update(self, keys, uint32_t current):
        """Replace the keys (a rotation step); the nonce set stays."""
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

    cdef MacKey stamp(self, zm_header *h, uint8_t *nonce):
        """Set *h's key id, timestamp and nonce (a fresh one, written to
        nonce[0..16), which must outlive *h) before the header is written.
        Returns the key to compute the MAC with (a rotation may change
        `current` meanwhile)."""
        cdef MacKey key = self.current
        h.key_id = key.id
        h.timestamp_us = <uint64_t>self.now_us()
        next_nonce(nonce)
        h.nonce.ptr = nonce
        h.nonce.len = ZM_NONCE_SIZE
        self.n_signed += 1
        return key

    cdef int check(self, const zm_header *h, const zm_slice *items, size_t n,
                   const uint8_t *tag, const zm_slice *principal) except -1:
        """MAC_OK, or the MacFailure that refuses the message whose header
        is *h, whose MAC input is items[0..n) (binding, then frames: see
        message.pyx) and whose MAC is `tag` (NULL: unsigned). `principal`:
        who sent it (its Curve key), whose quota the nonce is remembered
        under; NULL: no nonce check (answers, bound to their request
        instead; messages no handler runs for). A principal gets its slot
        only once its message passed the MAC and the window."""
        cdef int owner
        cdef int64_t now, ts, skew
        cdef uint32_t expires
        cdef int rc = self.verify(h, items, n, tag)  # 1. sizes, 2. key id, 3. MAC
        if rc != MAC_OK:
            return rc
        # 4. timestamp within the window
        now = self.now_us()
        ts = <int64_t>h.timestamp_us if h.timestamp_us < 0x7FFFFFFFFFFFFFFF else -1
        skew = now - ts if now >= ts else ts - now
        if ts < 0 or skew > self.window_us:
            return self._count(MAC_STALE)
        # 5. nonce not accepted before: remembered until the message's window has passed
        if principal == NULL:
            return self._count(MAC_OK)
        owner = self.owner_of(<const char *>principal.ptr, principal.len)
        if owner == OWNER_FULL:
            return self._count(MAC_FULL)
        expires = <uint32_t>((ts + self.window_us + 999999) // 1000000)
        rc = zm_replay_insert(&self.replay, h.nonce.ptr, <uint32_t>owner, expires,
                              <uint32_t>(now // 1000000))
        if rc == ZM_OK:
            return self._count(MAC_OK)
        if rc == ZM_E_REPLAY:
            return self._count(MAC_REPLAY)
        if rc == ZM_E_REPLAY_FULL:
            return self._count(MAC_FULL)
        raise_zm(rc)

    cdef int verify(self, const zm_header *h, const zm_slice *items, size_t n,
                    const uint8_t *tag) except -1:
        """Steps 1-3 of check(): sizes, key id, MAC in constant time. MAC_OK
        (not counted: the caller decides on time and nonce), or the failure
        (counted). Events (events.pyx) use it alone: their age limits are
        the subscription's, and their nonces are remembered once handled."""
        cdef MacKey key
        cdef uint8_t mac[ZM_MAC_SIZE]
        # 1. sizes (the frame layer already checked the MAC's)
        if tag == NULL or not (h.flags & ZM_FLAG_SIGNED) or h.nonce.len != ZM_NONCE_SIZE:
            return self._count(MAC_UNSIGNED)
        # 2. key id
        key = self.current
        if key.id != h.key_id:
            key = self.keys.get(h.key_id)
            if key is None:
                return self._count(MAC_UNKNOWN_KEY)
        # 3. MAC, in constant time
        key.mac(items, n, mac)
        if not zm_equal32(mac, tag):
            return self._count(MAC_BAD)
        return MAC_OK

    cdef int owner_of(self, const char *principal, size_t plen) except OWNER_ERROR:
        """The slot of `principal` in the nonce set (made on first sight),
        or OWNER_FULL when max_principals are tracked already."""
        if self.last_owner >= 0 and same_bytes(self.last_principal, principal, plen):
            return self.last_owner
        name = PyBytes_FromStringAndSize(principal, <Py_ssize_t>plen)
        slot = self.owners.get(name)
        if slot is None:
            if <size_t>len(self.owners) >= self.max_principals:
                return OWNER_FULL
            slot = self.owners[name] = len(self.owners)
        self.last_principal = name
        self.last_owner = slot
        return slot

    cdef int _count(self, int failure) noexcept:
        self.n_checked[failure] += 1
        return failure

    # -- Python's side (tests, tools) ----------------------------------------

    def stats(self):
        """Messages signed, and checked by outcome; principals and nonces held."""
        cdef int i
        out = {"signed": self.n_signed}
        for i in range(<int>MAC_FAILURES):
            out[MAC_FAILURE_NAMES[i]] = self.n_checked[i]
        out["principals"] = len(self.owners)
        out["nonces"] = self.replay.count
        return out

    def held(self, principal):
        """Live nonces `principal` (bytes) holds in the set (tests)."""
        slot = self.owners.get(bytes(principal))
        return 0 if slot is None else zm_replay_held(&self.replay, <uint32_t>slot)

    def seal(self, Header header, bodies=(), *, bind=b"", bint inline=False):
        """The frames of `header` + `bodies` as this ring signs them:
        key id, timestamp and a fresh nonce set (in `header` too), the MAC
        over `bind` and the frames, as a trailer when the message is one
        frame, else a last frame. `inline`: the one body rides in the
        header frame."""
        return seal_frames(self, header, bodies, bind, inline)

    def open(self, frames, principal=b"", *, bind=b"", bint remember=True):
        """Check a received message (frames without routing id) bound to
        `bind`: "ok" or the failure's name (MAC_FAILURE_NAMES). With
        `remember`, its nonce goes into the set under `principal` (a
        server's request); without, it is not looked at (an answer). Raises
        WireError when the frames are not a zmicro message at all."""
        return open_frames(self, frames, principal, bind, remember)


@cython.auto_pickle(False)
cdef class KeySource:
    """The keyrings of the services a core talks to, and the one way both
    sides pick up rotated keys: the secrets file is looked at (one stat)
    at most every KEYS_RELOAD_INTERVAL seconds, on the core's own thread,
    before a message is signed or checked.

    ``KeySource(secrets, service=None, max_rings=0)``: `secrets` is a
    zmicro.security MacSecrets. A server names its `service`: its ring is
    `own` (its nonce set lives as long as the server); the rings of other
    services, which a server needs only to answer a request that named
    another service, are made apart from the secrets' cache, at most
    `max_rings` at once, and dropped when keys rotate. A client (no
    `service`) asks the secrets for every ring (made once, rotated in
    place)."""

    def __init__(self, secrets, *, str service=None, size_t max_rings=0):
        self.secrets = secrets
        self.rings = {}
        self.max_rings = max_rings
        self.next_check = monotonic() + _RELOAD
        if service is not None:
            self.own = <Keyring?>secrets.keyring(service)
            self.rings[service] = self.own

    cdef int tick(self, double now) except -1:
        if now < self.next_check:
            return 0
        self.next_check = now + _RELOAD
        if self.secrets.reload_if_changed() and self.own is not None:
            # The secrets rotated their own rings in place; the others were
            # made with the old secrets.
            self.rings = {k: v for k, v in self.rings.items() if v is self.own}
        return 0

    cdef Keyring ring(self, str service, double now):
        """The keyring of `service`."""
        self.tick(now)
        ring = self.rings.get(service)
        if ring is None:
            if self.own is not None:
                if self.max_rings and <size_t>len(self.rings) > self.max_rings:
                    self.rings = {k: v for k, v in self.rings.items() if v is self.own}
                ring = self.secrets.keyring(service, cache=False)
            else:
                ring = self.secrets.keyring(service)
            self.rings[service] = ring
        return <Keyring>ring

    cdef Keyring ring_slice(self, zm_slice service, double now):
        """ring() of a service named by wire bytes (UTF-8, checked by the reader)."""
        return self.ring(_text(service), now)
