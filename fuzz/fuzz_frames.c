/* fuzz_frames.c - libFuzzer harness for the multipart layout (src/zm_frame.c)
 * and MAC verification (src/zm_mac.c).
 *
 * Input format (fuzz/make_seeds.py writes the same):
 *
 *     byte 0      control: key length for the variable-key check (mod 72,
 *                 so lengths outside 16..64 are tried too)
 *     then        frames, each a u16le length and that many bytes; a length
 *                 running past the end takes what is left, and so does the
 *                 18th frame, which has no length (18 = ZM_FRAME_MAX + a
 *                 routing id + one too many, to reach ZM_E_FRAME_COUNT)
 *
 * Each input is parsed both unrouted and routed (frames[0] as routing id).
 * When zm_frame_parse accepts a signed message, the MAC input of protocol
 * version 2 (zm_mac.h: the binding, then the header frame without a MAC
 * trailer, then the body frames) is checked for both algorithms against
 * libsodium called directly on that framing, the received tag is verified
 * (it matches only when make_seeds.py signed the seed), a computed tag must
 * verify while the same tag with one bit flipped, or under the other
 * binding, must not.
 *
 * The binding is what the receiver knows of the exchange: empty for a
 * message that opens one (request, cancel, ping); for an answer, the nonce
 * of the request it answers, here always BIND (make_seeds.py signs its
 * answer seeds bound to the same bytes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "zm_frame.h"
#include "zm_mac.h"

#define FAIL(...)                                                    \
    do {                                                             \
        fprintf(stderr, "fuzz_frames: %s:%d: ", __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                                \
        fputc('\n', stderr);                                         \
        abort();                                                     \
    } while (0)

#define MAX_FRAMES (ZM_FRAME_MAX + 2)

/* The fixed MAC key; make_seeds.py signs its seeds with the same bytes. */
static const uint8_t KEY[32] = "zmicro-fuzz-key-0123456789abcdef";

/* The nonce of "the request" every answer answers (the bytes 16 to 31). */
static const uint8_t BIND[16] = {16, 17, 18, 19, 20, 21, 22, 23,
                                 24, 25, 26, 27, 28, 29, 30, 31};

/* The binding of a message of kind `kind`, and the other one (to show
 * that the binding is covered). */
static zm_slice binding_of(uint16_t kind, int other) {
    int opens = kind == ZM_KIND_REQUEST || kind == ZM_KIND_CANCEL || kind == ZM_KIND_PING;
    zm_slice b = {NULL, 0};
    if (opens == (other != 0)) {
        b.ptr = BIND;
        b.len = sizeof BIND;
    }
    return b;
}

/* ------------------------------------------------------------------------
 * zm_crypto table from Debian's libsodium. Wrappers with the table's exact
 * prototypes: calling libsodium through a pointer cast to a different
 * function type is undefined behaviour (UBSan's -fsanitize=function).
 * zm_mac.c builds HMAC itself over SHA-256; the reference below uses
 * libsodium's own HMAC, so the two constructions check each other.
 * ------------------------------------------------------------------------ */
static int s_sha_init(void *st) {
    return crypto_hash_sha256_init(st);
}
static int s_sha_update(void *st, const void *in, size_t len) {
    return crypto_hash_sha256_update(st, in, (unsigned long long)len);
}
static int s_sha_final(void *st, unsigned char *out) {
    return crypto_hash_sha256_final(st, out);
}
static size_t s_gh_statebytes(void) {
    return crypto_generichash_statebytes();
}
static int s_gh_init(void *st, const unsigned char *key, size_t keylen,
                     size_t outlen) {
    return crypto_generichash_init(st, key, keylen, outlen);
}
static int s_gh_update(void *st, const unsigned char *in,
                       unsigned long long inlen) {
    return crypto_generichash_update(st, in, inlen);
}
static int s_gh_final(void *st, unsigned char *out, size_t outlen) {
    return crypto_generichash_final(st, out, outlen);
}

