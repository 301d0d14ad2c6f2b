/* zm_replay.h - the nonces a service has accepted, until they expire.
 *
 * A signed message carries a random 16-byte nonce and its sender's
 * timestamp; a receiver accepts it only within a window around its own
 * clock, and only once. This set remembers every nonce one service accepted,
 * whoever sent it, until the message's window has passed, never earlier (a
 * nonce forgotten early could be replayed): a request captured and resent
 * under another caller's key is a replay too.
 *
 * Each entry has an owner (a small integer naming the principal that sent
 * it, chosen by the caller). An owner may hold at most `quota` live entries:
 * a principal that reaches its quota has its new nonces refused
 * (ZM_E_REPLAY_FULL) rather than any live entry evicted, which would reopen
 * it to replay; the others go on. Callers insert only after the MAC
 * verified, so only a key holder can fill its own quota.
 *
 * Entries keep a 64-bit fingerprint of the nonce, an expiry in whole
 * seconds of the caller's clock, rounded up, and the owner. The fingerprint
 * is SipHash-2-4 of the nonce under a random key drawn per set: nobody
 * outside the process can choose a nonce whose fingerprint equals another's
 * (an unkeyed mix let anyone make a fresh nonce look like a replay, or a new
 * event like a duplicate of an acked one). Two live nonces collide only by
 * chance, ~n^2 / 2^65: a rare false "replay".
 */
#ifndef ZM_REPLAY_H
#define ZM_REPLAY_H

#include "zm_common.h"

typedef struct zm_replay {
    uint64_t *fp;      /* nonce fingerprints; 0 marks an empty slot */
    uint32_t *expires; /* seconds: the entry may go once now > expires */
    uint32_t *owner;   /* who sent it */
    size_t cap;        /* slots, a power of two (0: nothing allocated yet) */
    size_t count;      /* live entries (and expired ones not purged yet) */
    size_t quota;      /* most entries one owner may hold */
    uint32_t *held;    /* entries per owner, indexes 0 .. owners-1 */
    size_t owners;     /* length of held[] */
    uint32_t oldest;   /* no entry expires before this: rebuilding to purge
                        * is pointless (and never done) while now <= oldest */
    uint64_t key[2];   /* SipHash key of the fingerprints, random per set */
} zm_replay;

/* An empty set whose owners may each hold at most `quota` nonces, with a
 * fresh random fingerprint key. Allocates nothing. */
void zm_replay_init(zm_replay *r, size_t quota);
void zm_replay_free(zm_replay *r);

/* Replace the fingerprint key of a set with nothing allocated yet (just
 * initialised or freed), for the fuzzer and tests, whose runs must repeat;
 * on any other set it does nothing (entries under the old key would be
 * lost). Returns whether the key was set. */
int zm_replay_set_key(zm_replay *r, uint64_t k0, uint64_t k1);

/* SipHash-2-4 of a 16-byte input under key (k0, k1): the fingerprint. */
uint64_t zm_siphash16(uint64_t k0, uint64_t k1, const uint8_t in[16]);

/* Record `nonce` (16 bytes) from `owner` as used until `expires`; `now` in
 * the same seconds. ZM_OK: new, recorded. ZM_E_REPLAY: seen (from any
 * owner) and not expired. ZM_E_REPLAY_FULL: `owner` holds `quota` live
 * entries. ZM_E_NOMEM. */
int zm_replay_insert(zm_replay *r, const uint8_t nonce[16], uint32_t owner,
                     uint32_t expires, uint32_t now);

/* Whether `nonce` is in the set and live at `now` (from any owner):
 * ZM_E_REPLAY if so, else ZM_OK. Changes nothing: events are checked when
 * they arrive but remembered only once handled (acked). */
int zm_replay_contains(const zm_replay *r, const uint8_t nonce[16], uint32_t now);

/* Whether `owner` may insert one more nonce at `now`: ZM_OK, or
 * ZM_E_REPLAY_FULL when it holds `quota` live entries. Entries that expired
 * are dropped first when that makes room (so a full owner is told the
 * truth); ZM_E_NOMEM if that rebuild fails. */
int zm_replay_room(zm_replay *r, uint32_t owner, uint32_t now);

/* Live entries `owner` holds (0 for an owner never seen). Counts may
 * include entries that expired but were not purged yet. */
size_t zm_replay_held(const zm_replay *r, uint32_t owner);

#endif /* ZM_REPLAY_H */
