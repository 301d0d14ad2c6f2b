/* zm_common.h - types, byte-order helpers and error codes shared by src/.
 *
 * Everything in src/ is plain C99 with no Python headers and no library but
 * libc, so the fuzz harnesses and the C tests link it alone. Functions are
 * prefixed by concern: zm_wire_* (header codec), zm_frame_* (multipart
 * layout), zm_mac_* (message authentication framing).
 */
#ifndef ZM_COMMON_H
#define ZM_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define ZM_INLINE static inline __attribute__((always_inline))
#define ZM_LIKELY(x) __builtin_expect(!!(x), 1)
#define ZM_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define ZM_INLINE static inline
#define ZM_LIKELY(x) (x)
#define ZM_UNLIKELY(x) (x)
#endif

/* A borrowed run of bytes: the reader's results point into its input. */
typedef struct zm_slice {
    const uint8_t *ptr;
    size_t len;
} zm_slice;

/* ------------------------------------------------------------------------
 * Error codes. One namespace for all of src/, so the core maps every code
 * to an exception in one place. Values are stable: tests and the Python
 * WireErrorCode enum name them.
 * ------------------------------------------------------------------------ */
typedef enum zm_err {
    ZM_OK = 0,

    /* header codec (zm_wire_*) */
    ZM_E_SHORT = 1,           /* shorter than segment table + root pointer */
    ZM_E_TOO_BIG = 2,         /* over ZM_WIRE_MAX_HEADER bytes */
    ZM_E_SEGMENTS = 3,        /* more than one segment */
    ZM_E_SEGMENT_SIZE = 4,    /* segment table disagrees with frame length */
    ZM_E_FAR_POINTER = 5,     /* far or double-far pointer */
    ZM_E_POINTER_KIND = 6,    /* wrong pointer type or list element size */
    ZM_E_BOUNDS = 7,          /* pointer target outside the segment */
    ZM_E_TRAVERSAL = 8,       /* aliasing pointers exceeded the read budget */
    ZM_E_TEXT_NUL = 9,        /* text not NUL-terminated, or a NUL inside */
    ZM_E_TEXT_UTF8 = 10,      /* text not valid UTF-8 */
    ZM_E_TEXT_SIZE = 11,      /* text or data longer than its limit */
    ZM_E_METADATA_COUNT = 12, /* more than ZM_WIRE_MAX_METADATA entries */
    ZM_E_METADATA_KEY = 13,   /* empty or duplicate metadata key */
    ZM_E_BUFFER = 14,         /* writer: output buffer too small */

    /* multipart layout (zm_frame_*) */
    ZM_E_NO_HEADER = 20,      /* no header frame */
    ZM_E_FRAME_COUNT = 21,    /* more frames than ZM_FRAME_MAX */
    ZM_E_VERSION = 22,        /* unsupported protocol version */
    ZM_E_KIND = 23,           /* unknown message kind */
    ZM_E_MAC_FRAME = 24,      /* signed flag set but no 32-byte MAC frame */
    ZM_E_ROUTING_ID = 25,     /* empty routing id frame */
    ZM_E_INLINE_BODY = 26,    /* an inline body and body frames both */

    /* message authentication (zm_mac_*) */
    ZM_E_MAC_ALG = 30,        /* unknown MAC algorithm */
    ZM_E_MAC_KEY = 31,        /* key length outside 16..64 bytes */
    ZM_E_MAC_MISMATCH = 32,   /* MAC does not verify */
    ZM_E_MAC_API = 33,        /* crypto functions missing or unusable */

    /* replay protection (zm_replay_*) */
    ZM_E_REPLAY = 40,         /* this nonce was seen within its window */
    ZM_E_REPLAY_FULL = 41,    /* the principal's nonce cache is full */
    ZM_E_NOMEM = 42,          /* out of memory */
} zm_err;

/* Static English text for a code; never NULL. */
const char *zm_strerror(int code);

/* ------------------------------------------------------------------------
 * Little-endian loads and stores (Cap'n Proto and our MAC framing are
 * little-endian on the wire). memcpy keeps them alignment-safe; compilers
 * turn them into single moves.
 * ------------------------------------------------------------------------ */
ZM_INLINE uint16_t zm_le16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

ZM_INLINE uint32_t zm_le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

ZM_INLINE uint64_t zm_le64(const uint8_t *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#else
    return (uint64_t)zm_le32(p) | ((uint64_t)zm_le32(p + 4) << 32);
#endif
}

ZM_INLINE void zm_put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

ZM_INLINE void zm_put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

ZM_INLINE void zm_put64(uint8_t *p, uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(p, &v, 8);
#else
    zm_put32(p, (uint32_t)v);
    zm_put32(p + 4, (uint32_t)(v >> 32));
#endif
}

#endif /* ZM_COMMON_H */
