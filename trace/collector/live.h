/* The live set's types and its per-event operations (one insert or one remove per event),
 * inline so that the event path (process.c) pays no call and keeps its values in
 * registers; growing, freeing and the memory of recent frees are in live.c.
 *
 * Open addressing with linear probing and backward-shift deletion (no tombstones, so a
 * long run of malloc/free pairs never degrades the table). Load is kept at most 3/8 (85 to
 * 170 bytes per live block): a lookup touches one or two cache lines, and a removal's
 * backward shift rarely scans further. At up to 1/2 (a program holding 64K blocks sat at
 * exactly 1/2) probe runs were long enough that the removals' scans past the prefetched
 * lines cost the churn benchmark 18% more collector time. */
#ifndef MT_COLLECTOR_LIVE_H
#define MT_COLLECTOR_LIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../common/compiler.h"
#include "../../common/hash.h"

/* 32 bytes, so that two blocks share a cache line: the live set is the collector's
 * largest random-access structure and its misses are most of the cost per event. Packed
 * fields: size (40 bits, requests beyond 1 TiB are recorded as 1 TiB - 1) with the stack
 * statistics index (24 bits; a process has at most MT_WIRE_STACKS_MAX stacks); the event
 * index (40 bits) with the thread_idx (24 bits). */
struct mt_block {
    uint64_t ptr; /* 0: empty slot */
    uint64_t ts_ns;
    uint64_t size_stat;
    uint64_t seq_thread;
};
#define MT_BLOCK_LOW_BITS 40
#define MT_BLOCK_LOW_MASK ((1ull << MT_BLOCK_LOW_BITS) - 1)

static inline struct mt_block mt_block_make(uint64_t ptr, uint64_t size, uint64_t ts_ns, uint64_t seq, uint32_t stat,
                                            uint32_t thread)
{
    if (size > MT_BLOCK_LOW_MASK)
        size = MT_BLOCK_LOW_MASK;
    return (struct mt_block){ptr, ts_ns, size | (uint64_t)stat << MT_BLOCK_LOW_BITS,
                             (seq & MT_BLOCK_LOW_MASK) | (uint64_t)thread << MT_BLOCK_LOW_BITS};
}
static inline uint64_t mt_block_size(const struct mt_block *b) { return b->size_stat & MT_BLOCK_LOW_MASK; }
static inline uint32_t mt_block_stat(const struct mt_block *b) { return (uint32_t)(b->size_stat >> MT_BLOCK_LOW_BITS); }
static inline uint64_t mt_block_seq(const struct mt_block *b) { return b->seq_thread & MT_BLOCK_LOW_MASK; }
static inline uint32_t mt_block_thread(const struct mt_block *b)
{
    return (uint32_t)(b->seq_thread >> MT_BLOCK_LOW_BITS);
}

/* The latest inserted block waits outside the table until the next operation (pending):
 * a block freed right after it was allocated (the commonest pattern of all) then never
 * touches the table. Its slot was found when it was inserted (or is its home slot, when
 * the table was empty: not even hashed then), and nothing changes the table before it is
 * placed there, so every slot holds what it would have held without
 * the wait (an insert into an empty slot undone by a removal leaves the table as it was:
 * the blocks after that slot have their homes after it, so the backward shift moves none). */
struct mt_live_set {
    struct mt_block *slots;
    size_t mask;  /* capacity - 1 (power of two) */
    size_t count; /* including the pending block */
    bool has_pending;
    size_t pending_slot; /* MT_LIVE_SLOT_UNKNOWN: its home slot (the table was empty) */
    struct mt_block pending;
};

#define MT_LIVE_SLOT_UNKNOWN SIZE_MAX

void mt_live_init(struct mt_live_set *set);
void mt_live_free(struct mt_live_set *set);
/* Double the capacity (live.c: rare, kept out of the inline path). No block is pending. */
void mt_live_grow(struct mt_live_set *set);

static inline size_t mt_live_home(const struct mt_live_set *set, uint64_t ptr)
{
    return (size_t)mt_mix64(ptr) & set->mask;
}

