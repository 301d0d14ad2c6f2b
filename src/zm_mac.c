/* zm_mac.c - message authentication over zmicro's frames (see zm_mac.h). */
#include "zm_mac.h"

int zm_mac_check(const zm_sodium *api) {
    if (!api || !api->hmacsha256_statebytes || !api->hmacsha256_init ||
        !api->hmacsha256_update || !api->hmacsha256_final ||
        !api->generichash_statebytes || !api->generichash_init ||
        !api->generichash_update || !api->generichash_final || !api->verify_32)
        return ZM_E_MAC_API;
    if (api->hmacsha256_statebytes() > ZM_MAC_STATE_MAX ||
        api->generichash_statebytes() > ZM_MAC_STATE_MAX)
        return ZM_E_MAC_API;
    return ZM_OK;
}

/* One update function for both algorithms keeps the framing in one place. */
typedef int (*update_fn)(void *state, const unsigned char *in,
                         unsigned long long inlen);

int zm_mac_compute(const zm_sodium *api, int alg, const uint8_t *key,
                   size_t keylen, const zm_slice *frames, size_t n,
                   uint8_t out[ZM_MAC_OUT]) {
    /* libsodium's BLAKE2b state must be 64-byte aligned. */
    _Alignas(64) unsigned char state[ZM_MAC_STATE_MAX];
    update_fn update;
    int rc;

    if (keylen < ZM_MAC_KEY_MIN || keylen > ZM_MAC_KEY_MAX)
        return ZM_E_MAC_KEY;
    if (alg == ZM_MAC_HMAC_SHA256) {
        rc = api->hmacsha256_init(state, key, keylen);
        update = api->hmacsha256_update;
    } else if (alg == ZM_MAC_BLAKE2B) {
        rc = api->generichash_init(state, key, keylen, ZM_MAC_OUT);
        update = api->generichash_update;
    } else {
        return ZM_E_MAC_ALG;
    }
    if (rc != 0)
        return ZM_E_MAC_API;

    uint8_t prefix[8];
    update(state, (const unsigned char *)ZM_MAC_DOMAIN, ZM_MAC_DOMAIN_LEN);
    zm_put32(prefix, (uint32_t)n);
    update(state, prefix, 4);
    for (size_t i = 0; i < n; i++) {
        zm_put64(prefix, (uint64_t)frames[i].len);
        update(state, prefix, 8);
        if (frames[i].len)
            update(state, frames[i].ptr, frames[i].len);
    }
    if (alg == ZM_MAC_HMAC_SHA256)
        rc = api->hmacsha256_final(state, out);
    else
        rc = api->generichash_final(state, out, ZM_MAC_OUT);
    return rc == 0 ? ZM_OK : ZM_E_MAC_API;
}

int zm_mac_verify(const zm_sodium *api, int alg, const uint8_t *key,
                  size_t keylen, const zm_slice *frames, size_t n,
                  const uint8_t tag[ZM_MAC_OUT]) {
    uint8_t mac[ZM_MAC_OUT];
    int rc = zm_mac_compute(api, alg, key, keylen, frames, n, mac);
    if (rc)
        return rc;
    return api->verify_32(mac, tag) == 0 ? ZM_OK : ZM_E_MAC_MISMATCH;
}
