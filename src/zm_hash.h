/* zm_hash.h - a 64-bit hash and a consistent-hash ring (the selectors'
 * SELECT_HASH, core/selector.pyx).
 *
 * zm_hash64: FNV-1a over the bytes (64-bit offset basis and prime), the
 * length folded in, then a 64-bit avalanche finalizer (xor-shift-multiply
 * rounds) so that short keys differing in one byte spread over all 64 bits.
 * Not a cryptographic hash: keys chosen by an adversary can pile onto one
 * node (they could anyway, by repeating one key).
 *
 * The ring is an array of (point, member) sorted by point; a key goes to the
 * first point >= its hash, wrapping around. A node's points depend only on
 * its own name (zm_ring_vpoint), so adding or removing a node moves only the
 * keys of the arcs it gains or loses (~1/n of them).
 */
#ifndef ZM_HASH_H
#define ZM_HASH_H

#include <stddef.h>
#include <stdint.h>

typedef struct zm_ring_point {
    uint64_t point;     /* position on the ring */
    uint32_t member;    /* index of the node in the caller's node list */
    uint32_t replica;   /* which of the node's points */
} zm_ring_point;

/* Avalanche of one 64-bit word: every input bit affects every output bit. */
static inline uint64_t zm_hash_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* The hash of `len` bytes at `data` (NULL allowed when len is 0). */
uint64_t zm_hash64(const void *data, size_t len);

/* The ring position of point number `replica` of a node whose name hashes
 * to `node_hash`. */
static inline uint64_t zm_ring_vpoint(uint64_t node_hash, uint32_t replica)
{
    return zm_hash_mix64(node_hash ^ zm_hash_mix64((uint64_t)replica + 0x9e3779b97f4a7c15ULL));
}

/* Sort `n` points by point, in linear time; equal points (vanishingly
 * rare) keep their order. 0, or -1 when the scratch memory is missing. */
int zm_ring_sort(zm_ring_point *points, size_t n);

/* Index of the first point >= h in the sorted ring (0 past the end).
 * n must be > 0. */
size_t zm_ring_find(const zm_ring_point *points, size_t n, uint64_t h);

#endif /* ZM_HASH_H */
