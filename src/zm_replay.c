/* zm_replay.c - the nonces one principal has used (see zm_replay.h).
 *
 * Open addressing with linear probing, at most half full. Expired entries
 * are not deleted one by one (deletion under linear probing needs care);
 * when the table reaches its load limit it is rebuilt with only the live
 * entries, doubling if they still need the room: amortised O(1) per insert.
 */
#include "zm_replay.h"

#include <stdlib.h>

#define MIN_CAP 64

void zm_replay_init(zm_replay *r, size_t max) {
    r->fp = NULL;
    r->expires = NULL;
    r->cap = 0;
    r->count = 0;
    r->max = max;
    r->oldest = 0;
}

void zm_replay_free(zm_replay *r) {
    free(r->fp);
    free(r->expires);
    zm_replay_init(r, r->max);
}

ZM_INLINE uint64_t fingerprint(const uint8_t nonce[16]) {
    /* Both halves count: nonces differing anywhere get different prints
     * (but for the 2^-64 chance that a mix lands on another's). */
    uint64_t hi = zm_le64(nonce + 8) * 0xD6E8FEB86659FD93ull;
    uint64_t v = zm_le64(nonce) ^ ((hi << 32) | (hi >> 32));
    return v ? v : 0x5A5A5A5A5A5A5A5Aull; /* 0 marks empty slots */
}

ZM_INLINE size_t slot_of(uint64_t fp, size_t cap) {
    /* Fibonacci hashing: the top bits of fp * 2^64/phi spread any input. */
    return (size_t)((fp * 0x9E3779B97F4A7C15ull) >> 11) & (cap - 1);
}

static void put(uint64_t *fp, uint32_t *expires, size_t cap, uint64_t f, uint32_t e) {
    size_t i = slot_of(f, cap);
    while (fp[i])
        i = (i + 1) & (cap - 1);
    fp[i] = f;
    expires[i] = e;
}

/* Rebuild with the live entries in a table of `cap` slots. */
static int rebuild(zm_replay *r, size_t cap, uint32_t now) {
    uint64_t *fp = calloc(cap, sizeof *fp);
    uint32_t *expires = calloc(cap, sizeof *expires);
    if (!fp || !expires) {
        free(fp);
        free(expires);
        return ZM_E_NOMEM;
    }
    size_t live = 0;
    uint32_t oldest = UINT32_MAX;
    for (size_t i = 0; i < r->cap; i++) {
        if (r->fp[i] && r->expires[i] >= now) {
            put(fp, expires, cap, r->fp[i], r->expires[i]);
            live++;
            if (r->expires[i] < oldest)
                oldest = r->expires[i];
        }
    }
    free(r->fp);
    free(r->expires);
    r->fp = fp;
    r->expires = expires;
    r->cap = cap;
    r->count = live;
    r->oldest = live ? oldest : 0;
    return ZM_OK;
}

int zm_replay_insert(zm_replay *r, const uint8_t nonce[16], uint32_t expires, uint32_t now) {
    uint64_t f = fingerprint(nonce);
    int rc;
    if (r->cap) {
        size_t i = slot_of(f, r->cap);
        while (r->fp[i]) {
            if (r->fp[i] == f) {
                if (r->expires[i] >= now)
                    return ZM_E_REPLAY;
                r->expires[i] = expires; /* expired: the slot is reused */
                return ZM_OK;
            }
            i = (i + 1) & (r->cap - 1);
        }
    }
    /* Full, or the table too loaded: drop what expired, if anything did. */
    if ((r->count >= r->max || 2 * (r->count + 1) > r->cap) && r->cap && now > r->oldest) {
        if ((rc = rebuild(r, r->cap, now)))
            return rc;
    }
    if (r->count >= r->max)
        return ZM_E_REPLAY_FULL;
    if (2 * (r->count + 1) > r->cap) { /* at most half full: grow */
        if ((rc = rebuild(r, r->cap ? 2 * r->cap : MIN_CAP, now)))
            return rc;
    }
    put(r->fp, r->expires, r->cap, f, expires);
    if (r->count == 0 || expires < r->oldest)
        r->oldest = expires;
    r->count++;
    return ZM_OK;
}
