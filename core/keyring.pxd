cdef enum MacFailure:
    # Why a signed message was refused (counted; never told to the peer).
    MAC_OK = 0
    MAC_UNSIGNED = 1      # no SIGNED flag, or a nonce that is not 16 bytes
    MAC_UNKNOWN_KEY = 2   # keyId names no key of the ring
    MAC_BAD = 3           # the MAC does not verify
    MAC_STALE = 4         # timestamp outside the window
    MAC_REPLAY = 5        # nonce already accepted by this service within the window
    MAC_FULL = 6          # the principal's nonce quota is full (or too many principals)
    MAC_FAILURES = 7      # number of the above, MAC_OK included


cdef enum:
    # What owner_of() returns besides a principal's slot (>= 0):
    OWNER_FULL = -2       # max_principals are tracked already
    OWNER_ERROR = -3      # it raised


cdef class MacKey:
    """One prepared MAC key (the secret never leaves C but for BLAKE3)."""

    cdef zm_mac_key *k                # keyed starting state (C algorithms); its
                                      # own 64-byte-aligned block (zm_mac_key_new)
    cdef readonly uint32_t id         # Header.keyId
    cdef readonly int alg             # MAC_HMAC_SHA256, MAC_BLAKE2B, MAC_BLAKE3
    cdef bint in_c                    # computed by src/zm_mac.c (else Python)
    cdef bytes secret                 # kept only when Python computes the MAC

    cdef int mac(self, const zm_slice *items, size_t n, uint8_t *out) except -1


cdef class Keyring:
    """The MAC keys of one service, its window and its nonce set."""

    cdef MacKey current               # signs; None: nothing to sign with
    cdef dict keys                    # key id -> MacKey, current included
    cdef readonly double window       # seconds a timestamp may be off
    cdef int64_t window_us
    cdef readonly size_t replay_quota     # live nonces one principal may hold
    cdef readonly size_t max_principals   # principals tracked at once
    cdef zm_replay replay             # every nonce the service accepted (zm_replay.h)
    cdef dict owners                  # principal (bytes) -> its owner slot in `replay`
    cdef bytes last_principal         # cache of the last owner looked up
    cdef int last_owner
    cdef object clock                 # None (CLOCK_REALTIME) or () -> seconds
    cdef uint64_t n_signed
    cdef uint64_t n_checked[MAC_FAILURES]  # by MacFailure (MAC_OK: accepted)

    cdef int64_t now_us(self) except? -1
    cdef MacKey stamp(self, zm_header *h, uint8_t *nonce)
    cdef int check(self, const zm_header *h, const zm_slice *items, size_t n,
                   const uint8_t *tag, const zm_slice *principal) except -1
    cdef int verify(self, const zm_header *h, const zm_slice *items, size_t n,
                    const uint8_t *tag) except -1
    cdef int owner_of(self, const char *principal, size_t plen) except OWNER_ERROR
    cdef int _count(self, int failure) noexcept


cdef class KeySource:
    """Where a core gets the keyrings of the services it talks to, and how
    it picks up rotated keys (the same way on both sides)."""

    cdef object secrets               # zmicro.security MacSecrets
    cdef readonly Keyring own         # server: its service's ring (None: client)
    cdef dict rings                   # service -> Keyring, asked for so far
    cdef size_t max_rings             # bound of `rings` (0: unbounded)
    cdef double next_check            # monotonic: look at the secrets file then

    cdef Keyring ring(self, str service, double now)
    cdef Keyring ring_slice(self, zm_slice service, double now)
    cdef int tick(self, double now) except -1


cdef int next_nonce(uint8_t *out) except -1
