/* zm_hash.c - see zm_hash.h. */
#include "zm_hash.h"

#include <stdlib.h>

#define FNV64_OFFSET 0xcbf29ce484222325ULL
#define FNV64_PRIME 0x100000001b3ULL

uint64_t zm_hash64(const void *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    uint64_t h = FNV64_OFFSET;
    size_t i;
    for (i = 0; i < len; i++) {
        h ^= p[i];
        h *= FNV64_PRIME;
    }
    return zm_hash_mix64(h ^ ((uint64_t)len * 0x9e3779b97f4a7c15ULL));
}

static int zm_ring_cmp(const void *a, const void *b)
{
    const zm_ring_point *x = (const zm_ring_point *)a;
    const zm_ring_point *y = (const zm_ring_point *)b;
    if (x->point != y->point)
        return x->point < y->point ? -1 : 1;
    if (x->replica != y->replica)
        return x->replica < y->replica ? -1 : 1;
    if (x->member != y->member)
        return x->member < y->member ? -1 : 1;
    return 0;
}

void zm_ring_sort(zm_ring_point *points, size_t n)
{
    if (n > 1)
        qsort(points, n, sizeof *points, zm_ring_cmp);
}

size_t zm_ring_find(const zm_ring_point *points, size_t n, uint64_t h)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (points[mid].point < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == n ? 0 : lo;
}