static zm_crypto SODIUM;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (sodium_init() < 0)
        FAIL("sodium_init failed");
    SODIUM.sha256_kind = ZM_SHA256_SODIUM;
    SODIUM.sha256_ctx_size = crypto_hash_sha256_statebytes();
    SODIUM.sha256_init = s_sha_init;
    SODIUM.sha256_update = s_sha_update;
    SODIUM.sha256_final_sodium = s_sha_final;
    SODIUM.generichash_statebytes = s_gh_statebytes;
    SODIUM.generichash_init = s_gh_init;
    SODIUM.generichash_update = s_gh_update;
    SODIUM.generichash_final = s_gh_final;
    if (zm_mac_supports(&SODIUM, ZM_MAC_HMAC_SHA256) != ZM_OK ||
        zm_mac_supports(&SODIUM, ZM_MAC_BLAKE2B) != ZM_OK)
        FAIL("zm_mac_supports refused Debian's libsodium");
    return 0;
}

/* ------------------------------------------------------------------------
 * Reference MAC: the framing of zm_mac.h built into one buffer and hashed
 * in a single call, so that a framing mistake in zm_mac.c (order, widths,
 * a skipped empty frame) cannot hide behind the same mistake here.
 * ------------------------------------------------------------------------ */
static void ref_mac(int alg, const uint8_t *key, size_t keylen,
                    const zm_slice *frames, size_t n, uint8_t out[32]) {
    size_t total = ZM_MAC_DOMAIN_LEN + 4;
    for (size_t i = 0; i < n; i++)
        total += 8 + frames[i].len;
    uint8_t *buf = malloc(total), *p = buf;
    memcpy(p, ZM_MAC_DOMAIN, ZM_MAC_DOMAIN_LEN);
    p += ZM_MAC_DOMAIN_LEN;
    for (int b = 0; b < 4; b++)
        *p++ = (uint8_t)(n >> (8 * b));
    for (size_t i = 0; i < n; i++) {
        for (int b = 0; b < 8; b++)
            *p++ = (uint8_t)((uint64_t)frames[i].len >> (8 * b));
        if (frames[i].len)
            memcpy(p, frames[i].ptr, frames[i].len);
        p += frames[i].len;
    }
    int rc;
    if (alg == ZM_MAC_HMAC_SHA256) {
        crypto_auth_hmacsha256_state st;
        rc = crypto_auth_hmacsha256_init(&st, key, keylen);
        rc |= crypto_auth_hmacsha256_update(&st, buf, total);
        rc |= crypto_auth_hmacsha256_final(&st, out);
    } else {
        rc = crypto_generichash(out, 32, buf, total, key, keylen);
    }
    if (rc != 0)
        FAIL("libsodium failed in the reference MAC");
    free(buf);
}

/* ------------------------------------------------------------------------
 * Checks
 * ------------------------------------------------------------------------ */

/* A parse that returned ZM_OK must describe the frames it was given. */
static void check_view(const zm_slice *frames, int n, int routed,
                       const zm_header *h, const zm_frame_view *v) {
    int first = routed ? 1 : 0;
    int signed_ = (h->flags & ZM_FLAG_SIGNED) != 0;
    if (n - first < 1 || n - first > ZM_FRAME_MAX)
        FAIL("accepted %d frames (routed=%d)", n, routed);
    if (v->routing != (routed ? 0 : -1) || v->header != first ||
        v->body_first != first + 1 || v->body_count < 0)
        FAIL("bad view: routing %d header %d body %d+%d", v->routing,
             v->header, v->body_first, v->body_count);
    if (routed && frames[0].len == 0)
        FAIL("accepted an empty routing id");
    int trailer = signed_ && (h->flags & ZM_FLAG_MAC_TRAILER) != 0;
    if (v->trailer != trailer)
        FAIL("trailer %d for flags %u", v->trailer, h->flags);
    if (v->body_first + v->body_count + (signed_ && !trailer ? 1 : 0) != n)
        FAIL("view does not cover the %d frames", n);
    if (signed_ && !trailer ? (v->mac != n - 1 || frames[v->mac].len != ZM_MAC_SIZE ||
                               v->tag != frames[v->mac].ptr)
                            : v->mac != -1)
        FAIL("mac index %d for a %s message", v->mac,
             signed_ ? "signed" : "unsigned");
    if (trailer && (v->body_count != 0 || v->header_len + ZM_MAC_SIZE != frames[first].len ||
                    v->tag != frames[first].ptr + v->header_len))
        FAIL("trailer view wrong: %zu of %zu bytes", v->header_len, frames[first].len);
    if (!trailer && v->header_len != frames[first].len)
        FAIL("header_len %zu without a trailer", v->header_len);
    if (!signed_ && v->tag != NULL)
        FAIL("a tag for an unsigned message");
    if (h->version != ZM_WIRE_VERSION || h->kind > ZM_KIND_MAX)
        FAIL("accepted version %u kind %u", h->version, h->kind);
    /* BODY_INLINE: the body is exactly the rest of the header frame, and no
     * body frame follows; without it the frame is the header exactly. */
    const zm_slice *hf = &frames[first];
    size_t hsize = 8 + 8 * (size_t)zm_le32(hf->ptr + 4);
    if (h->flags & ZM_FLAG_BODY_INLINE) {
        if (!v->inline_body || v->body_count != 0 || v->body.len != v->header_len - hsize ||
            (v->body.len && v->body.ptr != hf->ptr + hsize))
            FAIL("inline body not the rest of the header frame");
    } else if (v->inline_body || hsize != v->header_len) {
        FAIL("bytes after the header accepted without BODY_INLINE");
    }
}

