/* The one 64-bit mixing function, shared by the allocator (header checksums, hash tables),
 * the collector (its hash tables) and the tests (content patterns).
 *
 * It is splitmix64's finaliser: cheap, and every input bit affects every output bit, so
 * addresses that differ only in their middle bits spread over a whole table, and flipping
 * any bit of a keyed header changes its checksum unpredictably without the key. */
#ifndef MT_COMMON_HASH_H
#define MT_COMMON_HASH_H

#include <stdint.h>

static inline uint64_t mt_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

#endif
