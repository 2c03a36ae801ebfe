/* The live set: every block a process allocated and has not freed, keyed by address, and
 * a bounded memory of recent frees.
 *
 * Open addressing with linear probing and backward-shift deletion (no tombstones, so a
 * long run of malloc/free pairs never degrades the table). Load is kept under 1/2: a
 * lookup touches one or two cache lines. Each event does exactly one insert or remove, so
 * this table is the collector's hottest structure after the ring copy. */
#include "collector.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"

/* Initial slots: small processes (most of a test suite) stay small. */
#define LIVE_INITIAL_SLOTS 1024

/* Slots come from their own mapping (huge pages once big: see mt_host_map_table). */
static struct mt_block *slots_alloc(size_t count)
{
    struct mt_block *slots = mt_host_map_table(count * sizeof *slots);
    if (!slots) {
        fprintf(stderr, "mtrace-run: error: out of memory (live set of %zu slots)\n", count);
        exit(1);
    }
    return slots;
}

void mt_live_init(struct mt_live_set *set)
{
    set->slots = slots_alloc(LIVE_INITIAL_SLOTS);
    set->mask = LIVE_INITIAL_SLOTS - 1;
    set->count = 0;
}

void mt_live_free(struct mt_live_set *set)
{
    if (set->slots)
        mt_host_unmap(set->slots, (set->mask + 1) * sizeof *set->slots);
    *set = (struct mt_live_set){0};
}

static size_t home_slot(const struct mt_live_set *set, uint64_t ptr)
{
    return (size_t)mt_mix64(ptr) & set->mask;
}

static void live_grow(struct mt_live_set *set)
{
    struct mt_block *old = set->slots;
    size_t old_cap = set->mask + 1;
    size_t cap = old_cap * 2;
    set->slots = slots_alloc(cap);
    set->mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].ptr)
            continue;
        size_t s = home_slot(set, old[i].ptr);
        while (set->slots[s].ptr)
            s = (s + 1) & set->mask;
        set->slots[s] = old[i];
    }
    mt_host_unmap(old, old_cap * sizeof *old);
}

/* The home slot's cache line and the next: a removal's backward shift reads the slots
 * after the block until an empty one, and those loads were the collector's largest stall
 * with one line prefetched (two 32-byte slots per line). */
void mt_live_prefetch(const struct mt_live_set *set, uint64_t ptr)
{
    size_t s = home_slot(set, ptr);
    __builtin_prefetch(&set->slots[s], 1);
    __builtin_prefetch(&set->slots[(s | 1) + 1 <= set->mask ? (s | 1) + 1 : 0], 1);
}

bool mt_live_insert(struct mt_live_set *set, const struct mt_block *block, struct mt_block *replaced)
{
    if ((set->count + 1) * 2 > set->mask + 1)
        live_grow(set);
    size_t s = home_slot(set, block->ptr);
    while (set->slots[s].ptr) {
        if (set->slots[s].ptr == block->ptr) {
            *replaced = set->slots[s];
            set->slots[s] = *block;
            return true;
        }
        s = (s + 1) & set->mask;
    }
    set->slots[s] = *block;
    set->count++;
    return false;
}

const struct mt_block *mt_live_find(const struct mt_live_set *set, uint64_t ptr)
{
    if (!set->slots)
        return NULL;
    size_t s = home_slot(set, ptr);
    while (set->slots[s].ptr) {
        if (set->slots[s].ptr == ptr)
            return &set->slots[s];
        s = (s + 1) & set->mask;
    }
    return NULL;
}

bool mt_live_remove(struct mt_live_set *set, uint64_t ptr, struct mt_block *out)
{
    size_t s = home_slot(set, ptr);
    while (set->slots[s].ptr != ptr) {
        if (!set->slots[s].ptr)
            return false;
        s = (s + 1) & set->mask;
    }
    *out = set->slots[s];
    set->count--;
    /* Backward shift: pull later members of the probe run into the hole when their home
     * slot allows it, so that lookups never stop early at an empty slot. */
    size_t hole = s;
    for (size_t j = (hole + 1) & set->mask; set->slots[j].ptr; j = (j + 1) & set->mask) {
        size_t home = home_slot(set, set->slots[j].ptr);
        /* j may move to hole iff home is not cyclically in (hole, j]. */
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (stays)
            continue;
        set->slots[hole] = set->slots[j];
        hole = j;
    }
    set->slots[hole].ptr = 0;
    return true;
}

void mt_freed_remember(struct mt_freed_memory *mem, const struct mt_freed_block *block)
{
    if (!mem->ring)
        mem->ring = mt_xcalloc(MT_FREED_MEMORY, sizeof *mem->ring);
    mem->ring[mem->next % MT_FREED_MEMORY] = *block;
    mem->next++;
}

const struct mt_freed_block *mt_freed_find(const struct mt_freed_memory *mem, uint64_t ptr)
{
    if (!mem->ring)
        return NULL;
    size_t n = mem->next < MT_FREED_MEMORY ? mem->next : MT_FREED_MEMORY;
    /* Newest first: a reused address's latest free is the one that matters. Linear, but
     * only heap error reports ask. */
    for (size_t i = 0; i < n; i++) {
        const struct mt_freed_block *b = &mem->ring[(mem->next - 1 - i) % MT_FREED_MEMORY];
        if (ptr >= b->ptr && ptr < b->ptr + (b->size ? b->size : 1))
            return b;
    }
    return NULL;
}

void mt_freed_free(struct mt_freed_memory *mem)
{
    free(mem->ring);
    *mem = (struct mt_freed_memory){0};
}