/* Start loading the slot where ptr would be (a hint; no effect on the set): the home
 * slot's cache line and the next, since a removal's backward shift reads the slots after
 * the block until an empty one (two 32-byte slots per line). Always inline: GCC deems a
 * function that only prefetches free of effects and drops calls to it (the prefetch of
 * every record vanished when this was merely `static inline`). */
MT_INLINE void mt_live_prefetch(const struct mt_live_set *set, uint64_t ptr)
{
    size_t s = mt_live_home(set, ptr);
    __builtin_prefetch(&set->slots[s], 1);
    __builtin_prefetch(&set->slots[((s | 1) + 1) & set->mask], 1);
}

/* Put the pending block in its slot (before any other use of the table). */
MT_INLINE void mt_live_place_pending(struct mt_live_set *set)
{
    if (set->has_pending) {
        size_t s = set->pending_slot;
        if (s == MT_LIVE_SLOT_UNKNOWN) /* inserted into an empty table: its home is free */
            s = mt_live_home(set, set->pending.ptr);
        set->slots[s] = set->pending;
        set->has_pending = false;
    }
}

/* Insert (replacing a stale block at the same address: the producer's order makes that a
 * lost free). Returns the stale block's copy in *replaced when there was one. */
MT_INLINE bool mt_live_insert(struct mt_live_set *set, const struct mt_block *block, struct mt_block *replaced)
{
    mt_live_place_pending(set);
    if (set->count == 0) {
        /* Nothing to replace and the home slot is free: the slot is only computed if the
         * block is placed (a block freed at once, the loop of malloc/free, never is). */
        set->pending = *block;
        set->pending_slot = MT_LIVE_SLOT_UNKNOWN;
        set->has_pending = true;
        set->count = 1;
        return false;
    }
    if (MT_UNLIKELY((set->count + 1) * 8 > (set->mask + 1) * 3)) /* load > 3/8 */
        mt_live_grow(set);
    struct mt_block *slots = set->slots;
    size_t mask = set->mask;
    size_t s = mt_live_home(set, block->ptr);
    while (slots[s].ptr) {
        if (slots[s].ptr == block->ptr) {
            *replaced = slots[s];
            slots[s] = *block;
            return true;
        }
        s = (s + 1) & mask;
    }
    set->pending = *block;
    set->pending_slot = s;
    set->has_pending = true;
    set->count++;
    return false;
}

static inline const struct mt_block *mt_live_find(const struct mt_live_set *set, uint64_t ptr)
{
    if (!set->slots)
        return NULL;
    if (set->has_pending && set->pending.ptr == ptr)
        return &set->pending;
    size_t s = mt_live_home(set, ptr);
    while (set->slots[s].ptr) {
        if (set->slots[s].ptr == ptr)
            return &set->slots[s];
        s = (s + 1) & set->mask;
    }
    return NULL;
}

/* Remove and return the block at ptr; false when unknown. */
MT_INLINE bool mt_live_remove(struct mt_live_set *set, uint64_t ptr, struct mt_block *out)
{
    if (set->has_pending && set->pending.ptr == ptr) {
        *out = set->pending;
        set->has_pending = false;
        set->count--;
        return true;
    }
    mt_live_place_pending(set);
    struct mt_block *slots = set->slots;
    size_t mask = set->mask;
    size_t s = mt_live_home(set, ptr);
    while (slots[s].ptr != ptr) {
        if (!slots[s].ptr)
            return false;
        s = (s + 1) & mask;
    }
    *out = slots[s];
    set->count--;
    /* Backward shift: pull later members of the probe run into the hole when their home
     * slot allows it, so that lookups never stop early at an empty slot. */
    size_t hole = s;
    for (size_t j = (hole + 1) & mask; slots[j].ptr; j = (j + 1) & mask) {
        size_t home = mt_live_home(set, slots[j].ptr);
        /* j may move to hole iff home is not cyclically in (hole, j]. */
        if (((j - home) & mask) < ((j - hole) & mask))
            continue;
        slots[hole] = slots[j];
        hole = j;
    }
    slots[hole].ptr = 0;
    return true;
}

/* The table (mask + 1 slots, ptr 0: empty), the pending block placed first: for a walk
 * over every block at the end of a process. */
static inline const struct mt_block *mt_live_slots(struct mt_live_set *set)
{
    mt_live_place_pending(set);
    return set->slots;
}

#endif
