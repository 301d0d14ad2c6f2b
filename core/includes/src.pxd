# Declarations of the plain C in src/ (zm_common.h, zm_limits.h, zm_wire.h,
# zm_frame.h, zm_mac.h, zm_replay.h, zm_hash.h). Those headers are the
# contract; this file only mirrors them.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "zm_common.h" nogil:
    ctypedef struct zm_slice:
        const uint8_t *ptr
        size_t len

    enum:
        ZM_OK
        ZM_E_SHORT
        ZM_E_TOO_BIG
        ZM_E_SEGMENTS
        ZM_E_SEGMENT_SIZE
        ZM_E_FAR_POINTER
        ZM_E_POINTER_KIND
        ZM_E_BOUNDS
        ZM_E_TRAVERSAL
        ZM_E_TEXT_NUL
        ZM_E_TEXT_UTF8
        ZM_E_TEXT_SIZE
        ZM_E_METADATA_COUNT
        ZM_E_METADATA_KEY
        ZM_E_BUFFER
        ZM_E_NO_HEADER
        ZM_E_FRAME_COUNT
        ZM_E_VERSION
        ZM_E_KIND
        ZM_E_MAC_FRAME
        ZM_E_ROUTING_ID
        ZM_E_INLINE_BODY
        ZM_E_MAC_ALG
        ZM_E_MAC_KEY
        ZM_E_MAC_MISMATCH
        ZM_E_MAC_API
        ZM_E_REPLAY
        ZM_E_REPLAY_FULL
        ZM_E_NOMEM

    const char *zm_strerror(int code)


cdef extern from "zm_limits.h" nogil:
    enum:
        ZM_WIRE_MAX_HEADER
        ZM_WIRE_MAX_NAME
        ZM_WIRE_MAX_VALUE
        ZM_WIRE_MAX_METADATA
        ZM_FRAME_MAX
        ZM_MAC_SIZE
        ZM_NONCE_SIZE
        ZM_INLINE_MAX
        ZM_ZERO_COPY_MIN
        ZM_DETAIL_MAX
        ZM_MESSAGE_MAX_DEFAULT
        ZM_EVENT_MAX


cdef extern from "zm_wire.h" nogil:
    enum:
        ZM_WIRE_VERSION
        ZM_KIND_REQUEST
        ZM_KIND_REPLY
        ZM_KIND_ERROR
        ZM_KIND_STREAM_DATA
        ZM_KIND_STREAM_END
        ZM_KIND_CANCEL
        ZM_KIND_PING
        ZM_KIND_PONG
        ZM_KIND_EVENT
        ZM_KIND_MAX
        ZM_FLAG_SIGNED
        ZM_FLAG_MAC_TRAILER
        ZM_FLAG_BODY_INLINE
        ZM_FLAG_NOT_PROCESSED
        ZM_WIRE_TRUSTED_UTF8

    ctypedef struct zm_meta:
        zm_slice key
        zm_slice value

    ctypedef struct zm_header:
        uint16_t version
        uint16_t kind
        uint32_t flags
        uint64_t request_id
        uint64_t deadline_us
        uint16_t status
        uint32_t key_id
        uint64_t timestamp_us
        uint64_t trace_hi
        uint64_t trace_lo
        uint64_t span_id
        uint32_t max_reply
        zm_slice content_type
        zm_slice service
        zm_slice endpoint
        zm_slice nonce
        zm_slice principal
        zm_slice detail
        uint32_t n_metadata
        zm_meta metadata[64]

    int zm_wire_read(const uint8_t *buf, size_t len, zm_header *h)
    int zm_wire_read_prefix(const uint8_t *buf, size_t len, zm_header *h, size_t *used)
    size_t zm_wire_size(const zm_header *h)
    int zm_wire_write(const zm_header *h, uint8_t *out, size_t cap, size_t *written)
    int zm_wire_write_ex(const zm_header *h, uint8_t *out, size_t cap, size_t *written,
                         unsigned flags)
    int zm_utf8_valid(const uint8_t *s, size_t n)


