/* zm_common.c - error texts for every zm_err code. */
#include "zm_common.h"

const char *zm_strerror(int code) {
    switch (code) {
    case ZM_OK: return "ok";
    case ZM_E_SHORT: return "header shorter than a segment table and root pointer";
    case ZM_E_TOO_BIG: return "header larger than 8192 bytes";
    case ZM_E_SEGMENTS: return "header has more than one segment";
    case ZM_E_SEGMENT_SIZE: return "segment table disagrees with the frame length";
    case ZM_E_FAR_POINTER: return "far pointer in header";
    case ZM_E_POINTER_KIND: return "pointer of the wrong kind in header";
    case ZM_E_BOUNDS: return "pointer outside the header segment";
    case ZM_E_TRAVERSAL: return "header pointers exceed the traversal budget";
    case ZM_E_TEXT_NUL: return "text not NUL-terminated, or with a NUL inside";
    case ZM_E_TEXT_UTF8: return "text not valid UTF-8";
    case ZM_E_TEXT_SIZE: return "text or data field over its size limit (names and metadata keys: 255 bytes; metadata values, detail: 4096)";
    case ZM_E_METADATA_COUNT: return "too many metadata entries (at most 64)";
    case ZM_E_METADATA_KEY: return "empty or duplicate metadata key";
    case ZM_E_BUFFER: return "output buffer too small";
    case ZM_E_NO_HEADER: return "message has no header frame";
    case ZM_E_FRAME_COUNT: return "message has too many frames (at most 16 after the routing id)";
    case ZM_E_VERSION: return "unsupported protocol version";
    case ZM_E_KIND: return "unknown message kind";
    case ZM_E_MAC_FRAME: return "signed message without a 32-byte MAC frame";
    case ZM_E_ROUTING_ID: return "empty routing id";
    case ZM_E_INLINE_BODY: return "inline body and body frames in one message";
    case ZM_E_MAC_ALG: return "unknown MAC algorithm";
    case ZM_E_MAC_KEY: return "MAC key must be 16 to 64 bytes";
    case ZM_E_MAC_MISMATCH: return "MAC does not verify";
    case ZM_E_MAC_API: return "MAC primitives unavailable";
    case ZM_E_REPLAY: return "nonce seen before (replay)";
    case ZM_E_REPLAY_FULL: return "nonce cache full";
    case ZM_E_NOMEM: return "out of memory";
    default: return "unknown error";
    }
}
