/* fuzz_replay.c - libFuzzer harness over the replay set (src/zm_replay.c).
 *
 * The input is a script of operations on one set: insert a nonce (one of a
 * small alphabet, so repeats happen) from one of a few owners with an
 * expiry, look a nonce up (zm_replay_contains) and ask whether an owner has
 * room (zm_replay_room), or move the clock. A brute-force model (a plain
 * array of live entries) decides what every operation must answer:
 * ZM_E_REPLAY iff the nonce is live in the model, whoever inserted it (an
 * insert or a look-up); ZM_E_REPLAY_FULL iff the owner holds `quota` live
 * entries (an insert of a new nonce, or room); else ZM_OK. The set may never
 * forget a live nonce (that would reopen a replay), nor refuse an owner
 * below its quota, and its per-owner counts never fall below the model's.
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

#define OWNERS 5

typedef struct {
    uint8_t nonce[16];
    uint32_t expires;
    uint32_t owner;
} entry;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    size_t quota = 1 + data[0] % 100; /* small, so "full" is reached */
    zm_replay r;
    zm_replay_init(&r, quota);
    /* A fixed fingerprint key: a run must repeat to be minimised. */
    zm_replay_set_key(&r, 0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull);
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
         * set's 64-bit fingerprint under the key above too (checked when
         * the key was chosen), so the exact model is the oracle. */
        uint8_t nonce[16] = {0};
        nonce[0] = a;
        nonce[1] = 0xA5;
        uint32_t expires = now + (uint32_t)(b % 40);
        uint32_t owner = (uint32_t)(op % OWNERS);

        /* the model: drop what expired, then decide */
        size_t k = 0, held[OWNERS] = {0};
        int seen = 0;
        for (size_t j = 0; j < live; j++) {
            if (model[j].expires < now)
                continue;
            if (memcmp(model[j].nonce, nonce, 16) == 0)
                seen = 1;
            held[model[j].owner]++;
            model[k++] = model[j];
        }
        live = k;
        if (op & 0x40) { /* look up (0x20 clear) or ask for room (0x20 set) */
            int rc = (op & 0x20) ? zm_replay_room(&r, owner, now)
                                 : zm_replay_contains(&r, nonce, now);
            int want = (op & 0x20) ? (held[owner] >= quota ? ZM_E_REPLAY_FULL : ZM_OK)
                                   : (seen ? ZM_E_REPLAY : ZM_OK);
            if (rc != want)
                FAIL("%s nonce %u owner %u at %u (%zu live, %zu held, quota %zu): "
                     "got %d, want %d", (op & 0x20) ? "room" : "contains", a, owner, now,
                     live, held[owner], quota, rc, want);
            continue;
        }
        int want = seen ? ZM_E_REPLAY : (held[owner] >= quota ? ZM_E_REPLAY_FULL : ZM_OK);

        int rc = zm_replay_insert(&r, nonce, owner, expires, now);
        if (rc != want)
            FAIL("insert nonce %u from %u at %u (expires %u, %zu live, %zu held, quota %zu): "
                 "got %d, want %d", a, owner, now, expires, live, held[owner], quota, rc, want);
        if (rc == ZM_OK) {
            memcpy(model[live].nonce, nonce, 16);
            model[live].expires = expires;
            model[live].owner = owner;
            live++;
            held[owner]++;
        }
        if (r.count < live)
            FAIL("the set holds %zu entries, %zu are live", r.count, live);
        for (uint32_t o = 0; o < OWNERS; o++)
            if (zm_replay_held(&r, o) < held[o])
                FAIL("owner %u: the set counts %zu, %zu are live", o,
                     zm_replay_held(&r, o), held[o]);
    }
    zm_replay_free(&r);
    return 0;
}