cdef extern from "zm_frame.h" nogil:
    ctypedef struct zm_frame_view:
        int routing
        int header
        int body_first
        int body_count
        int mac
        int inline_body
        zm_slice body
        int trailer
        size_t header_len
        const uint8_t *tag

    int zm_frame_parse(const zm_slice *frames, int n, int routed, zm_header *h,
                       zm_frame_view *v)


cdef extern from "zm_mac.h" nogil:
    enum:
        ZM_MAC_HMAC_SHA256
        ZM_MAC_BLAKE2B
        ZM_MAC_KEY_MIN
        ZM_MAC_KEY_MAX
        ZM_MAC_DOMAIN_LEN

    const char *ZM_MAC_DOMAIN         # the MAC input's first bytes (zm_mac.h)

    ctypedef struct zm_crypto:
        int sha256_kind
        size_t sha256_ctx_size
        int (*sha256_init)(void *ctx) noexcept nogil
        int (*sha256_update)(void *ctx, const void *data, size_t len) noexcept nogil
        int (*sha256_final_sodium)(void *ctx, unsigned char *out) noexcept nogil
        int (*sha256_final_openssl)(unsigned char *out, void *ctx) noexcept nogil
        size_t (*generichash_statebytes)() noexcept nogil
        int (*generichash_init)(void *state, const unsigned char *key, size_t keylen, size_t outlen) noexcept nogil
        int (*generichash_update)(void *state, const unsigned char *inp, unsigned long long inlen) noexcept nogil
        int (*generichash_final)(void *state, unsigned char *out, size_t outlen) noexcept nogil

    ctypedef struct zm_mac_key:
        uint32_t id
        int alg

    enum:
        ZM_SHA256_SODIUM
        ZM_SHA256_OPENSSL

    zm_mac_key *zm_mac_key_new()
    void zm_mac_key_free(zm_mac_key *k)
    int zm_mac_supports(const zm_crypto *c, int alg)
    int zm_mac_key_init(const zm_crypto *c, zm_mac_key *k, uint32_t id, int alg,
                        const uint8_t *key, size_t keylen)
    int zm_mac_sign(const zm_crypto *c, const zm_mac_key *k, const zm_slice *frames,
                    size_t n, uint8_t *out)
    int zm_mac_check(const zm_crypto *c, const zm_mac_key *k, const zm_slice *frames,
                     size_t n, const uint8_t *tag)
    int zm_mac_compute(const zm_crypto *c, int alg, const uint8_t *key, size_t keylen,
                       const zm_slice *frames, size_t n, uint8_t *out)
    int zm_mac_verify(const zm_crypto *c, int alg, const uint8_t *key, size_t keylen,
                      const zm_slice *frames, size_t n, const uint8_t *tag)
    int zm_equal32(const uint8_t *a, const uint8_t *b)


cdef extern from "zm_replay.h" nogil:
    ctypedef struct zm_replay:
        size_t count
        size_t quota
        size_t cap

    void zm_replay_init(zm_replay *r, size_t quota)
    void zm_replay_free(zm_replay *r)
    int zm_replay_insert(zm_replay *r, const uint8_t *nonce, uint32_t owner,
                         uint32_t expires, uint32_t now)
    size_t zm_replay_held(const zm_replay *r, uint32_t owner)
    int zm_replay_contains(const zm_replay *r, const uint8_t *nonce, uint32_t now)
    int zm_replay_room(zm_replay *r, uint32_t owner, uint32_t now)


cdef extern from "zm_hash.h" nogil:
    ctypedef struct zm_ring_point:
        uint64_t point
        uint32_t member
        uint32_t replica

    uint64_t zm_hash_mix64(uint64_t x)
    uint64_t zm_hash64(const void *data, size_t len)
    uint64_t zm_ring_vpoint(uint64_t node_hash, uint32_t replica)
    int zm_ring_sort(zm_ring_point *points, size_t n)
    size_t zm_ring_find(const zm_ring_point *points, size_t n, uint64_t h)
