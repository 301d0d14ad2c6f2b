/* zm_wire.c - reader and writer of the zmicro wire header (see zm_wire.h).
 *
 * Cap'n Proto encoding, in the few forms we use (capnproto.org/encoding.html):
 *   message  = segment table (u32 count-1, u32 size in words, padding to 8)
 *              followed by the segment's words.
 *   pointer  = one little-endian 64-bit word, bits 0-1 its type:
 *     0 struct: bits 2-31 signed offset (words, from the end of the pointer),
 *               32-47 data words, 48-63 pointer count;
 *     1 list:   bits 2-31 offset, 32-34 element size, 35-63 element count
 *               (for inline-composite lists, size 7, the count is in words
 *               and the target starts with a tag word shaped like a struct
 *               pointer whose offset field holds the element count);
 *     2 far, 3 other (capabilities): refused here.
 *   A pointer that is all zero is null: the field has its default.
 */
#include "zm_wire.h"

/* ========================================================================
 * Layout of Header v1, as the Cap'n Proto compiler lays out wire.capnp.
 * tests/wire/test_pycapnp.py (test_layout_matches_compiled_schema) checks
 * these against pycapnp's compiled schema.
 * ======================================================================== */
#define H_DATA_WORDS 9
#define H_PTR_COUNT 7

#define H_OFF_VERSION 0    /* UInt16 */
#define H_OFF_KIND 2       /* enum, UInt16 */
#define H_OFF_FLAGS 4      /* UInt32 */
#define H_OFF_REQUEST_ID 8 /* UInt64 */
#define H_OFF_DEADLINE 16  /* UInt64 */
#define H_OFF_STATUS 24    /* UInt16 */
#define H_OFF_KEY_ID 28    /* UInt32 */
#define H_OFF_TIMESTAMP 32 /* UInt64 */
#define H_OFF_TRACE_HI 40  /* UInt64 */
#define H_OFF_TRACE_LO 48  /* UInt64 */
#define H_OFF_SPAN_ID 56   /* UInt64 */
#define H_OFF_MAX_REPLY 64 /* UInt32 (added after version 2 shipped: @18) */

#define H_PTR_CONTENT_TYPE 0
#define H_PTR_SERVICE 1
#define H_PTR_ENDPOINT 2
#define H_PTR_METADATA 3
#define H_PTR_NONCE 4
#define H_PTR_PRINCIPAL 5
#define H_PTR_DETAIL 6

#define E_PTR_KEY 0        /* Entry.key :Text */
#define E_PTR_VALUE 1      /* Entry.value :Data */

#define PTR_STRUCT 0
#define PTR_LIST 1
#define PTR_FAR 2

#define ELEM_BYTE 2
#define ELEM_COMPOSITE 7

/* ========================================================================
 * UTF-8 validation
 * ======================================================================== */

int zm_utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) { /* ASCII runs, eight bytes at a time */
            uint64_t v;
            memcpy(&v, s + i, 8);
            if ((v & 0x8080808080808080ULL) == 0) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF; /* range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c == 0xE0) {
            need = 2, lo = 0xA0; /* no overlongs */
        } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
            need = 2;
        } else if (c == 0xED) {
            need = 2, hi = 0x9F; /* no surrogates */
        } else if (c == 0xF0) {
            need = 3, lo = 0x90; /* no overlongs */
        } else if (c >= 0xF1 && c <= 0xF3) {
            need = 3;
        } else if (c == 0xF4) {
            need = 3, hi = 0x8F; /* nothing above U+10FFFF */
        } else {
            return 0;
        }
        if (n - i - 1 < need)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        i += need + 1;
    }
    return 1;
}

/* ========================================================================
 * Reader
 * ======================================================================== */

typedef struct rd {
    const uint8_t *seg; /* first word of the segment */
    int64_t words;      /* segment size in words */
    int64_t budget;     /* words we may still traverse */
} rd;

ZM_INLINE uint64_t rd_word(const rd *r, int64_t at) {
    return zm_le64(r->seg + 8 * at);
}

/* Signed offset of a struct or list pointer, in words. */
ZM_INLINE int64_t ptr_offset(uint64_t w) {
    return (int64_t)(int32_t)(uint32_t)(w & 0xFFFFFFFCu) / 4;
}

/* Check a target range [target, target+size) and charge it to the budget. */
ZM_INLINE int rd_claim(rd *r, int64_t target, int64_t size) {
    if (target < 0 || target + size > r->words)
        return ZM_E_BOUNDS;
    r->budget -= size;
    if (r->budget < 0)
        return ZM_E_TRAVERSAL;
    return ZM_OK;
}

