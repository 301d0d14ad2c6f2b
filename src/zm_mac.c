/* zm_mac.c - message authentication over zmicro's frames (see zm_mac.h). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200112L /* posix_memalign */
#endif
#include "zm_mac.h"

#include <stdlib.h>

#define SHA256_BLOCK 64

/* ========================================================================
 * SHA-256 through the table (two APIs)
 * ======================================================================== */

ZM_INLINE void sha_final(const zm_crypto *c, void *ctx, unsigned char *out) {
    if (c->sha256_kind == ZM_SHA256_OPENSSL)
        c->sha256_final_openssl(out, ctx);
    else
        c->sha256_final_sodium(ctx, out);
}

zm_mac_key *zm_mac_key_new(void) {
    void *p = NULL;
    if (posix_memalign(&p, _Alignof(zm_mac_key), sizeof(zm_mac_key)) != 0)
        return NULL;
    memset(p, 0, sizeof(zm_mac_key));
    return (zm_mac_key *)p;
}

void zm_mac_key_free(zm_mac_key *k) {
    volatile unsigned char *v = (volatile unsigned char *)k;
    size_t i;
    if (k == NULL)
        return;
    for (i = 0; i < sizeof(zm_mac_key); i++) /* volatile: not elided before free */
        v[i] = 0;
    free(k);
}

int zm_mac_supports(const zm_crypto *c, int alg) {
    if (alg == ZM_MAC_HMAC_SHA256) {
        if ((c->sha256_kind != ZM_SHA256_SODIUM && c->sha256_kind != ZM_SHA256_OPENSSL) ||
            !c->sha256_init || !c->sha256_update ||
            (c->sha256_kind == ZM_SHA256_SODIUM ? !c->sha256_final_sodium
                                                : !c->sha256_final_openssl) ||
            c->sha256_ctx_size == 0 || c->sha256_ctx_size > ZM_MAC_CTX_MAX)
            return ZM_E_MAC_API;
        return ZM_OK;
    }
    if (alg == ZM_MAC_BLAKE2B) {
        if (!c->generichash_statebytes || !c->generichash_init ||
            !c->generichash_update || !c->generichash_final ||
            c->generichash_statebytes() > ZM_MAC_CTX_MAX)
            return ZM_E_MAC_API;
        return ZM_OK;
    }
    return ZM_E_MAC_ALG;
}

/* ========================================================================
 * Keys
 * ======================================================================== */

int zm_mac_key_init(const zm_crypto *c, zm_mac_key *k, uint32_t id, int alg,
                    const uint8_t *key, size_t keylen) {
    if (keylen < ZM_MAC_KEY_MIN || keylen > ZM_MAC_KEY_MAX)
        return ZM_E_MAC_KEY;
    int rc = zm_mac_supports(c, alg);
    if (rc)
        return rc;
    k->id = id;
    k->alg = alg;
    if (alg == ZM_MAC_BLAKE2B) {
        if (c->generichash_init(k->inner, key, keylen, ZM_MAC_SIZE) != 0)
            return ZM_E_MAC_API;
        return ZM_OK;
    }
    /* HMAC (RFC 2104): the key, zero-padded to a block (keys are at most 64
     * bytes, so never hashed first), XORed with ipad / opad. */
    uint8_t pad[SHA256_BLOCK];
    memset(pad, 0, sizeof pad);
    memcpy(pad, key, keylen);
    for (size_t i = 0; i < SHA256_BLOCK; i++)
        pad[i] ^= 0x36;
    c->sha256_init(k->inner);
    c->sha256_update(k->inner, pad, SHA256_BLOCK);
    for (size_t i = 0; i < SHA256_BLOCK; i++)
        pad[i] ^= 0x36 ^ 0x5c;
    c->sha256_init(k->outer);
    c->sha256_update(k->outer, pad, SHA256_BLOCK);
    memset(pad, 0, sizeof pad);
    return ZM_OK;
}

/* ========================================================================
 * Signing
 * ======================================================================== */

/* Feed the framed input to `update` on `state`. */
#define FEED(update, state, cast_len)                                      \
    do {                                                                   \
        uint8_t prefix_[8];                                                \
        update(state, (const void *)ZM_MAC_DOMAIN, (cast_len)ZM_MAC_DOMAIN_LEN); \
        zm_put32(prefix_, (uint32_t)n);                                    \
        update(state, prefix_, (cast_len)4);                               \
        for (size_t i_ = 0; i_ < n; i_++) {                                \
            zm_put64(prefix_, (uint64_t)frames[i_].len);                   \
            update(state, prefix_, (cast_len)8);                           \
            if (frames[i_].len)                                            \
                update(state, frames[i_].ptr, (cast_len)frames[i_].len);   \
        }                                                                  \
    } while (0)

int zm_mac_sign(const zm_crypto *c, const zm_mac_key *k, const zm_slice *frames,
                size_t n, uint8_t out[ZM_MAC_SIZE]) {
    _Alignas(64) unsigned char state[ZM_MAC_CTX_MAX];
    if (k->alg == ZM_MAC_BLAKE2B) {
        size_t size = c->generichash_statebytes();
        memcpy(state, k->inner, size);
        FEED(c->generichash_update, state, unsigned long long);
        return c->generichash_final(state, out, ZM_MAC_SIZE) == 0 ? ZM_OK : ZM_E_MAC_API;
    }
    if (k->alg != ZM_MAC_HMAC_SHA256)
        return ZM_E_MAC_ALG;
    uint8_t inner_hash[ZM_MAC_SIZE];
    memcpy(state, k->inner, c->sha256_ctx_size);
    FEED(c->sha256_update, state, size_t);
    sha_final(c, state, inner_hash);
    memcpy(state, k->outer, c->sha256_ctx_size);
    c->sha256_update(state, inner_hash, ZM_MAC_SIZE);
    sha_final(c, state, out);
    return ZM_OK;
}

int zm_equal32(const uint8_t *a, const uint8_t *b) {
    /* Four words XORed and ORed together, every one whatever the others
     * hold: no branch or early exit depends on the bytes (volatile: the
     * compiler keeps every step). */
    volatile uint64_t diff = 0;
    for (size_t i = 0; i < 32; i += 8)
        diff |= zm_le64(a + i) ^ zm_le64(b + i);
    return diff == 0;
}

int zm_mac_check(const zm_crypto *c, const zm_mac_key *k, const zm_slice *frames,
                 size_t n, const uint8_t tag[ZM_MAC_SIZE]) {
    uint8_t mac[ZM_MAC_SIZE];
    int rc = zm_mac_sign(c, k, frames, n, mac);
    if (rc)
        return rc;
    return zm_equal32(mac, tag) ? ZM_OK : ZM_E_MAC_MISMATCH;
}

int zm_mac_compute(const zm_crypto *c, int alg, const uint8_t *key, size_t keylen,
                   const zm_slice *frames, size_t n, uint8_t out[ZM_MAC_SIZE]) {
    zm_mac_key k;
    int rc = zm_mac_key_init(c, &k, 0, alg, key, keylen);
    if (rc)
        return rc;
    return zm_mac_sign(c, &k, frames, n, out);
}

int zm_mac_verify(const zm_crypto *c, int alg, const uint8_t *key, size_t keylen,
                  const zm_slice *frames, size_t n, const uint8_t tag[ZM_MAC_SIZE]) {
    zm_mac_key k;
    int rc = zm_mac_key_init(c, &k, 0, alg, key, keylen);
    if (rc)
        return rc;
    return zm_mac_check(c, &k, frames, n, tag);
}
