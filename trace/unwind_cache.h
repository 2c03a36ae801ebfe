/* The layout of a thread's unwind cache (unwind.h) and its lookup, inline: libmtrace.so's
 * event path (interpose/record.c) and trace/unwind.c, which fills the entries, only.
 *
 * Owns: nothing beyond unwind.c's cache; split out so that a hit costs no call. */
#ifndef MT_TRACE_UNWIND_CACHE_H
#define MT_TRACE_UNWIND_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/compiler.h"
#include "unwind.h"
#include "wire.h"

/* libmtrace.so's executable range (set by mt_unwind_init). */
extern uintptr_t mt_unwind_own_start, mt_unwind_own_end;

static inline bool mt_unwind_is_own(uintptr_t ip)
{
    return ip >= mt_unwind_own_start && ip < mt_unwind_own_end;
}

/* A thread's cache: sets chosen by key, of two entries each. A program's hot allocation
 * sites at their usual stack depths are few, but two of them may share a set, and one key
 * may be reached by two stacks in turn (two callers of one function with frames of one
 * size): with one entry per set either case missed at every use, each miss costing a
 * full unwind (gawk filling an array: every allocation). */
#define MT_UNWIND_CACHE_SETS 16u
#define MT_UNWIND_CACHE_WAYS 2u
#define MT_UNWIND_CACHE_ENTRIES (MT_UNWIND_CACHE_SETS * MT_UNWIND_CACHE_WAYS)
/* Slots checked per frame: its return address, and where its frame pointer was saved. */
#define MT_UNWIND_CHECKS_PER_FRAME 2u
/* x86-64: the return address sits just below the CFA; the saved frame pointer below it. */
#define MT_UNWIND_RA_BELOW_CFA 8u
#define MT_UNWIND_FRAME_RECORD 16u

enum mt_unwind_entry_state { MT_UNWIND_ENTRY_EMPTY, MT_UNWIND_ENTRY_SEEN, MT_UNWIND_ENTRY_READY };

struct mt_unwind_check {
    uintptr_t addr;
    uint64_t value;
};

/* What a hit reads of an entry, on one cache line: the key, and `tag`, which folds the
 * state, the store generation and the depth into one compare (mt_unwind_ready_tag). */
struct mt_unwind_entry {
    struct mt_unwind_key key;
    uint64_t fp_mask; /* ~0: the key's frame pointer matters (walk_slots); 0: it does not */
    uint64_t tag;     /* mt_unwind_ready_tag() once READY, else 0 */
    uint32_t id;
    uint32_t checks;  /* used entries of its check list */
    uint32_t state;
    uint32_t depth;   /* the depth asked for when filled */
} MT_ALIGNED(MT_CACHE_LINE);
_Static_assert(sizeof(struct mt_unwind_entry) == MT_CACHE_LINE, "a cache entry's hot part is one line");

/* An entry's slot checks. One spare line each: a whole number of 4 KiB pages apart, every
 * list would start in the same L1 set. */
struct mt_unwind_checks {
    struct mt_unwind_check check[MT_WIRE_DEPTH_MAX * MT_UNWIND_CHECKS_PER_FRAME];
    uint8_t stagger[MT_CACHE_LINE];
};

struct mt_unwind_cache {
    struct mt_unwind_entry entry[MT_UNWIND_CACHE_ENTRIES];
    struct mt_unwind_checks list[MT_UNWIND_CACHE_ENTRIES];
    /* Misses to go before the next cursor walk may fill an entry (unwind.c). */
    uint32_t walk_wait;
    /* Per set: the way the next new key replaces when both are filled. */
    uint8_t victim[MT_UNWIND_CACHE_SETS];
};

/* Never 0 (the READY bit): an entry that is not ready has tag 0. The depth is <= 256. */
static inline uint64_t mt_unwind_ready_tag(uint32_t depth, uint32_t generation)
{
    return (uint64_t)generation << 32 | 1u << 31 | depth;
}

/* The set, by call site and stack pointer: the frame pointer is part of the key only for
 * entries whose unwind depends on it. */
static inline unsigned mt_unwind_set_index(uint64_t ip, uint64_t sp)
{
    uint64_t h = ip ^ (sp >> 4) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    return (unsigned)(h ^ (h >> 17)) & (MT_UNWIND_CACHE_SETS - 1);
}

/* Entry `index` holds the key's stack, if its slots still hold what they held. */
static inline __attribute__((always_inline)) bool mt_unwind_entry_hits(const struct mt_unwind_cache *cache,
                                                                      unsigned index, uint64_t ip, uint64_t sp,
                                                                      uint64_t fp, uint64_t tag)
{
    const struct mt_unwind_entry *e = &cache->entry[index];
    /* One test for: ready, same key (the frame pointer where it matters), generation and
     * depth. */
    if (((e->key.ip ^ ip) | (e->key.sp ^ sp) | ((e->key.fp ^ fp) & e->fp_mask) | (e->tag ^ tag)) != 0)
        return false;
    /* In unwinding order: each slot is one the unwinder would read now, given that the
     * ones before it hold what they held (see unwind.h), so every read is of live stack. */
    const struct mt_unwind_check *check = cache->list[index].check;
    uint32_t i = 0, checks = e->checks;
    while (i < checks && *(const volatile uint64_t *)check[i].addr == check[i].value)
        i++;
    return i == checks;
}

/* The key (mt_unwind_key; key->ip = 0 when there is none), and the cached stack id for it
 * at `depth` in the store generation, or 0 (a miss). Inline: every event's path. */
static inline __attribute__((always_inline)) uint32_t mt_unwind_cache_lookup(struct mt_unwind_cache *cache, const void *frame, uint32_t depth,
                                                     uint32_t generation, struct mt_unwind_key *key)
{
    uint64_t ip, sp, fp;
    const uintptr_t *record = frame;
    if (MT_LIKELY(record && !mt_unwind_is_own(record[1]))) {
        /* The common case, read in registers: the exported function's frame record. */
        ip = record[1];
        sp = (uintptr_t)frame + MT_UNWIND_FRAME_RECORD;
        fp = record[0];
    } else {
        if (!mt_unwind_key(key, frame)) {
            key->ip = 0;
            return 0;
        }
        ip = key->ip, sp = key->sp, fp = key->fp;
    }
    _Static_assert(MT_UNWIND_CACHE_WAYS == 2, "the lookup tries the set's two ways");
    unsigned first = mt_unwind_set_index(ip, sp) * MT_UNWIND_CACHE_WAYS;
    uint64_t tag = mt_unwind_ready_tag(depth, generation);
    if (MT_LIKELY(mt_unwind_entry_hits(cache, first, ip, sp, fp, tag)))
        return cache->entry[first].id;
    if (mt_unwind_entry_hits(cache, first + 1, ip, sp, fp, tag))
        return cache->entry[first + 1].id;
    *key = (struct mt_unwind_key){ip, sp, fp};
    return 0;
}

#endif