/* Classify a non-null pointer that must be of kind `want`. */
ZM_INLINE int rd_kind(uint64_t w, unsigned want) {
    unsigned kind = (unsigned)(w & 3);
    if (kind == want)
        return ZM_OK;
    return kind == PTR_FAR ? ZM_E_FAR_POINTER : ZM_E_POINTER_KIND;
}

/* Read a Text (text=1) or Data (text=0) pointer at word `at`. */
static int rd_blob(rd *r, int64_t at, int text, size_t limit, zm_slice *out) {
    uint64_t w = rd_word(r, at);
    out->ptr = NULL;
    out->len = 0;
    if (w == 0)
        return ZM_OK;
    int rc = rd_kind(w, PTR_LIST);
    if (rc)
        return rc;
    if (((w >> 32) & 7) != ELEM_BYTE)
        return ZM_E_POINTER_KIND;
    int64_t count = (int64_t)(w >> 35);
    int64_t target = at + 1 + ptr_offset(w);
    if ((rc = rd_claim(r, target, (count + 7) / 8)))
        return rc;
    const uint8_t *p = r->seg + 8 * target;
    size_t len = (size_t)count;
    if (text) {
        if (count == 0 || p[count - 1] != 0)
            return ZM_E_TEXT_NUL;
        len--;
        /* A NUL inside a name is never meant: C consumers would cut it. */
        if (len && memchr(p, 0, len) != NULL)
            return ZM_E_TEXT_NUL;
    }
    if (len > limit)
        return ZM_E_TEXT_SIZE;
    if (text && !zm_utf8_valid(p, len))
        return ZM_E_TEXT_UTF8;
    out->ptr = p;
    out->len = len;
    return ZM_OK;
}

/* Read the metadata List(Entry) pointer at word `at`. */
static int rd_metadata(rd *r, int64_t at, zm_header *h) {
    uint64_t w = rd_word(r, at);
    h->n_metadata = 0;
    if (w == 0)
        return ZM_OK;
    int rc = rd_kind(w, PTR_LIST);
    if (rc)
        return rc;
    if (((w >> 32) & 7) != ELEM_COMPOSITE)
        return ZM_E_POINTER_KIND;
    int64_t nwords = (int64_t)(w >> 35);
    int64_t tag_at = at + 1 + ptr_offset(w);
    if ((rc = rd_claim(r, tag_at, 1 + nwords)))
        return rc;
    uint64_t tag = rd_word(r, tag_at);
    if ((tag & 3) != PTR_STRUCT)
        return ZM_E_POINTER_KIND;
    int64_t count = ptr_offset(tag); /* the tag's offset field is the count */
    int64_t edw = (int64_t)((tag >> 32) & 0xFFFF);
    int64_t epc = (int64_t)(tag >> 48);
    if (count < 0 || count * (edw + epc) > nwords)
        return ZM_E_BOUNDS;
    if (count > ZM_WIRE_MAX_METADATA)
        return ZM_E_METADATA_COUNT;
    for (int64_t i = 0; i < count; i++) {
        int64_t ptrs = tag_at + 1 + i * (edw + epc) + edw;
        zm_meta *m = &h->metadata[i];
        m->key.ptr = m->value.ptr = NULL;
        m->key.len = m->value.len = 0;
        if (epc > E_PTR_KEY &&
            (rc = rd_blob(r, ptrs + E_PTR_KEY, 1, ZM_WIRE_MAX_NAME, &m->key)))
            return rc;
        if (epc > E_PTR_VALUE &&
            (rc = rd_blob(r, ptrs + E_PTR_VALUE, 0, ZM_WIRE_MAX_VALUE, &m->value)))
            return rc;
        if (m->key.len == 0)
            return ZM_E_METADATA_KEY;
    }
    h->n_metadata = (uint32_t)count;
    return ZM_OK;
}

/* Keys must be unique: a proxy that reads the first of two "authorization"
 * entries and a service that reads the last would disagree. */
static int meta_unique(const zm_meta *m, uint32_t n) {
    for (uint32_t i = 1; i < n; i++)
        for (uint32_t j = 0; j < i; j++)
            if (m[i].key.len == m[j].key.len &&
                memcmp(m[i].key.ptr, m[j].key.ptr, m[i].key.len) == 0)
                return 0;
    return 1;
}

/* A data-section field is present only if the sender's section holds it. */
ZM_INLINE uint64_t rd_field(const uint8_t *data, int64_t dw, int off, int size) {
    if (off + size > dw * 8)
        return 0;
    switch (size) {
    case 2:
        return zm_le16(data + off);
    case 4:
        return zm_le32(data + off);
    default:
        return zm_le64(data + off);
    }
}

