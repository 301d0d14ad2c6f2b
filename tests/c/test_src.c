/* test_src.c - src/ on its own: built with only libc, strict warnings and
 * (where the compiler has them) ASan + UBSan, by tests/c/test_c.py. The
 * MAC itself needs libsodium and is covered by the Python tests and the
 * fuzzers; its constant-time compare is here. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zm_frame.h"
#include "zm_hash.h"
#include "zm_mac.h"
#include "zm_replay.h"
#include "zm_wire.h"

static int failures;

#define CHECK(cond)                                                   \
    do {                                                              \
        if (!(cond)) {                                                \
            fprintf(stderr, "%s:%d: CHECK(%s)\n", __FILE__, __LINE__, #cond); \
            failures++;                                               \
        }                                                             \
    } while (0)

static zm_slice S(const char *s) {
    zm_slice out = {(const uint8_t *)s, strlen(s)};
    return out;
}

static int eq(zm_slice a, zm_slice b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void test_roundtrip(void) {
    zm_header h, r;
    memset(&h, 0, sizeof h);
    h.version = ZM_WIRE_VERSION;
    h.kind = ZM_KIND_REQUEST;
    h.request_id = 0x0102030405060708ull;
    h.deadline_us = 1500000;
    h.key_id = 7;
    h.trace_hi = 1;
    h.span_id = 2;
    h.max_reply = 65536;
    h.service = S("greeter");
    h.endpoint = S("Greeter.Hello");
    h.content_type = S("application/msgpack");
    h.nonce = S("0123456789abcdef");
    h.n_metadata = 2;
    h.metadata[0].key = S("traceparent");
    h.metadata[0].value = S("00-abc");
    h.metadata[1].key = S("empty");

    uint8_t buf[ZM_WIRE_MAX_HEADER];
    size_t n = 0;
    CHECK(zm_wire_write(&h, buf, sizeof buf, &n) == ZM_OK);
    CHECK(n == zm_wire_size(&h));
    CHECK(n % 8 == 0);
    CHECK(zm_wire_read(buf, n, &r) == ZM_OK);
    CHECK(r.version == h.version && r.kind == h.kind);
    CHECK(r.request_id == h.request_id && r.deadline_us == h.deadline_us);
    CHECK(r.key_id == 7 && r.trace_hi == 1 && r.trace_lo == 0 && r.span_id == 2);
    CHECK(r.max_reply == 65536);
    CHECK(eq(r.service, h.service) && eq(r.endpoint, h.endpoint));
    CHECK(eq(r.content_type, h.content_type) && eq(r.nonce, h.nonce));
    CHECK(r.principal.len == 0 && r.detail.len == 0);
    CHECK(r.n_metadata == 2);
    CHECK(eq(r.metadata[0].key, h.metadata[0].key) && eq(r.metadata[0].value, h.metadata[0].value));
    CHECK(eq(r.metadata[1].key, h.metadata[1].key) && r.metadata[1].value.len == 0);

    /* Too small a buffer is an error, not an overflow. */
    CHECK(zm_wire_write(&h, buf, n - 8, &n) == ZM_E_BUFFER);

    /* Every strict prefix of a valid header is refused. */
    for (size_t cut = 0; cut < n; cut++)
        CHECK(zm_wire_read(buf, cut, &r) != ZM_OK);
}

