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
    if (h->flags & ZM_FLAG_SIGNED) {
        if (v->body_count < 1 || frames[n - 1].len != ZM_MAC_SIZE)
            return ZM_E_MAC_FRAME;
        v->mac = n - 1;
        v->body_count--;
    }
    if (h->flags & ZM_FLAG_BODY_INLINE) {
        if (v->body_count != 0)
            return ZM_E_INLINE_BODY;
        v->inline_body = 1;
        v->body.ptr = frames[first].ptr + used;
        v->body.len = frames[first].len - used;
    } else if (used != frames[first].len) {
        return ZM_E_SEGMENT_SIZE; /* bytes after the header, not announced */
    }
    if (h->version == 0 || h->version > ZM_WIRE_VERSION)
        return ZM_E_VERSION;
    if (h->kind > ZM_KIND_MAX)
        return ZM_E_KIND;
    return ZM_OK;
}