static int rd_message(const uint8_t *buf, size_t len, zm_header *h);

int zm_wire_read(const uint8_t *buf, size_t len, zm_header *h) {
    if (len > ZM_WIRE_MAX_HEADER)
        return ZM_E_TOO_BIG;
    if (len < 16)
        return ZM_E_SHORT;
    if (zm_le32(buf) != 0)
        return ZM_E_SEGMENTS;
    if ((len & 7) != 0 || (uint64_t)zm_le32(buf + 4) * 8 != len - 8)
        return ZM_E_SEGMENT_SIZE;
    return rd_message(buf, len, h);
}

int zm_wire_read_prefix(const uint8_t *buf, size_t len, zm_header *h, size_t *used) {
    if (len < 16)
        return ZM_E_SHORT;
    if (zm_le32(buf) != 0)
        return ZM_E_SEGMENTS;
    uint64_t size = 8 + (uint64_t)zm_le32(buf + 4) * 8;
    if (size > ZM_WIRE_MAX_HEADER)
        return ZM_E_TOO_BIG;
    if (size < 16 || size > len)
        return ZM_E_SEGMENT_SIZE;
    *used = (size_t)size;
    return rd_message(buf, (size_t)size, h);
}

/* The message in buf[0..len), its segment table already checked. */
static int rd_message(const uint8_t *buf, size_t len, zm_header *h) {
    int rc;
    rd r;
    r.seg = buf + 8;
    r.words = (int64_t)((len - 8) / 8);
    /* Every word but the root pointer, which is never charged: a message
     * without aliasing fits exactly, and the canonical encoding of anything
     * accepted (root pointer + what was charged) is never larger than the
     * input, so a decoded header can always be encoded again. */
    r.budget = r.words - 1;

    memset(h, 0, offsetof(zm_header, metadata));

    uint64_t root = rd_word(&r, 0);
    if (root == 0)
        return ZM_OK; /* null root: every field has its default */
    if ((rc = rd_kind(root, PTR_STRUCT)))
        return rc;
    int64_t dw = (int64_t)((root >> 32) & 0xFFFF);
    int64_t pc = (int64_t)(root >> 48);
    int64_t at = 1 + ptr_offset(root);
    if ((rc = rd_claim(&r, at, dw + pc)))
        return rc;

    const uint8_t *d = r.seg + 8 * at;
    h->version = (uint16_t)rd_field(d, dw, H_OFF_VERSION, 2);
    h->kind = (uint16_t)rd_field(d, dw, H_OFF_KIND, 2);
    h->flags = (uint32_t)rd_field(d, dw, H_OFF_FLAGS, 4);
    h->request_id = rd_field(d, dw, H_OFF_REQUEST_ID, 8);
    h->deadline_us = rd_field(d, dw, H_OFF_DEADLINE, 8);
    h->status = (uint16_t)rd_field(d, dw, H_OFF_STATUS, 2);
    h->key_id = (uint32_t)rd_field(d, dw, H_OFF_KEY_ID, 4);
    h->timestamp_us = rd_field(d, dw, H_OFF_TIMESTAMP, 8);
    h->trace_hi = rd_field(d, dw, H_OFF_TRACE_HI, 8);
    h->trace_lo = rd_field(d, dw, H_OFF_TRACE_LO, 8);
    h->span_id = rd_field(d, dw, H_OFF_SPAN_ID, 8);
    h->max_reply = (uint32_t)rd_field(d, dw, H_OFF_MAX_REPLY, 4);

    int64_t p = at + dw; /* first pointer */
#define BLOB(idx, text, limit, field)                                  \
    if (pc > (idx) && (rc = rd_blob(&r, p + (idx), text, limit, field))) \
        return rc;
    BLOB(H_PTR_CONTENT_TYPE, 1, ZM_WIRE_MAX_NAME, &h->content_type)
    BLOB(H_PTR_SERVICE, 1, ZM_WIRE_MAX_NAME, &h->service)
    BLOB(H_PTR_ENDPOINT, 1, ZM_WIRE_MAX_NAME, &h->endpoint)
    BLOB(H_PTR_NONCE, 0, ZM_WIRE_MAX_VALUE, &h->nonce)
    BLOB(H_PTR_PRINCIPAL, 1, ZM_WIRE_MAX_NAME, &h->principal)
    BLOB(H_PTR_DETAIL, 1, ZM_WIRE_MAX_VALUE, &h->detail)
#undef BLOB
    if (pc > H_PTR_METADATA && (rc = rd_metadata(&r, p + H_PTR_METADATA, h)))
        return rc;
    if (!meta_unique(h->metadata, h->n_metadata))
        return ZM_E_METADATA_KEY;
    return ZM_OK;
}

