/* zm_wire.h - reader and writer of the zmicro wire header.
 *
 * The header is a single-segment Cap'n Proto message whose root struct is
 * `Header` from python/zmicro/wire.capnp. The reader takes untrusted bytes:
 * it follows the root pointer with bounds checks, reads fields an older
 * sender left out as their defaults, ignores fields it does not know, bounds
 * the words it traverses (aliasing pointers are legal Cap'n Proto, so a
 * small message could otherwise make us read the same bytes many times) and
 * rejects what it cannot read safely with one zm_err code per cause.
 *
 * Neither function allocates. zm_wire_read fills a caller-owned zm_header
 * whose slices point into the input buffer; zm_wire_write writes the
 * canonical encoding (preorder layout, trailing zero data words and null
 * pointers truncated, empty texts as null pointers) into a caller buffer.
 */
#ifndef ZM_WIRE_H
#define ZM_WIRE_H

#include "zm_common.h"

#include "zm_limits.h"

/* Version 2 binds answers to their request in the MAC (docs/protocol.md
 * §3.7 says what a peer of another version gets). The limits every writer
 * must respect and every reader enforces are in zm_limits.h; texts are
 * UTF-8 without NUL bytes (but for the terminator). */
#define ZM_WIRE_VERSION 2

/* Header.kind */
enum {
    ZM_KIND_REQUEST = 0,
    ZM_KIND_REPLY = 1,
    ZM_KIND_ERROR = 2,
    ZM_KIND_STREAM_DATA = 3,
    ZM_KIND_STREAM_END = 4,
    ZM_KIND_CANCEL = 5,
    ZM_KIND_PING = 6,
    ZM_KIND_PONG = 7,
    ZM_KIND_EVENT = 8, /* one frame: header, inline body, MAC trailer */
    ZM_KIND_MAX = 8
};

/* Header.flags */
#define ZM_FLAG_SIGNED 0x1u      /* the last frame is a ZM_MAC_SIZE-byte MAC */
#define ZM_FLAG_BODY_INLINE 0x2u /* the body follows the header in its frame */
#define ZM_FLAG_MAC_TRAILER 0x4u /* with SIGNED: the MAC is the header frame's
                                  * last ZM_MAC_SIZE bytes, no MAC frame */
#define ZM_FLAG_NOT_PROCESSED 0x8u /* on an ERROR: no handler ran for this
                                    * request, so any node may be retried */

typedef struct zm_meta {
    zm_slice key;   /* UTF-8, non-empty, unique in one header */
    zm_slice value; /* bytes */
} zm_meta;

/* Header, decoded. Field comments give the wire.capnp names. */
typedef struct zm_header {
    uint16_t version;      /* version */
    uint16_t kind;         /* kind, ZM_KIND_* */
    uint32_t flags;        /* flags, ZM_FLAG_* */
    uint64_t request_id;   /* requestId */
    uint64_t deadline_us;  /* deadline: remaining budget, 0 = none */
    uint16_t status;       /* status: gRPC canonical code */
    uint32_t key_id;       /* keyId */
    uint64_t timestamp_us; /* timestamp: Unix epoch microseconds */
    uint64_t trace_hi;     /* traceIdHigh */
    uint64_t trace_lo;     /* traceIdLow */
    uint64_t span_id;      /* spanId */
    uint32_t max_reply;    /* maxReplySize: largest reply frame the caller
                            * accepts, 0 = not stated */
    zm_slice content_type; /* contentType */
    zm_slice service;      /* service */
    zm_slice endpoint;     /* endpoint */
    zm_slice nonce;        /* nonce */
    zm_slice principal;    /* principal */
    zm_slice detail;       /* detail */
    uint32_t n_metadata;   /* entries used in metadata[] */
    zm_meta metadata[ZM_WIRE_MAX_METADATA];
} zm_header;

/* Decode `len` bytes at `buf` into *h. Returns ZM_OK or a ZM_E_* code; on
 * error *h is unspecified. Slices in *h borrow from buf. */
int zm_wire_read(const uint8_t *buf, size_t len, zm_header *h);

/* Decode the header message at the start of buf[0..len): its segment table
 * gives its size, which must fit (at most ZM_WIRE_MAX_HEADER); bytes after
 * it are left to the caller (an inline body). *used is the message's size. */
int zm_wire_read_prefix(const uint8_t *buf, size_t len, zm_header *h, size_t *used);

/* Bytes the canonical encoding of *h takes (even when above the limit). */
size_t zm_wire_size(const zm_header *h);

/* Validate *h against the limits and write its canonical encoding into
 * out[0..cap). On ZM_OK, *written is the number of bytes written. */
int zm_wire_write(const zm_header *h, uint8_t *out, size_t cap, size_t *written);

/* zm_wire_write with flags: ZM_WIRE_TRUSTED_UTF8 skips the UTF-8 check of
 * texts the caller knows are well-formed (from a Python str, say); sizes
 * and NUL bytes are still checked. */
#define ZM_WIRE_TRUSTED_UTF8 0x1
int zm_wire_write_ex(const zm_header *h, uint8_t *out, size_t cap, size_t *written,
                     unsigned flags);

/* 1 if s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code
 * points above U+10FFFF: the same set Python's strict decoder accepts). */
int zm_utf8_valid(const uint8_t *s, size_t n);

#endif /* ZM_WIRE_H */
