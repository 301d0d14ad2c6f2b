/* fuzz_header.c - libFuzzer harness for the wire header codec (src/zm_wire.c).
 *
 * Every input is used twice:
 *
 * 1. As wire bytes for zm_wire_read. A header the reader accepts must survive
 *    a round trip: its canonical encoding (zm_wire_write) must read back to
 *    the same values, be exactly zm_wire_size bytes long, and be a fixed
 *    point (writing the re-read header gives the same bytes). The reader
 *    accepts non-canonical layouts, so the first comparison is of decoded
 *    values, never of the input bytes.
 *
 * 2. As a recipe for a zm_header built field by field (build_header), which
 *    reaches the writer's validation with values no reader would produce:
 *    invalid UTF-8, over-long fields, empty or duplicate keys, too many
 *    entries. The writer must accept exactly the headers an independent
 *    check of the documented limits accepts, and what it writes must read
 *    back to the same values.
 *
 * Any broken invariant calls abort() after printing why, so libFuzzer saves
 * the input as a crash artifact.
 *
 * Build: clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined
 *        -fno-sanitize-recover=undefined -Isrc fuzz/fuzz_header.c src/(all .c)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zm_wire.h"

#define FAIL(...)                                                  \
    do {                                                           \
        fprintf(stderr, "fuzz_header: %s:%d: ", __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                              \
        fputc('\n', stderr);                                       \
        abort();                                                   \
    } while (0)

/* ------------------------------------------------------------------------
 * Reference UTF-8 check. Written differently from zm_utf8_valid on purpose
 * (decode each code point, then reject overlongs, surrogates and values
 * above U+10FFFF) so that the two disagree if either is wrong, including
 * the reader's eight-bytes-at-a-time ASCII shortcut.
 * ------------------------------------------------------------------------ */
static int ref_utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t c = s[i];
        size_t extra;
        uint32_t min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            extra = 1, min = 0x80, c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            extra = 2, min = 0x800, c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            extra = 3, min = 0x10000, c &= 0x07;
        } else {
            return 0;
        }
        if (n - i <= extra)
            return 0;
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            c = (c << 6) | (s[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return 0;
        i += extra + 1;
    }
    return 1;
}

/* ------------------------------------------------------------------------
 * Comparisons of decoded headers
 * ------------------------------------------------------------------------ */
