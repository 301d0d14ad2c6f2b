/* zm_replay.h - the nonces one principal has used, until they expire.
 *
 * A signed message carries a random 16-byte nonce and its sender's
 * timestamp; a receiver accepts it only within a window around its own
 * clock, and only once. This set remembers the nonces of one principal (the
 * caller: partitions keep one noisy principal from filling anyone else's)
 * until their message's window has passed, never earlier: a nonce forgotten
 * early could be replayed. It grows up to `max` entries; full with nothing
 * expired, it refuses new nonces (ZM_E_REPLAY_FULL) rather than evicting
 * live ones, which would reopen them to replay. Callers insert only after
 * the MAC verified, so only a key holder can fill a partition.
 *
 * Entries keep a 64-bit fingerprint of the nonce (nonces are random: a
 * chance collision between live ones is ~n^2 / 2^65, a rare false
 * "replay") and an expiry in whole seconds of the caller's clock, rounded up.
 */
#ifndef ZM_REPLAY_H
#define ZM_REPLAY_H

#include "zm_common.h"

typedef struct zm_replay {
    uint64_t *fp;      /* nonce fingerprints; 0 marks an empty slot */
    uint32_t *expires; /* seconds: the entry may go once now > expires */
    size_t cap;        /* slots, a power of two (0: nothing allocated yet) */
    size_t count;      /* live entries */
    size_t max;        /* most entries ever held */
    uint32_t oldest;   /* no entry expires before this: rebuilding to purge
                        * is pointless (and never done) while now <= oldest */
} zm_replay;

/* An empty set that will hold at most `max` nonces. Allocates nothing. */
void zm_replay_init(zm_replay *r, size_t max);
void zm_replay_free(zm_replay *r);

/* Record `nonce` (16 bytes) as used until `expires`; `now` in the same
 * seconds. ZM_OK: new, recorded. ZM_E_REPLAY: seen and not expired.
 * ZM_E_REPLAY_FULL: full of live entries. ZM_E_NOMEM. */
int zm_replay_insert(zm_replay *r, const uint8_t nonce[16], uint32_t expires, uint32_t now);

#endif /* ZM_REPLAY_H */
