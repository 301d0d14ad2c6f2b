/* zm_mac.h - message authentication over zmicro's frames.
 *
 * The MAC covers the header frame and every body frame, each prefixed by its
 * length, so bytes cannot move from one frame to the next without changing
 * it (docs/protocol.md gives the same definition for other languages):
 *
 *     input = "zmicro-mac-v1" || u32le(frame count)
 *             || for each frame: u64le(length) || bytes
 *     mac   = HMAC-SHA256(key, input)               (ZM_MAC_HMAC_SHA256)
 *           | BLAKE2b-256 keyed with key, of input   (ZM_MAC_BLAKE2B)
 *
 * src/ links no crypto library: the primitives come from libsodium through
 * the function table below (the core resolves it from the libsodium that
 * pyzmq loaded; the fuzz harness and C tests link Debian's libsodium). The
 * table's prototypes are libsodium's own, with void* for the state.
 */
#ifndef ZM_MAC_H
#define ZM_MAC_H

#include "zm_common.h"

#define ZM_MAC_HMAC_SHA256 1
#define ZM_MAC_BLAKE2B 2

#define ZM_MAC_KEY_MIN 16
#define ZM_MAC_KEY_MAX 64
#define ZM_MAC_OUT 32
#define ZM_MAC_STATE_MAX 512 /* libsodium 1.0.18: 208 (HMAC), 384 (BLAKE2b) */

#define ZM_MAC_DOMAIN "zmicro-mac-v1"
#define ZM_MAC_DOMAIN_LEN 13

typedef struct zm_sodium {
    size_t (*hmacsha256_statebytes)(void);
    int (*hmacsha256_init)(void *state, const unsigned char *key, size_t keylen);
    int (*hmacsha256_update)(void *state, const unsigned char *in,
                             unsigned long long inlen);
    int (*hmacsha256_final)(void *state, unsigned char *out);
    size_t (*generichash_statebytes)(void);
    int (*generichash_init)(void *state, const unsigned char *key, size_t keylen,
                            size_t outlen);
    int (*generichash_update)(void *state, const unsigned char *in,
                              unsigned long long inlen);
    int (*generichash_final)(void *state, unsigned char *out, size_t outlen);
    int (*verify_32)(const unsigned char *x, const unsigned char *y);
} zm_sodium;

/* ZM_OK if every function is present and the states fit ZM_MAC_STATE_MAX. */
int zm_mac_check(const zm_sodium *api);

/* MAC of frames[0..n) into out[ZM_MAC_OUT]. */
int zm_mac_compute(const zm_sodium *api, int alg, const uint8_t *key,
                   size_t keylen, const zm_slice *frames, size_t n,
                   uint8_t out[ZM_MAC_OUT]);

/* ZM_OK if tag is the MAC of frames[0..n); compared in constant time. */
int zm_mac_verify(const zm_sodium *api, int alg, const uint8_t *key,
                  size_t keylen, const zm_slice *frames, size_t n,
                  const uint8_t tag[ZM_MAC_OUT]);

#endif /* ZM_MAC_H */
