/* zm_replay.c - the nonces a service has accepted (see zm_replay.h).
 *
 * Open addressing with linear probing, at most half full. Expired entries
 * are not deleted one by one (deletion under linear probing needs care);
 * when the table reaches its load limit, or an owner its quota, it is
 * rebuilt with only the live entries (doubling if they still need the
 * room): amortised O(1) per insert. Per-owner counts are recomputed by each
 * rebuild, so they never drift.
 */
#define _DEFAULT_SOURCE /* getentropy, clock_gettime under -std=c11 */
#include "zm_replay.h"

#include <stdlib.h>
#include <time.h>
#include <unistd.h> /* getentropy (glibc 2.25+, macOS, the BSDs) */

#define MIN_CAP 64

/* SipHash-2-4 (Aumasson and Bernstein), written from the paper for exactly
 * one 16-byte input: two message words, then the length block. */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                            \
    do {                                                                    \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);           \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                              \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                              \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);           \
    } while (0)

uint64_t zm_siphash16(uint64_t k0, uint64_t k1, const uint8_t in[16]) {
    uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;
    const uint64_t m[3] = {zm_le64(in), zm_le64(in + 8), (uint64_t)16 << 56};
    for (int i = 0; i < 3; i++) {
        v3 ^= m[i];
        SIPROUND;
        SIPROUND;
        v0 ^= m[i];
    }
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static void random_key(uint64_t key[2]) {
    uint8_t b[16];
    if (getentropy(b, sizeof b) == 0) {
        key[0] = zm_le64(b);
        key[1] = zm_le64(b + 8);
        return;
    }
    /* No entropy source (a kernel before getrandom): a key from the clock
     * and addresses is guessable in principle but still not a constant
     * anyone can precompute collisions for. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    key[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)key;
    key[1] = (uint64_t)(uintptr_t)&ts * 0x9E3779B97F4A7C15ull ^ (uint64_t)clock();
}

void zm_replay_init(zm_replay *r, size_t quota) {
    memset(r, 0, sizeof *r);
    r->quota = quota;
    random_key(r->key);
}

int zm_replay_set_key(zm_replay *r, uint64_t k0, uint64_t k1) {
    if (r->cap || r->count)
        return 0;
    r->key[0] = k0;
    r->key[1] = k1;
    return 1;
}

void zm_replay_free(zm_replay *r) {
    free(r->fp);
    free(r->expires);
    free(r->owner);
    free(r->held);
    zm_replay_init(r, r->quota);
}

ZM_INLINE uint64_t fingerprint(const zm_replay *r, const uint8_t nonce[16]) {
    /* Keyed: a sender who does not know r->key cannot aim a nonce at
     * another's print (see zm_replay.h). */
    uint64_t v = zm_siphash16(r->key[0], r->key[1], nonce);
    return v ? v : 0x5A5A5A5A5A5A5A5Aull; /* 0 marks empty slots */
}

ZM_INLINE size_t slot_of(uint64_t fp, size_t cap) {
    /* Fibonacci hashing: the top bits of fp * 2^64/phi spread any input. */
    return (size_t)((fp * 0x9E3779B97F4A7C15ull) >> 11) & (cap - 1);
}

size_t zm_replay_held(const zm_replay *r, uint32_t owner) {
    return owner < r->owners ? r->held[owner] : 0;
}

/* held[] long enough for `owner`. */
static int reserve_owner(zm_replay *r, uint32_t owner) {
    if (owner < r->owners)
        return ZM_OK;
    size_t n = r->owners ? r->owners : 16;
    while (n <= owner)
        n *= 2;
    uint32_t *held = realloc(r->held, n * sizeof *held);
    if (!held)
        return ZM_E_NOMEM;
    memset(held + r->owners, 0, (n - r->owners) * sizeof *held);
    r->held = held;
    r->owners = n;
    return ZM_OK;
}

static void put(zm_replay *r, uint64_t f, uint32_t e, uint32_t o) {
    size_t i = slot_of(f, r->cap);
    while (r->fp[i])
        i = (i + 1) & (r->cap - 1);
    r->fp[i] = f;
    r->expires[i] = e;
    r->owner[i] = o;
}

/* Rebuild with the live entries in a table of `cap` slots. */
static int rebuild(zm_replay *r, size_t cap, uint32_t now) {
    zm_replay old = *r;
    r->fp = calloc(cap, sizeof *r->fp);
    r->expires = calloc(cap, sizeof *r->expires);
    r->owner = calloc(cap, sizeof *r->owner);
    if (!r->fp || !r->expires || !r->owner) {
        free(r->fp);
        free(r->expires);
        free(r->owner);
        *r = old;
        return ZM_E_NOMEM;
    }
    r->cap = cap;
    r->count = 0;
    if (r->held)
        memset(r->held, 0, r->owners * sizeof *r->held);
    uint32_t oldest = UINT32_MAX;
    for (size_t i = 0; i < old.cap; i++) {
        if (old.fp[i] && old.expires[i] >= now) {
            put(r, old.fp[i], old.expires[i], old.owner[i]);
            r->count++;
            r->held[old.owner[i]]++; /* owners were reserved on insert */
            if (old.expires[i] < oldest)
                oldest = old.expires[i];
        }
    }
    free(old.fp);
    free(old.expires);
    free(old.owner);
    r->oldest = r->count ? oldest : 0;
    return ZM_OK;
}

int zm_replay_insert(zm_replay *r, const uint8_t nonce[16], uint32_t owner,
                     uint32_t expires, uint32_t now) {
    uint64_t f = fingerprint(r, nonce);
    int rc;
    if ((rc = reserve_owner(r, owner)))
        return rc;
    if (r->cap) {
        size_t i = slot_of(f, r->cap);
        while (r->fp[i]) {
            if (r->fp[i] == f) {
                if (r->expires[i] >= now)
                    return ZM_E_REPLAY;
                /* Expired: the slot is reused, and changes hands. */
                if (r->owner[i] != owner && r->held[owner] >= r->quota)
                    break; /* let the quota logic below decide */
                r->held[r->owner[i]]--;
                r->held[owner]++;
                r->owner[i] = owner;
                r->expires[i] = expires;
                return ZM_OK;
            }
            i = (i + 1) & (r->cap - 1);
        }
    }
    /* The owner at its quota, or the table too loaded: drop what expired,
     * if anything did. */
    if ((r->held[owner] >= r->quota || 2 * (r->count + 1) > r->cap) && r->cap &&
        now > r->oldest) {
        if ((rc = rebuild(r, r->cap, now)))
            return rc;
    }
    if (r->held[owner] >= r->quota)
        return ZM_E_REPLAY_FULL;
    if (2 * (r->count + 1) > r->cap) { /* at most half full: grow */
        if ((rc = rebuild(r, r->cap ? 2 * r->cap : MIN_CAP, now)))
            return rc;
    }
    /* After a rebuild the nonce may have expired out of the table: put()
     * then adds it anew, which is what an expired nonce deserves. */
    put(r, f, expires, owner);
    if (r->count == 0 || expires < r->oldest)
        r->oldest = expires;
    r->count++;
    r->held[owner]++;
    return ZM_OK;
}

int zm_replay_contains(const zm_replay *r, const uint8_t nonce[16], uint32_t now) {
    if (!r->cap)
        return ZM_OK;
    uint64_t f = fingerprint(r, nonce);
    size_t i = slot_of(f, r->cap);
    while (r->fp[i]) {
        if (r->fp[i] == f)
            return r->expires[i] >= now ? ZM_E_REPLAY : ZM_OK;
        i = (i + 1) & (r->cap - 1);
    }
    return ZM_OK;
}

int zm_replay_room(zm_replay *r, uint32_t owner, uint32_t now) {
    int rc;
    if (zm_replay_held(r, owner) < r->quota)
        return ZM_OK;
    /* The same purge zm_replay_insert does when an owner is at its quota. */
    if (r->cap && now > r->oldest && (rc = rebuild(r, r->cap, now)))
        return rc;
    return zm_replay_held(r, owner) < r->quota ? ZM_OK : ZM_E_REPLAY_FULL;
}
