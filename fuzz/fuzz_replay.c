/* fuzz_replay.c - libFuzzer harness over the replay cache (src/zm_replay.c).
 *
 * The input is a script of operations on one cache: insert a nonce (one of
 * a small alphabet, so repeats happen) with an expiry, or move the clock.
 * A brute-force model (a plain array of live entries) decides what every
 * insert must answer: ZM_E_REPLAY iff the nonce is live in the model;
 * ZM_E_REPLAY_FULL iff the model holds `max` live entries; else ZM_OK. The
 * cache may never forget a live nonce (that would reopen a replay) nor
 * refuse while it has room.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zm_replay.h"

#define FAIL(...)                                                     \
    do {                                                              \
        fprintf(stderr, "fuzz_replay: " __VA_ARGS__);                 \
        fprintf(stderr, "\n");                                        \
        abort();                                                      \
    } while (0)

#define MAX_MODEL 4096

typedef struct {
    uint8_t nonce[16];
    uint32_t expires;
} entry;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    size_t max = 1 + data[0] % 200; /* small, so "full" is reached */
    zm_replay r;
    zm_replay_init(&r, max);
    static entry model[MAX_MODEL];
    size_t live = 0;
    uint32_t now = 1000;

    for (size_t i = 1; i + 2 < size && live < MAX_MODEL; i += 3) {
        uint8_t op = data[i], a = data[i + 1], b = data[i + 2];
        if (op & 0x80) { /* advance the clock */
            now += (uint32_t)(a % 16);
            continue;
        }
        /* 256 distinct nonces (repeats are common), distinct under the
         * cache's 64-bit fingerprint too, so the exact model is the oracle. */
        uint8_t nonce[16] = {0};
        nonce[0] = a;
        nonce[1] = 0xA5;
        uint32_t expires = now + (uint32_t)(b % 40);

        /* the model: drop what expired, then decide */
        size_t k = 0;
        int seen = 0;
        for (size_t j = 0; j < live; j++) {
            if (model[j].expires < now)
                continue;
            if (memcmp(model[j].nonce, nonce, 16) == 0)
                seen = 1;
            model[k++] = model[j];
        }
        live = k;
        int want = seen ? ZM_E_REPLAY : (live >= max ? ZM_E_REPLAY_FULL : ZM_OK);

        int rc = zm_replay_insert(&r, nonce, expires, now);
        if (rc != want)
            FAIL("insert nonce %u at %u (expires %u, %zu live, max %zu): got %d, want %d",
                 a, now, expires, live, max, rc, want);
        if (rc == ZM_OK) {
            memcpy(model[live].nonce, nonce, 16);
            model[live].expires = expires;
            live++;
        }
        if (r.count < live)
            FAIL("the cache holds %zu entries, %zu are live", r.count, live);
    }
    zm_replay_free(&r);
    return 0;
}
