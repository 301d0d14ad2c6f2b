/* zm_limits.h - every limit and threshold of zmicro's messages, one
 * constant each.
 *
 * The C in src/ and the Cython core (core/includes/src.pxd) read them from
 * here; the Python API re-exports them from zmicro._core. docs/protocol.md
 * states the ones that are protocol rules (a writer in another language must
 * respect them); the others are zmicro's choices and say so.
 */
#ifndef ZM_LIMITS_H
#define ZM_LIMITS_H

/* Protocol rules: the header (docs/protocol.md §3.3). */
#define ZM_WIRE_MAX_HEADER 8192   /* whole header message, segment table included */
#define ZM_WIRE_MAX_NAME 255      /* contentType, service, endpoint, principal, keys */
#define ZM_WIRE_MAX_VALUE 4096    /* detail, metadata values, nonce */
#define ZM_WIRE_MAX_METADATA 64   /* metadata entries */

/* Protocol rules: the frames around it (§2, §7). */
#define ZM_FRAME_MAX 16   /* header + bodies + MAC, the routing id not counted */
#define ZM_MAC_SIZE 32    /* a MAC frame or trailer */
#define ZM_NONCE_SIZE 16  /* the nonce of a signed message */

/* Protocol rule: the largest event frame (kind event, header + inline body
 * + MAC trailer, §4.6), what a subscriber accepts. It is a NATS server's
 * default max_payload, so one frame is one NATS message. */
#define ZM_EVENT_MAX (1024 * 1024)

/* zmicro's choices. Bodies shorter than ZM_INLINE_MAX ride in the header
 * frame (libzmq's cost is per frame); longer ones get a frame of their own,
 * sent and received without a copy (below that size a copy costs less than
 * the bookkeeping of zero-copy), so the two thresholds are one. */
#define ZM_INLINE_MAX 65536
#define ZM_ZERO_COPY_MIN ZM_INLINE_MAX

/* Bytes of error detail a zmicro server sends (the wire allows
 * ZM_WIRE_MAX_VALUE); longer texts are cut on a character boundary. */
#define ZM_DETAIL_MAX 1024

/* Default largest frame a peer accepts (libzmq's MAXMSGSIZE, per frame):
 * gRPC's default receive limit. With ZM_FRAME_MAX frames a peer can make a
 * receiver buffer at most 16 times this before any zmicro check runs. */
#define ZM_MESSAGE_MAX_DEFAULT (4 * 1024 * 1024)

#endif /* ZM_LIMITS_H */