/* ========================================================================
 * Writer
 * ======================================================================== */

/* Words of a Text (text=1) or Data (text=0) blob; empty ones are null. */
ZM_INLINE size_t blob_words(size_t len, int text) {
    return len ? (len + (size_t)text + 7) / 8 : 0;
}

/* The data words of the root struct, in wire order. */
static void data_words(const zm_header *h, uint64_t w[H_DATA_WORDS]) {
    w[0] = (uint64_t)h->version | ((uint64_t)h->kind << 16) | ((uint64_t)h->flags << 32);
    w[1] = h->request_id;
    w[2] = h->deadline_us;
    w[3] = (uint64_t)h->status | ((uint64_t)h->key_id << 32);
    w[4] = h->timestamp_us;
    w[5] = h->trace_hi;
    w[6] = h->trace_lo;
    w[7] = h->span_id;
    w[8] = h->max_reply;
}

/* Canonical sizes: trailing zero data words and null pointers dropped. */
typedef struct wr_shape {
    uint64_t data[H_DATA_WORDS];
    zm_slice ptr[H_PTR_COUNT]; /* blob of each pointer (metadata: unused) */
    int text[H_PTR_COUNT];
    size_t dw, pc;
    size_t meta_pc; /* pointers per Entry: 1 if every value is empty */
    size_t words;   /* segment size */
} wr_shape;

static void wr_layout(const zm_header *h, wr_shape *s) {
    data_words(h, s->data);
    s->dw = H_DATA_WORDS;
    while (s->dw > 0 && s->data[s->dw - 1] == 0)
        s->dw--;

    s->ptr[H_PTR_CONTENT_TYPE] = h->content_type;
    s->ptr[H_PTR_SERVICE] = h->service;
    s->ptr[H_PTR_ENDPOINT] = h->endpoint;
    s->ptr[H_PTR_METADATA].ptr = NULL;
    s->ptr[H_PTR_METADATA].len = h->n_metadata; /* non-zero = present */
    s->ptr[H_PTR_NONCE] = h->nonce;
    s->ptr[H_PTR_PRINCIPAL] = h->principal;
    s->ptr[H_PTR_DETAIL] = h->detail;
    for (int i = 0; i < H_PTR_COUNT; i++)
        s->text[i] = i != H_PTR_NONCE;
    s->pc = H_PTR_COUNT;
    while (s->pc > 0 && s->ptr[s->pc - 1].len == 0)
        s->pc--;

    s->meta_pc = 1;
    size_t words = 1 + s->dw + s->pc; /* root pointer + struct */
    for (size_t i = 0; i < s->pc; i++)
        if (i != H_PTR_METADATA)
            words += blob_words(s->ptr[i].len, s->text[i]);
    if (h->n_metadata) {
        for (uint32_t i = 0; i < h->n_metadata; i++)
            if (h->metadata[i].value.len)
                s->meta_pc = 2;
        words += 1 + (size_t)h->n_metadata * s->meta_pc; /* tag + elements */
        for (uint32_t i = 0; i < h->n_metadata; i++)
            words += blob_words(h->metadata[i].key.len, 1) +
                     blob_words(h->metadata[i].value.len, 0);
    }
    s->words = words;
}

size_t zm_wire_size(const zm_header *h) {
    wr_shape s;
    if (h->n_metadata > ZM_WIRE_MAX_METADATA)
        return (size_t)-1;
    wr_layout(h, &s);
    return 8 + 8 * s.words;
}

static int wr_check_text(zm_slice t, size_t limit, unsigned flags) {
    if (t.len > limit)
        return ZM_E_TEXT_SIZE;
    if (t.len && memchr(t.ptr, 0, t.len) != NULL)
        return ZM_E_TEXT_NUL;
    if (!(flags & ZM_WIRE_TRUSTED_UTF8) && !zm_utf8_valid(t.ptr, t.len))
        return ZM_E_TEXT_UTF8;
    return ZM_OK;
}