static void check_mac(const zm_slice *frames, const zm_frame_view *v,
                      const zm_header *h, uint8_t ctl, uint8_t flip) {
    /* The MAC covers the binding, the header and body frames, never the
     * routing id; with a trailer, the header frame without its last
     * ZM_MAC_SIZE bytes. */
    zm_slice covered[ZM_FRAME_MAX + 1];
    size_t ncov = 2 + (size_t)v->body_count;
    covered[0] = binding_of(h->kind, 0);
    memcpy(&covered[1], &frames[v->header], (ncov - 1) * sizeof *covered);
    covered[1].len = v->header_len;
    zm_slice rebound[ZM_FRAME_MAX + 1];
    memcpy(rebound, covered, ncov * sizeof *covered);
    rebound[0] = binding_of(h->kind, 1);
    const uint8_t *received = v->tag;
    static const int algs[2] = {ZM_MAC_HMAC_SHA256, ZM_MAC_BLAKE2B};

    for (int a = 0; a < 2; a++) {
        int alg = algs[a];
        uint8_t tag[ZM_MAC_SIZE], ref[ZM_MAC_SIZE];
        int rc = zm_mac_compute(&SODIUM, alg, KEY, sizeof KEY, covered, ncov, tag);
        if (rc != ZM_OK)
            FAIL("zm_mac_compute alg %d: %d", alg, rc);
        /* A prepared key (states absorbed once, copied per message) gives
         * the same MAC, and keeps giving it. */
        zm_mac_key prepared;
        uint8_t again[ZM_MAC_SIZE];
        if (zm_mac_key_init(&SODIUM, &prepared, 7, alg, KEY, sizeof KEY) != ZM_OK)
            FAIL("zm_mac_key_init alg %d", alg);
        for (int round = 0; round < 2; round++) {
            if (zm_mac_sign(&SODIUM, &prepared, covered, ncov, again) != ZM_OK ||
                memcmp(again, tag, ZM_MAC_SIZE) != 0)
                FAIL("alg %d: prepared key differs (round %d)", alg, round);
        }
        if (zm_mac_check(&SODIUM, &prepared, covered, ncov, tag) != ZM_OK)
            FAIL("alg %d: zm_mac_check refused its own MAC", alg);
        ref_mac(alg, KEY, sizeof KEY, covered, ncov, ref);
        if (memcmp(tag, ref, ZM_MAC_SIZE) != 0)
            FAIL("alg %d: zm_mac_compute differs from the reference", alg);

        rc = zm_mac_verify(&SODIUM, alg, KEY, sizeof KEY, covered, ncov, received);
        int expect = memcmp(received, tag, ZM_MAC_SIZE) == 0 ? ZM_OK
                                                            : ZM_E_MAC_MISMATCH;
        if (rc != expect)
            FAIL("alg %d: received tag verifies as %d, expected %d", alg, rc,
                 expect);

        if ((rc = zm_mac_verify(&SODIUM, alg, KEY, sizeof KEY, covered, ncov, tag)))
            FAIL("alg %d: computed tag does not verify: %d", alg, rc);
        /* Bound to another exchange, the same tag is refused. */
        if ((rc = zm_mac_verify(&SODIUM, alg, KEY, sizeof KEY, rebound, ncov,
                                tag)) != ZM_E_MAC_MISMATCH)
            FAIL("alg %d: the tag verifies under another binding: %d", alg, rc);
        tag[flip % ZM_MAC_SIZE] ^= (uint8_t)(1u << (flip / ZM_MAC_SIZE % 8));
        if ((rc = zm_mac_verify(&SODIUM, alg, KEY, sizeof KEY, covered, ncov,
                                tag)) != ZM_E_MAC_MISMATCH)
            FAIL("alg %d: tag with a flipped bit gives %d", alg, rc);

        /* Key lengths at and beyond both ends of 16..64. */
        static uint8_t long_key[72];
        size_t keylen = ctl % sizeof long_key;
        for (size_t i = 0; i < sizeof long_key; i++)
            long_key[i] = (uint8_t)(i * 7 + ctl);
        rc = zm_mac_compute(&SODIUM, alg, long_key, keylen, covered, ncov, tag);
        if (keylen < ZM_MAC_KEY_MIN || keylen > ZM_MAC_KEY_MAX) {
            if (rc != ZM_E_MAC_KEY)
                FAIL("alg %d: key of %zu bytes gives %d", alg, keylen, rc);
        } else {
            if (rc != ZM_OK)
                FAIL("alg %d: key of %zu bytes gives %d", alg, keylen, rc);
            ref_mac(alg, long_key, keylen, covered, ncov, ref);
            if (memcmp(tag, ref, ZM_MAC_SIZE) != 0)
                FAIL("alg %d, %zu-byte key: differs from the reference", alg,
                     keylen);
        }
    }
    uint8_t tag[ZM_MAC_SIZE];
    if (zm_mac_compute(&SODIUM, ctl & 1 ? 0 : 3, KEY, sizeof KEY, covered,
                       ncov, tag) != ZM_E_MAC_ALG)
        FAIL("unknown algorithm accepted");
}

