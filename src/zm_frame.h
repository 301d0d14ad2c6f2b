/* zm_frame.h - the multipart layout of zmicro messages.
 *
 * A request travels DEALER -> ROUTER, a reply ROUTER -> DEALER, as ZeroMQ
 * frames:
 *
 *     [routing id]  header  body*  [mac]
 *
 * The routing id is present only where a ROUTER socket receives (it is the
 * peer's identity, prepended by libzmq, never covered by the MAC). The header
 * frame starts with one zm_wire message; with ZM_FLAG_BODY_INLINE the body
 * follows it in the same frame (one frame less for small bodies: libzmq's
 * cost is per frame) and no body frame may follow, otherwise the frame is
 * the message exactly. Bodies are opaque to the framing layer (the header's
 * contentType names their codec). When the header's flags carry
 * ZM_FLAG_SIGNED the last frame is a ZM_MAC_SIZE-byte MAC over the header
 * frame and body frames (zm_mac.h); with ZM_FLAG_MAC_TRAILER as well, the
 * header frame is the only frame and ends with the MAC instead (one frame
 * less: CurveZMQ encrypts every frame on its own), and the MAC covers the
 * header frame without those bytes.
 *
 * zm_frame_parse validates that layout over frames already received; it
 * reads only the frames' bytes and does not allocate.
 */
#ifndef ZM_FRAME_H
#define ZM_FRAME_H

#include "zm_common.h"
#include "zm_wire.h"

/* ZM_FRAME_MAX and ZM_MAC_SIZE: zm_limits.h */

/* Where the parts of one received message are, as indexes into the frame
 * array given to zm_frame_parse. */
typedef struct zm_frame_view {
    int routing;      /* index of the routing id, or -1 */
    int header;       /* index of the header frame */
    int body_first;   /* index of the first body frame */
    int body_count;   /* number of body frames (may be 0) */
    int mac;          /* index of the MAC frame, or -1 when unsigned */
    int inline_body;  /* 1: the body is `body`, inside the header frame */
    zm_slice body;    /* the inline body (may be empty) */
    int trailer;      /* 1: the MAC is the header frame's last ZM_MAC_SIZE bytes */
    size_t header_len; /* bytes of the header frame before any trailer: what
                        * the MAC covers of it */
    const uint8_t *tag; /* the received MAC (trailer or MAC frame), or NULL */
} zm_frame_view;

/* Check the layout of frames[0..n) (routed: frames[0] is a routing id), parse
 * the header into *h and fill *v. Returns ZM_OK or a ZM_E_* code. On
 * ZM_E_VERSION and ZM_E_KIND *h and *v are filled anyway, so a server can
 * answer the request id with an error instead of staying silent. */
int zm_frame_parse(const zm_slice *frames, int n, int routed, zm_header *h,
                   zm_frame_view *v);

#endif /* ZM_FRAME_H */