static int slice_eq(zm_slice a, zm_slice b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* Fail unless every field of *a and *b is equal; `what` names the pair. */
static void header_eq(const zm_header *a, const zm_header *b, const char *what) {
#define SCALAR(f)                                                          \
    if (a->f != b->f)                                                      \
        FAIL("%s: " #f " differs: %llu != %llu", what,                     \
             (unsigned long long)a->f, (unsigned long long)b->f);
    SCALAR(version)
    SCALAR(kind)
    SCALAR(flags)
    SCALAR(request_id)
    SCALAR(deadline_us)
    SCALAR(status)
    SCALAR(key_id)
    SCALAR(timestamp_us)
    SCALAR(trace_hi)
    SCALAR(trace_lo)
    SCALAR(span_id)
    SCALAR(max_reply)
    SCALAR(n_metadata)
#undef SCALAR
#define SLICE(f)                  \
    if (!slice_eq(a->f, b->f))    \
        FAIL("%s: " #f " differs (len %zu vs %zu)", what, a->f.len, b->f.len);
    SLICE(content_type)
    SLICE(service)
    SLICE(endpoint)
    SLICE(nonce)
    SLICE(principal)
    SLICE(detail)
#undef SLICE
    for (uint32_t i = 0; i < a->n_metadata; i++) {
        if (!slice_eq(a->metadata[i].key, b->metadata[i].key))
            FAIL("%s: metadata[%u].key differs", what, i);
        if (!slice_eq(a->metadata[i].value, b->metadata[i].value))
            FAIL("%s: metadata[%u].value differs", what, i);
    }
}

/* The reader's slices borrow from its input: each must lie inside it. */
static void slices_inside(const zm_header *h, const uint8_t *buf, size_t len,
                          const char *what) {
    const zm_slice *s[6] = {&h->content_type, &h->service, &h->endpoint,
                            &h->nonce, &h->principal, &h->detail};
    for (int i = 0; i < 6; i++)
        if (s[i]->len && (s[i]->ptr < buf || s[i]->len > len ||
                          (size_t)(s[i]->ptr - buf) > len - s[i]->len))
            FAIL("%s: slice %d outside the input", what, i);
    for (uint32_t i = 0; i < h->n_metadata; i++) {
        zm_slice k = h->metadata[i].key, v = h->metadata[i].value;
        if (k.len == 0 || k.ptr < buf || k.len > len ||
            (size_t)(k.ptr - buf) > len - k.len)
            FAIL("%s: metadata[%u].key empty or outside the input", what, i);
        if (v.len && (v.ptr < buf || v.len > len ||
                      (size_t)(v.ptr - buf) > len - v.len))
            FAIL("%s: metadata[%u].value outside the input", what, i);
    }
}

/* Write *h into a buffer of exactly zm_wire_size bytes, after checking that
 * a buffer one byte shorter is refused. Both are malloc'd to size so that
 * ASan catches a write past either. Returns the encoding (caller frees), or
 * NULL with *rc set when the writer refuses. */
static uint8_t *encode(const zm_header *h, size_t *len, int *rc) {
    size_t size = zm_wire_size(h), written = 0;
    if (size > ZM_WIRE_MAX_HEADER) {
        /* Over the limit: the writer must refuse before touching `out`. */
        *rc = zm_wire_write(h, NULL, 0, &written);
        if (*rc == ZM_OK)
            FAIL("writer accepted a %zu-byte header", size);
        return NULL;
    }
    uint8_t *small = malloc(size - 1);
    int rc_small = zm_wire_write(h, small, size - 1, &written);
    free(small);
    if (rc_small == ZM_OK)
        FAIL("writer fit %zu bytes into %zu", size, size - 1);

    uint8_t *out = malloc(size);
    *rc = zm_wire_write(h, out, size, &written);
    if (*rc != ZM_OK) {
        if (rc_small != *rc)
            FAIL("writer refused with %d for a short buffer, %d for a full one",
                 rc_small, *rc);
        free(out);
        return NULL;
    }
    if (rc_small != ZM_E_BUFFER)
        FAIL("short buffer: expected ZM_E_BUFFER, got %d", rc_small);
    if (written != size)
        FAIL("wrote %zu bytes, zm_wire_size said %zu", written, size);
    *len = written;
    return out;
}

/* Round trip of a header the writer accepted: read back, compare values,
 * write again and compare bytes. */
static void check_canonical(const zm_header *h, const uint8_t *enc,
                            size_t len, const char *what) {
    static zm_header back, back2;
    int rc = zm_wire_read(enc, len, &back);
    if (rc != ZM_OK)
        FAIL("%s: reader refused the writer's output: %d (%s)", what, rc,
             zm_strerror(rc));
    slices_inside(&back, enc, len, what);
    header_eq(h, &back, what);

    size_t len2 = 0;
    uint8_t *enc2 = encode(&back, &len2, &rc);
    if (!enc2)
        FAIL("%s: writer refused a re-read header: %d (%s)", what, rc,
             zm_strerror(rc));
    if (len2 != len || memcmp(enc, enc2, len) != 0)
        FAIL("%s: canonical encoding is not a fixed point", what);
    rc = zm_wire_read(enc2, len2, &back2);
    if (rc != ZM_OK)
        FAIL("%s: second re-read failed: %d", what, rc);
    header_eq(&back, &back2, what);
    free(enc2);
}

/* ------------------------------------------------------------------------
 * Mode 1: the input as wire bytes
 * ------------------------------------------------------------------------ */
static void fuzz_read(const uint8_t *data, size_t size) {
    static zm_header h;
    int rc = zm_wire_read(data, size, &h);
    if (rc != ZM_OK)
        return;
    slices_inside(&h, data, size, "read");

    size_t len = 0;
    uint8_t *enc = encode(&h, &len, &rc);
    if (!enc)
        FAIL("reader accepted %zu bytes whose canonical encoding (%zu bytes) "
             "the writer refuses: %d (%s)",
             size, zm_wire_size(&h), rc, zm_strerror(rc));
    /* The traversal budget guarantees this (zm_wire_read): what decodes can
     * be re-encoded, by a proxy say, within the same limit. */
    if (len > size)
        FAIL("canonical encoding (%zu bytes) larger than the input (%zu)", len, size);
    check_canonical(&h, enc, len, "read round trip");
    free(enc);
}

/* ------------------------------------------------------------------------
 * Mode 2: the input as a recipe for a zm_header
 * ------------------------------------------------------------------------ */
typedef struct cursor {
    const uint8_t *p;
    size_t n;
} cursor;

static uint64_t take_uint(cursor *c, size_t bytes) {
    uint64_t v = 0;
    for (size_t i = 0; i < bytes && c->n; i++, c->p++, c->n--)
        v |= (uint64_t)*c->p << (8 * i);
    return v;
}

/* A slice of the input whose length comes from the input: mostly short,
 * sometimes around the 255 and 4096 limits. */
static zm_slice take_slice(cursor *c) {
    uint64_t sel = take_uint(c, 1);
    size_t len;
    if (sel < 0xF0)
        len = sel & 0x3F;
    else if (sel < 0xF8)
        len = 250 + (size_t)take_uint(c, 1) % 12;
    else
        len = 4090 + (size_t)take_uint(c, 1) % 12;
    zm_slice s = {NULL, 0};
    if (len > c->n)
        len = c->n;
    if (len) {
        s.ptr = c->p;
        s.len = len;
        c->p += len;
        c->n -= len;
    }
    return s;
}

static void build_header(cursor *c, zm_header *h) {
    h->version = (uint16_t)take_uint(c, 2);
    h->kind = (uint16_t)take_uint(c, 2);
    h->flags = (uint32_t)take_uint(c, 4);
    /* Sparse 64-bit fields so that canonical truncation of trailing zero
     * data words is exercised, not only full eight-word sections. */
    uint64_t present = take_uint(c, 1);
    uint64_t *wide[7] = {&h->request_id, &h->deadline_us, &h->timestamp_us,
                         &h->trace_hi, &h->trace_lo, &h->span_id, NULL};
    for (int i = 0; wide[i]; i++)
        *wide[i] = (present >> i) & 1 ? take_uint(c, 8) : 0;
    h->status = (present >> 6) & 1 ? (uint16_t)take_uint(c, 2) : 0;
    h->key_id = (present >> 7) & 1 ? (uint32_t)take_uint(c, 4) : 0;
    h->max_reply = take_uint(c, 1) & 1 ? (uint32_t)take_uint(c, 4) : 0; /* the ninth word */
    h->content_type = take_slice(c);
    h->service = take_slice(c);
    h->endpoint = take_slice(c);
    h->nonce = take_slice(c);
    h->principal = take_slice(c);
    h->detail = take_slice(c);
    /* Up to two entries past the limit, to reach ZM_E_METADATA_COUNT. */
    size_t n = (size_t)take_uint(c, 1) % (ZM_WIRE_MAX_METADATA + 3);
    if (n > ZM_WIRE_MAX_METADATA) {
        h->n_metadata = (uint32_t)n; /* zm_wire_write must refuse it */
        return;
    }
    h->n_metadata = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        h->metadata[i].key = take_slice(c);
        h->metadata[i].value = take_slice(c);
    }
}

static int ok_text(zm_slice s, size_t limit) {
    return s.len <= limit && ref_utf8_valid(s.ptr, s.len) &&
           (s.len == 0 || memchr(s.ptr, 0, s.len) == NULL);
}

/* Words a blob takes in the canonical layout (zm_wire.h: empty = null). */
static size_t ref_blob_words(size_t len, int text) {
    return len == 0 ? 0 : (len + (text ? 1 : 0) + 7) / 8;
}

/* The canonical size, recomputed from zm_wire.h's description rather than
 * from zm_wire.c's layout code. */
static size_t ref_size(const zm_header *h) {
    uint64_t data[9] = {
        h->version | (uint64_t)h->kind << 16 | (uint64_t)h->flags << 32,
        h->request_id, h->deadline_us,
        h->status | (uint64_t)h->key_id << 32,
        h->timestamp_us, h->trace_hi, h->trace_lo, h->span_id, h->max_reply};
    size_t dw = 9;
    while (dw && data[dw - 1] == 0)
        dw--;
    /* Pointer order: contentType service endpoint metadata nonce principal
     * detail (wire.capnp ordinals 11-17). */
    size_t lens[7] = {h->content_type.len, h->service.len, h->endpoint.len,
                      h->n_metadata,       h->nonce.len,   h->principal.len,
                      h->detail.len};
    size_t pc = 7;
    while (pc && lens[pc - 1] == 0)
        pc--;
    size_t words = 1 + dw + pc;
    for (size_t i = 0; i < pc; i++)
        if (i != 3)
            words += ref_blob_words(lens[i], i != 4);
    if (h->n_metadata) {
        size_t epc = 1;
        for (uint32_t i = 0; i < h->n_metadata; i++)
            if (h->metadata[i].value.len)
                epc = 2;
        words += 1 + h->n_metadata * epc;
        for (uint32_t i = 0; i < h->n_metadata; i++)
            words += ref_blob_words(h->metadata[i].key.len, 1) +
                     ref_blob_words(h->metadata[i].value.len, 0);
    }
    return 8 + 8 * words;
}

/* Whether the documented limits (zm_wire.h, wire.capnp) allow *h. */
static int ref_writable(const zm_header *h) {
    if (!ok_text(h->content_type, ZM_WIRE_MAX_NAME) ||
        !ok_text(h->service, ZM_WIRE_MAX_NAME) ||
        !ok_text(h->endpoint, ZM_WIRE_MAX_NAME) ||
        !ok_text(h->principal, ZM_WIRE_MAX_NAME) ||
        !ok_text(h->detail, ZM_WIRE_MAX_VALUE) ||
        h->nonce.len > ZM_WIRE_MAX_VALUE ||
        h->n_metadata > ZM_WIRE_MAX_METADATA)
        return 0;
    for (uint32_t i = 0; i < h->n_metadata; i++) {
        const zm_meta *m = &h->metadata[i];
        if (m->key.len == 0 || !ok_text(m->key, ZM_WIRE_MAX_NAME) ||
            m->value.len > ZM_WIRE_MAX_VALUE)
            return 0;
        for (uint32_t j = 0; j < i; j++)
            if (slice_eq(m->key, h->metadata[j].key))
                return 0;
    }
    return ref_size(h) <= ZM_WIRE_MAX_HEADER;
}

static void fuzz_write(const uint8_t *data, size_t size) {
    static zm_header h;
    cursor c = {data, size};
    memset(&h, 0, sizeof h);
    build_header(&c, &h);

    int expect = ref_writable(&h);
    if (h.n_metadata <= ZM_WIRE_MAX_METADATA && zm_wire_size(&h) != ref_size(&h))
        FAIL("zm_wire_size %zu, expected %zu", zm_wire_size(&h), ref_size(&h));

    size_t len = 0;
    int rc;
    uint8_t *enc = encode(&h, &len, &rc);
    if (!enc) {
        if (expect)
            FAIL("writer refused a valid header: %d (%s)", rc, zm_strerror(rc));
        if (rc == ZM_OK || rc == ZM_E_BUFFER)
            FAIL("writer refused an invalid header with code %d", rc);
        return;
    }
    if (!expect)
        FAIL("writer accepted a header outside the limits");
    check_canonical(&h, enc, len, "write round trip");
    free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* The reader's UTF-8 check against the reference, on arbitrary bytes. */
    if (zm_utf8_valid(data, size) != ref_utf8_valid(data, size))
        FAIL("zm_utf8_valid says %d for %zu bytes", zm_utf8_valid(data, size),
             size);
    fuzz_read(data, size);
    fuzz_write(data, size);
    return 0;
}