static void test_writer_limits(void) {
    zm_header h;
    uint8_t buf[ZM_WIRE_MAX_HEADER];
    size_t n;
    char name[ZM_WIRE_MAX_NAME + 2];
    memset(&h, 0, sizeof h);
    memset(name, 'x', sizeof name - 1);
    name[sizeof name - 1] = 0;
    h.service = S(name);
    CHECK(zm_wire_write(&h, buf, sizeof buf, &n) == ZM_E_TEXT_SIZE);
    h.service.len = ZM_WIRE_MAX_NAME;
    CHECK(zm_wire_write(&h, buf, sizeof buf, &n) == ZM_OK);
    h.service = S("\xff");
    CHECK(zm_wire_write(&h, buf, sizeof buf, &n) == ZM_E_TEXT_UTF8);
    h.service = S("ok");
    h.n_metadata = 2;
    h.metadata[0].key = S("dup");
    h.metadata[1].key = S("dup");
    CHECK(zm_wire_write(&h, buf, sizeof buf, &n) == ZM_E_METADATA_KEY);
    h.n_metadata = ZM_WIRE_MAX_METADATA + 1;
    CHECK(zm_wire_write(&h, buf, sizeof buf, &n) == ZM_E_METADATA_COUNT);
    CHECK(zm_wire_size(&h) == (size_t)-1);
}

static void test_frames(void) {
    zm_header h, r;
    zm_frame_view v;
    uint8_t buf[256];
    size_t n;
    memset(&h, 0, sizeof h);
    h.version = ZM_WIRE_VERSION;
    h.flags = ZM_FLAG_SIGNED;
    CHECK(zm_wire_write(&h, buf, sizeof buf, &n) == ZM_OK);
    uint8_t mac[ZM_MAC_SIZE] = {0};
    zm_slice frames[4] = {S("peer"), {buf, n}, S("body"), {mac, sizeof mac}};
    CHECK(zm_frame_parse(frames, 4, 1, &r, &v) == ZM_OK);
    CHECK(v.routing == 0 && v.header == 1 && v.body_first == 2 && v.body_count == 1 && v.mac == 3);
    CHECK(zm_frame_parse(frames + 1, 3, 0, &r, &v) == ZM_OK);
    CHECK(v.routing == -1 && v.header == 0 && v.body_count == 1 && v.mac == 2);
    CHECK(zm_frame_parse(frames + 1, 1, 0, &r, &v) == ZM_E_MAC_FRAME);
    CHECK(zm_frame_parse(frames, 0, 0, &r, &v) == ZM_E_NO_HEADER);

    /* An inline body: the bytes after the header message in its frame. */
    uint8_t frame[256 + 5];
    h.flags = ZM_FLAG_BODY_INLINE;
    CHECK(zm_wire_write(&h, frame, sizeof frame, &n) == ZM_OK);
    memcpy(frame + n, "hello", 5);
    zm_slice one[1] = {{frame, n + 5}};
    CHECK(zm_frame_parse(one, 1, 0, &r, &v) == ZM_OK);
    CHECK(v.inline_body == 1 && v.body.len == 5 && memcmp(v.body.ptr, "hello", 5) == 0);
    CHECK(v.body_count == 0);
    zm_slice two[2] = {{frame, n + 5}, S("extra")};
    CHECK(zm_frame_parse(two, 2, 0, &r, &v) == ZM_E_INLINE_BODY);
    h.flags = 0;  /* the same bytes without the flag: trailing garbage */
    CHECK(zm_wire_write(&h, frame, sizeof frame, &n) == ZM_OK);
    zm_slice trailing[1] = {{frame, n + 5}};
    CHECK(zm_frame_parse(trailing, 1, 0, &r, &v) == ZM_E_SEGMENT_SIZE);
}

static void test_strerror(void) {
    static const int codes[] = {
        ZM_E_SHORT, ZM_E_TOO_BIG, ZM_E_SEGMENTS, ZM_E_SEGMENT_SIZE, ZM_E_FAR_POINTER,
        ZM_E_POINTER_KIND, ZM_E_BOUNDS, ZM_E_TRAVERSAL, ZM_E_TEXT_NUL, ZM_E_TEXT_UTF8,
        ZM_E_TEXT_SIZE, ZM_E_METADATA_COUNT, ZM_E_METADATA_KEY, ZM_E_BUFFER,
        ZM_E_NO_HEADER, ZM_E_FRAME_COUNT, ZM_E_VERSION, ZM_E_KIND, ZM_E_MAC_FRAME,
        ZM_E_ROUTING_ID, ZM_E_INLINE_BODY, ZM_E_MAC_ALG, ZM_E_MAC_KEY, ZM_E_MAC_MISMATCH, ZM_E_MAC_API};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        CHECK(strcmp(zm_strerror(codes[i]), "unknown error") != 0);
    CHECK(strcmp(zm_strerror(999), "unknown error") == 0);
}