static void parse(const zm_slice *frames, int n, int routed, uint8_t ctl,
                  uint8_t flip) {
    static zm_header h, alone;
    zm_frame_view v;
    memset(&v, 0xA5, sizeof v); /* so that "filled anyway" is observable */
    int rc = zm_frame_parse(frames, n, routed, &h, &v);
    int first = routed ? 1 : 0;

    if (rc == ZM_OK || rc == ZM_E_VERSION || rc == ZM_E_KIND) {
        /* zm_frame.h: the header and view are filled for these codes too,
         * and the header must be what zm_wire_read makes of that frame. */
        /* The header is the prefix its segment table gives (an inline
         * body may follow it in the frame). */
        size_t hsize = 8 + 8 * (size_t)zm_le32(frames[first].ptr + 4);
        if (hsize > frames[first].len ||
            zm_wire_read(frames[first].ptr, hsize, &alone) != ZM_OK)
            FAIL("frame parse %d on a header zm_wire_read refuses", rc);
        if (alone.request_id != h.request_id || alone.flags != h.flags ||
            alone.version != h.version || alone.kind != h.kind)
            FAIL("frame parse decoded the header differently");
        if (v.header != first || v.routing != (routed ? 0 : -1))
            FAIL("view not filled on code %d", rc);
    }
    if (rc != ZM_OK)
        return;
    check_view(frames, n, routed, &h, &v);
    if (h.flags & ZM_FLAG_SIGNED)
        check_mac(frames, &v, &h, ctl, flip);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    uint8_t ctl = data[0];
    uint8_t flip = data[size - 1];
    const uint8_t *p = data + 1;
    size_t left = size - 1;

    /* Each frame in its own exact-size allocation (NULL when empty): ASan
     * then catches a read past one frame that the contiguous input buffer
     * would have hidden in the next frame's bytes. */
    zm_slice frames[MAX_FRAMES];
    uint8_t *owned[MAX_FRAMES];
    int n = 0;
    while (left > 0 && n < MAX_FRAMES) {
        size_t len;
        if (n == MAX_FRAMES - 1 || left < 2) {
            len = left;
        } else {
            len = (size_t)(p[0] | p[1] << 8);
            p += 2, left -= 2;
            if (len > left)
                len = left;
        }
        owned[n] = len ? malloc(len) : NULL;
        if (len)
            memcpy(owned[n], p, len);
        frames[n].ptr = owned[n];
        frames[n].len = len;
        p += len, left -= len;
        n++;
    }

    parse(frames, n, 0, ctl, flip);
    parse(frames, n, 1, ctl, flip);

    for (int i = 0; i < n; i++)
        free(owned[i]);
    return 0;
}
