/* zm_frame.c - the multipart layout of zmicro messages (see zm_frame.h). */
#include "zm_frame.h"

int zm_frame_parse(const zm_slice *frames, int n, int routed, zm_header *h,
                   zm_frame_view *v) {
    int first = routed ? 1 : 0;
    if (n <= first)
        return ZM_E_NO_HEADER;
    if (n - first > ZM_FRAME_MAX)
        return ZM_E_FRAME_COUNT;
    if (routed && frames[0].len == 0)
        return ZM_E_ROUTING_ID;

    size_t used = 0;
    int rc = zm_wire_read_prefix(frames[first].ptr, frames[first].len, h, &used);
    if (rc)
        return rc;

    v->routing = routed ? 0 : -1;
    v->header = first;
    v->body_first = first + 1;
    v->body_count = n - first - 1;
    v->mac = -1;
    v->inline_body = 0;
    v->body.ptr = NULL;
    v->body.len = 0;
    v->trailer = 0;
    v->header_len = frames[first].len;
    v->tag = NULL;
    if ((h->flags & ZM_FLAG_SIGNED) && (h->flags & ZM_FLAG_MAC_TRAILER)) {
        /* The MAC ends the header frame, the only frame. */
        if (v->body_count != 0 || frames[first].len < used + ZM_MAC_SIZE)
            return ZM_E_MAC_FRAME;
        v->trailer = 1;
        v->header_len = frames[first].len - ZM_MAC_SIZE;
        v->tag = frames[first].ptr + v->header_len;
    } else if (h->flags & ZM_FLAG_SIGNED) {
        if (v->body_count < 1 || frames[n - 1].len != ZM_MAC_SIZE)
            return ZM_E_MAC_FRAME;
        v->mac = n - 1;
        v->tag = frames[n - 1].ptr;
        v->body_count--;
    }
    if (h->flags & ZM_FLAG_BODY_INLINE) {
        if (v->body_count != 0)
            return ZM_E_INLINE_BODY;
        v->inline_body = 1;
        v->body.ptr = frames[first].ptr + used;
        v->body.len = v->header_len - used;
    } else if (used != v->header_len) {
        return ZM_E_SEGMENT_SIZE; /* bytes after the header, not announced */
    }
    if (h->version != ZM_WIRE_VERSION)
        return ZM_E_VERSION;
    if (h->kind > ZM_KIND_MAX)
        return ZM_E_KIND;
    return ZM_OK;
}