static void test_hash_ring(void) {
    zm_ring_point ring[64];
    size_t n = 0;
    CHECK(zm_hash64("node-a", 6) == zm_hash64("node-a", 6));
    CHECK(zm_hash64("node-a", 6) != zm_hash64("node-b", 6));
    CHECK(zm_hash64("", 0) != zm_hash64("\0", 1));
    CHECK(zm_hash64(NULL, 0) == zm_hash64("", 0));
    for (uint32_t m = 0; m < 4; m++) {
        uint64_t h = zm_hash64(&m, sizeof m);
        for (uint32_t r = 0; r < 16; r++, n++) {
            ring[n].point = zm_ring_vpoint(h, r);
            ring[n].member = m;
            ring[n].replica = r;
        }
    }
    CHECK(zm_ring_sort(ring, n) == 0);
    for (size_t i = 1; i < n; i++)
        CHECK(ring[i - 1].point <= ring[i].point);
    {
        /* every bit position matters to the sort: points built to differ
         * in one byte each, in reverse order, come out ascending, and the
         * members travel with their points */
        zm_ring_point small[17];
        for (uint32_t i = 0; i < 17; i++) {
            small[i].point = (i == 16) ? 0 : (uint64_t)1 << (60 - 4 * i);
            small[i].member = i;
            small[i].replica = 0;
        }
        CHECK(zm_ring_sort(small, 17) == 0);
        for (uint32_t i = 0; i < 17; i++)
            CHECK(small[i].member == (i == 0 ? 16 : 16 - i));
    }
    CHECK(zm_ring_find(ring, n, 0) == 0 || ring[0].point == 0);
    CHECK(zm_ring_find(ring, n, ring[5].point) == 5);
    CHECK(zm_ring_find(ring, n, ring[5].point + 1) == 6);
    CHECK(zm_ring_find(ring, n, ring[n - 1].point) == n - 1);
    if (ring[n - 1].point != UINT64_MAX)
        CHECK(zm_ring_find(ring, n, ring[n - 1].point + 1) == 0);  /* wraps */
    CHECK(zm_ring_find(ring, 1, ring[0].point + 1) == 0);
}

static void test_equal32(void) {
    uint8_t a[32], b[32];
    for (int i = 0; i < 32; i++)
        a[i] = b[i] = (uint8_t)(i * 37 + 1);
    CHECK(zm_equal32(a, b) == 1);
    for (int i = 0; i < 32; i++) /* any bit of any byte */
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (uint8_t)(1u << bit);
            CHECK(zm_equal32(a, b) == 0);
            b[i] ^= (uint8_t)(1u << bit);
        }
}

static void test_replay_set(void) {
    /* One set for every principal: a nonce seen from one owner is a replay
     * from any other; quotas are per owner and refuse that owner only;
     * entries leave with their expiry, never before. */
    zm_replay r;
    uint8_t n[16];
    zm_replay_init(&r, 2);
    memset(n, 7, sizeof n);
    CHECK(zm_replay_insert(&r, n, 0, 10, 1) == ZM_OK);
    CHECK(zm_replay_insert(&r, n, 0, 10, 1) == ZM_E_REPLAY);
    CHECK(zm_replay_insert(&r, n, 1, 10, 1) == ZM_E_REPLAY);
    n[0] = 1;
    CHECK(zm_replay_insert(&r, n, 0, 10, 1) == ZM_OK);
    n[0] = 2;
    CHECK(zm_replay_insert(&r, n, 0, 10, 1) == ZM_E_REPLAY_FULL);
    CHECK(zm_replay_insert(&r, n, 1, 10, 1) == ZM_OK);
    CHECK(zm_replay_held(&r, 0) == 2 && zm_replay_held(&r, 1) == 1);
    CHECK(zm_replay_held(&r, 99) == 0);
    n[0] = 3;
    CHECK(zm_replay_insert(&r, n, 0, 20, 10) == ZM_E_REPLAY_FULL); /* not expired at 10 */
    CHECK(zm_replay_insert(&r, n, 0, 20, 11) == ZM_OK);            /* expired at 11 */
    memset(n, 7, sizeof n);
    CHECK(zm_replay_insert(&r, n, 1, 20, 11) == ZM_OK);  /* its first use expired */
    for (uint32_t owner = 0; owner < 300; owner++) {     /* owners beyond the first table */
        n[1] = (uint8_t)owner;
        n[2] = (uint8_t)(owner >> 8);
        CHECK(zm_replay_insert(&r, n, owner + 5, 30, 12) == ZM_OK);
    }
    CHECK(zm_replay_held(&r, 304) == 1);
    zm_replay_free(&r);
}

