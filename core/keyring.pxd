cdef enum MacFailure:
    # Why a signed message was refused (counted; never told to the peer).
    MAC_OK = 0
    MAC_UNSIGNED = 1      # no SIGNED flag, or a nonce that is not 16 bytes
    MAC_UNKNOWN_KEY = 2   # keyId names no key of the ring
    MAC_BAD = 3           # the MAC does not verify
    MAC_STALE = 4         # timestamp outside the window
    MAC_REPLAY = 5        # nonce already seen within the window
    MAC_FULL = 6          # the principal's nonce partition is full
    MAC_FAILURES = 7      # number of the above, MAC_OK included


cdef class MacKey:
    """One prepared MAC key (the secret never leaves C but for BLAKE3)."""

    cdef zm_mac_key k                 # keyed starting state (C algorithms)
    cdef readonly uint32_t id         # Header.keyId
    cdef readonly int alg             # MAC_HMAC_SHA256, MAC_BLAKE2B, MAC_BLAKE3
    cdef bint in_c                    # computed by src/zm_mac.c (else Python)
    cdef bytes secret                 # kept only when Python computes the MAC


cdef class ReplayPartition:
    """The nonces one principal used, until they expire (zm_replay.h)."""

    cdef zm_replay r


cdef class Keyring:
    """The MAC keys of one service, the window and the nonce caches."""

    cdef MacKey current               # signs; None: nothing to sign with
    cdef dict keys                    # key id -> MacKey, current included
    cdef readonly double window       # seconds a timestamp may be off
    cdef int64_t window_us
    cdef readonly size_t replay_max   # nonces per principal partition
    cdef readonly size_t max_partitions  # principals tracked at once
    cdef dict partitions              # principal (bytes) -> ReplayPartition
    cdef bytes last_principal         # cache of the last partition used
    cdef ReplayPartition last_partition
    cdef object clock                 # None (CLOCK_REALTIME) or () -> seconds
    cdef public object family         # service -> Keyring of the same secrets, or None
    cdef object lock                  # partitions are shared by threads
    cdef uint64_t n_signed
    cdef uint64_t n_checked[MAC_FAILURES]  # by MacFailure (MAC_OK: accepted)

    cdef int64_t now_us(self) except? -1
    cdef MacKey sign_header(self, zm_header *h, uint8_t *nonce, bint trailer)
    cdef int mac_frames(self, MacKey key, const zm_slice *frames, size_t n,
                        uint8_t *out) except -1
    cdef int check(self, const zm_header *h, const zm_slice *frames, size_t n,
                   const uint8_t *tag, const char *principal, size_t plen) except -1
    cdef int _count(self, int failure) noexcept
    cdef ReplayPartition _partition(self, const char *principal, size_t plen)


cdef int send_signed(void *sock, MacKey key, Keyring ring, const uint8_t *hbuf,
                     size_t hlen, object body, const zm_slice *b, bint inline,
                     int flags) except -1
cdef bytes sign_to_bytes(Keyring ring, MacKey key, list frames)
cdef int check_view(Keyring ring, const zm_slice *slices, const zm_header *h,
                    const zm_frame_view *v, const char *principal, size_t plen) except -1
