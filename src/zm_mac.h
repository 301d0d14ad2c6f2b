/* zm_mac.h - message authentication over zmicro's frames.
 *
 * The MAC covers a list of byte strings: first the message's *binding*
 * (what ties it to an exchange: for an answer, the nonce of the request it
 * answers; empty for a request, a cancel or a ping), then the header frame
 * and every body frame. Each is prefixed by its length, so bytes cannot
 * move from one to the next without changing the MAC (docs/protocol.md §7
 * gives the same definition for other languages):
 *
 *     input = "zmicro-mac-v2" || u32le(count)
 *             || for each: u64le(length) || bytes
 *     mac   = HMAC-SHA256(key, input)               (ZM_MAC_HMAC_SHA256)
 *           | BLAKE2b-256 keyed with key, of input   (ZM_MAC_BLAKE2B)
 *
 * The functions below take that list as `frames` (binding first); they do
 * not know what the strings mean.
 *
 * src/ links no crypto library: the primitives come through the zm_crypto
 * table below. SHA-256 may come from libsodium (portable C) or from OpenSSL's
 * libcrypto (the CPU's SHA instructions where it has them: about 5x faster
 * here); the MAC is the same either way. HMAC is built here over SHA-256, so
 * that a key's padded blocks are absorbed once (zm_mac_key_init) instead of
 * on every message. Keyed BLAKE2b comes from libsodium.
 */
#ifndef ZM_MAC_H
#define ZM_MAC_H

#include "zm_common.h"
#include "zm_limits.h"

#define ZM_MAC_HMAC_SHA256 1
#define ZM_MAC_BLAKE2B 2

#define ZM_MAC_KEY_MIN 16
#define ZM_MAC_KEY_MAX 64
/* ZM_MAC_SIZE (32): zm_limits.h */
#define ZM_MAC_CTX_MAX 448 /* libsodium BLAKE2b state 384; SHA-256 contexts ~112 */

#define ZM_MAC_DOMAIN "zmicro-mac-v2"
#define ZM_MAC_DOMAIN_LEN 13

/* Which SHA-256 API the table holds (their final() differ in argument order). */
#define ZM_SHA256_SODIUM 1  /* crypto_hash_sha256_{init,update,final} */
#define ZM_SHA256_OPENSSL 2 /* SHA256_{Init,Update,Final} */

typedef struct zm_crypto {
    int sha256_kind;          /* ZM_SHA256_*, 0: no SHA-256 (HMAC unavailable) */
    size_t sha256_ctx_size;   /* bytes of a SHA-256 context, <= ZM_MAC_CTX_MAX */
    int (*sha256_init)(void *ctx);
    int (*sha256_update)(void *ctx, const void *data, size_t len);
    int (*sha256_final_sodium)(void *ctx, unsigned char *out);  /* kind SODIUM */
    int (*sha256_final_openssl)(unsigned char *out, void *ctx); /* kind OPENSSL */
    size_t (*generichash_statebytes)(void); /* NULL: keyed BLAKE2b unavailable */
    int (*generichash_init)(void *state, const unsigned char *key, size_t keylen,
                            size_t outlen);
    int (*generichash_update)(void *state, const unsigned char *in,
                              unsigned long long inlen);
    int (*generichash_final)(void *state, unsigned char *out, size_t outlen);
} zm_crypto;

/* A key made ready: its algorithm's keyed starting state, absorbed once. */
typedef struct zm_mac_key {
    uint32_t id;  /* key id (Header.keyId) */
    int alg;      /* ZM_MAC_* */
    _Alignas(64) unsigned char inner[ZM_MAC_CTX_MAX]; /* HMAC: after K^ipad; BLAKE2b: keyed */
    _Alignas(64) unsigned char outer[ZM_MAC_CTX_MAX]; /* HMAC: after K^opad */
} zm_mac_key;

/* A zm_mac_key on the heap, zeroed, aligned as its type asks: malloc (and
 * CPython's object allocator, for a key embedded in an object) give 16
 * bytes, and the _Alignas(64) states above need 64. NULL when out of
 * memory. zm_mac_key_free wipes it, then frees it (NULL is fine). */
zm_mac_key *zm_mac_key_new(void);
void zm_mac_key_free(zm_mac_key *k);

/* ZM_OK if the table can compute `alg` and its states fit. */
int zm_mac_supports(const zm_crypto *c, int alg);

/* Prepare *k for `alg` with `key` (16..64 bytes). */
int zm_mac_key_init(const zm_crypto *c, zm_mac_key *k, uint32_t id, int alg,
                    const uint8_t *key, size_t keylen);

/* MAC of frames[0..n) under the prepared key into out[ZM_MAC_SIZE]. */
int zm_mac_sign(const zm_crypto *c, const zm_mac_key *k, const zm_slice *frames,
                size_t n, uint8_t out[ZM_MAC_SIZE]);

/* ZM_OK if tag is the MAC of frames[0..n) under k (constant-time compare),
 * ZM_E_MAC_MISMATCH if not. */
int zm_mac_check(const zm_crypto *c, const zm_mac_key *k, const zm_slice *frames,
                 size_t n, const uint8_t tag[ZM_MAC_SIZE]);

/* One-shot forms: prepare a key on the stack, then sign / check. */
int zm_mac_compute(const zm_crypto *c, int alg, const uint8_t *key, size_t keylen,
                   const zm_slice *frames, size_t n, uint8_t out[ZM_MAC_SIZE]);
int zm_mac_verify(const zm_crypto *c, int alg, const uint8_t *key, size_t keylen,
                  const zm_slice *frames, size_t n, const uint8_t tag[ZM_MAC_SIZE]);

/* 1 if a[0..32) == b[0..32), in time independent of the bytes. */
int zm_equal32(const uint8_t *a, const uint8_t *b);

#endif /* ZM_MAC_H */