static void test_replay_contains_and_room(void) {
    /* What an event subscriber asks before it remembers an acked event:
     * contains() looks without inserting; room() says whether an insert
     * would hit the quota, dropping expired entries to make room first. */
    zm_replay r;
    uint8_t n[16];
    zm_replay_init(&r, 2);
    memset(n, 9, sizeof n);
    CHECK(zm_replay_contains(&r, n, 1) == ZM_OK); /* nothing allocated yet */
    CHECK(zm_replay_room(&r, 0, 1) == ZM_OK);
    CHECK(zm_replay_insert(&r, n, 0, 10, 1) == ZM_OK);
    CHECK(zm_replay_contains(&r, n, 1) == ZM_E_REPLAY);
    CHECK(zm_replay_contains(&r, n, 10) == ZM_E_REPLAY); /* live through its expiry */
    CHECK(zm_replay_contains(&r, n, 11) == ZM_OK);
    CHECK(zm_replay_contains(&r, n, 1) == ZM_E_REPLAY); /* contains() changed nothing */
    n[0] = 1;
    CHECK(zm_replay_contains(&r, n, 1) == ZM_OK);
    CHECK(zm_replay_insert(&r, n, 0, 20, 1) == ZM_OK);
    CHECK(zm_replay_room(&r, 0, 5) == ZM_E_REPLAY_FULL); /* both live */
    CHECK(zm_replay_room(&r, 1, 5) == ZM_OK);            /* another owner */
    CHECK(zm_replay_room(&r, 0, 11) == ZM_OK);           /* the first expired: purged */
    CHECK(zm_replay_held(&r, 0) == 1);
    CHECK(zm_replay_contains(&r, n, 11) == ZM_E_REPLAY); /* the live one stayed */
    zm_replay_free(&r);
}

/* The fingerprint the set used before it was keyed: public, so anyone
 * could aim a nonce at another's print. */
static uint64_t unkeyed_print(const uint8_t nonce[16]) {
    uint64_t hi = zm_le64(nonce + 8) * 0xD6E8FEB86659FD93ull;
    return zm_le64(nonce) ^ ((hi << 32) | (hi >> 32));
}

/* A nonce other than `a` with a's unkeyed print: the attack. */
static void unkeyed_twin(const uint8_t a[16], uint8_t b[16]) {
    uint64_t hi = zm_le64(a + 8) + 1;
    uint64_t mixed = hi * 0xD6E8FEB86659FD93ull;
    uint64_t lo = unkeyed_print(a) ^ ((mixed << 32) | (mixed >> 32));
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(lo >> (8 * i));
        b[8 + i] = (uint8_t)(hi >> (8 * i));
    }
}

static void test_siphash_vector(void) {
    /* The reference vector for 16 bytes 00..0f under key 00..0f. */
    uint8_t k[16], in[16];
    for (int i = 0; i < 16; i++)
        k[i] = in[i] = (uint8_t)i;
    CHECK(zm_siphash16(zm_le64(k), zm_le64(k + 8), in) == 0x3f2acc7f57c29bdbull);
}