static int wr_validate(const zm_header *h, unsigned flags) {
    int rc;
    if ((rc = wr_check_text(h->content_type, ZM_WIRE_MAX_NAME, flags)) ||
        (rc = wr_check_text(h->service, ZM_WIRE_MAX_NAME, flags)) ||
        (rc = wr_check_text(h->endpoint, ZM_WIRE_MAX_NAME, flags)) ||
        (rc = wr_check_text(h->principal, ZM_WIRE_MAX_NAME, flags)) ||
        (rc = wr_check_text(h->detail, ZM_WIRE_MAX_VALUE, flags)))
        return rc;
    if (h->nonce.len > ZM_WIRE_MAX_VALUE)
        return ZM_E_TEXT_SIZE;
    if (h->n_metadata > ZM_WIRE_MAX_METADATA)
        return ZM_E_METADATA_COUNT;
    for (uint32_t i = 0; i < h->n_metadata; i++) {
        if (h->metadata[i].key.len == 0)
            return ZM_E_METADATA_KEY;
        if ((rc = wr_check_text(h->metadata[i].key, ZM_WIRE_MAX_NAME, flags)))
            return rc;
        if (h->metadata[i].value.len > ZM_WIRE_MAX_VALUE)
            return ZM_E_TEXT_SIZE;
    }
    if (!meta_unique(h->metadata, h->n_metadata))
        return ZM_E_METADATA_KEY;
    return ZM_OK;
}

/* Pointer words, from the pointer's own index `at` to its target. */
ZM_INLINE uint64_t ptr_struct(size_t at, size_t target, size_t dw, size_t pc) {
    uint64_t off = (uint64_t)(uint32_t)((int32_t)(target - at - 1) * 4);
    return off | ((uint64_t)dw << 32) | ((uint64_t)pc << 48);
}

ZM_INLINE uint64_t ptr_list(size_t at, size_t target, unsigned esz, size_t count) {
    uint64_t off = (uint64_t)(uint32_t)((int32_t)(target - at - 1) * 4);
    return off | PTR_LIST | ((uint64_t)esz << 32) | ((uint64_t)count << 35);
}

/* Append a blob after `*next` and point word `at` to it. */
static void wr_blob(uint8_t *seg, size_t at, size_t *next, zm_slice b, int text) {
    if (b.len == 0)
        return; /* null pointer; the buffer is already zeroed */
    zm_put64(seg + 8 * at, ptr_list(at, *next, ELEM_BYTE, b.len + (size_t)text));
    memcpy(seg + 8 * *next, b.ptr, b.len); /* NUL and padding: zeroed */
    *next += blob_words(b.len, text);
}

int zm_wire_write(const zm_header *h, uint8_t *out, size_t cap, size_t *written) {
    return zm_wire_write_ex(h, out, cap, written, 0);
}

int zm_wire_write_ex(const zm_header *h, uint8_t *out, size_t cap, size_t *written,
                     unsigned flags) {
    int rc = wr_validate(h, flags);
    if (rc)
        return rc;
    wr_shape s;
    wr_layout(h, &s);
    size_t total = 8 + 8 * s.words;
    if (total > ZM_WIRE_MAX_HEADER)
        return ZM_E_TOO_BIG;
    if (total > cap)
        return ZM_E_BUFFER;
    memset(out, 0, total);
    zm_put32(out + 4, (uint32_t)s.words);
    uint8_t *seg = out + 8;

    /* Root pointer; a zero-sized struct points at itself (offset -1) so
     * that it is not mistaken for a null pointer. */
    if (s.dw == 0 && s.pc == 0)
        zm_put64(seg, 0xFFFFFFFCull);
    else
        zm_put64(seg, ptr_struct(0, 1, s.dw, s.pc));
    for (size_t i = 0; i < s.dw; i++)
        zm_put64(seg + 8 * (1 + i), s.data[i]);

    size_t ptrs = 1 + s.dw;
    size_t next = ptrs + s.pc;
    for (size_t i = 0; i < s.pc; i++) {
        if (i != H_PTR_METADATA) {
            wr_blob(seg, ptrs + i, &next, s.ptr[i], s.text[i]);
            continue;
        }
        if (h->n_metadata == 0)
            continue;
        size_t n = h->n_metadata, epc = s.meta_pc;
        size_t tag = next;
        zm_put64(seg + 8 * (ptrs + i), ptr_list(ptrs + i, tag, ELEM_COMPOSITE, n * epc));
        zm_put64(seg + 8 * tag, ((uint64_t)n << 2) | ((uint64_t)epc << 48));
        next = tag + 1 + n * epc;
        for (size_t k = 0; k < n; k++) { /* preorder: children of each entry */
            size_t e = tag + 1 + k * epc;
            wr_blob(seg, e + E_PTR_KEY, &next, h->metadata[k].key, 1);
            if (epc > E_PTR_VALUE)
                wr_blob(seg, e + E_PTR_VALUE, &next, h->metadata[k].value, 0);
        }
    }
    *written = total;
    return ZM_OK;
}