static void test_replay_crafted_collision(void) {
    /* Nonces that shared a print under the old unkeyed mix are distinct:
     * acking one does not make the other a replay, under a fixed key and
     * under a set's own random key. */
    uint8_t a[16], b[16];
    for (int i = 0; i < 16; i++)
        a[i] = (uint8_t)(0x31 * i + 5);
    unkeyed_twin(a, b);
    CHECK(memcmp(a, b, 16) != 0 && unkeyed_print(a) == unkeyed_print(b));
    for (int keyed = 0; keyed < 2; keyed++) {
        zm_replay r;
        zm_replay_init(&r, 10);
        if (keyed)
            CHECK(zm_replay_set_key(&r, 0x0123456789abcdefull, 0xfedcba9876543210ull));
        CHECK(zm_replay_insert(&r, a, 0, 10, 1) == ZM_OK);
        CHECK(zm_replay_contains(&r, b, 1) == ZM_OK);
        CHECK(zm_replay_insert(&r, b, 0, 10, 1) == ZM_OK);
        CHECK(zm_replay_contains(&r, a, 1) == ZM_E_REPLAY);
        CHECK(zm_replay_contains(&r, b, 1) == ZM_E_REPLAY);
        CHECK(zm_replay_set_key(&r, 1, 2) == 0); /* not empty: the key stays */
        CHECK(zm_replay_contains(&r, a, 1) == ZM_E_REPLAY);
        zm_replay_free(&r);
    }
}

static void test_replay_finds_every_nonce(void) {
    /* Every nonce inserted is found, through growth and purges, and none of
     * those never inserted is (a pseudo-random stream; a chance 64-bit
     * collision among 20,000 would be a ~1e-11 event). */
    zm_replay r;
    zm_replay_init(&r, 1u << 20);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    enum { N = 20000 };
    static uint8_t nonces[2 * N][16];
    for (int i = 0; i < 2 * N; i++)
        for (int j = 0; j < 16; j++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            nonces[i][j] = (uint8_t)x;
        }
    for (int i = 0; i < N; i++)
        CHECK(zm_replay_insert(&r, nonces[i], (uint32_t)(i % 3), 100, 1) == ZM_OK);
    for (int i = 0; i < N; i++)
        CHECK(zm_replay_contains(&r, nonces[i], 1) == ZM_E_REPLAY);
    for (int i = N; i < 2 * N; i++)
        CHECK(zm_replay_contains(&r, nonces[i], 1) == ZM_OK);
    zm_replay_free(&r);
}

static void test_mac_key_alignment(void) {
    /* A key's states are _Alignas(64): a key on the heap (the core keeps
     * one per MacKey object, whose own memory is only 16-byte aligned)
     * comes from zm_mac_key_new, aligned, zeroed; UBSan checks the use. */
    for (int i = 0; i < 8; i++) {
        zm_mac_key *k = zm_mac_key_new();
        CHECK(k != NULL);
        if (k == NULL)
            return;
        CHECK(((uintptr_t)k % _Alignof(zm_mac_key)) == 0);
        CHECK(((uintptr_t)k->inner % 64) == 0 && ((uintptr_t)k->outer % 64) == 0);
        CHECK(k->id == 0 && k->alg == 0 && k->inner[0] == 0 && k->outer[ZM_MAC_CTX_MAX - 1] == 0);
        k->inner[0] = 1;
        k->outer[0] = 2;
        zm_mac_key_free(k);
    }
    zm_mac_key_free(NULL);
}

int main(void) {
    test_mac_key_alignment();
    test_equal32();
    test_replay_set();
    test_replay_contains_and_room();
    test_siphash_vector();
    test_replay_crafted_collision();
    test_replay_finds_every_nonce();
    test_roundtrip();
    test_writer_limits();
    test_frames();
    test_strerror();
    test_hash_ring();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    puts("src/ C tests passed");
    return 0;
}
