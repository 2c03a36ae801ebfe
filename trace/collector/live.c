/* The live set: every block a process allocated and has not freed, keyed by address, and
 * a bounded memory of recent frees. The per-event operations (insert, remove, find,
 * prefetch) are inline in live.h; this file makes, grows and frees the table. */
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
    *set = (struct mt_live_set){.slots = slots_alloc(LIVE_INITIAL_SLOTS), .mask = LIVE_INITIAL_SLOTS - 1};
}

void mt_live_free(struct mt_live_set *set)
{
    if (set->slots)
        mt_host_unmap(set->slots, (set->mask + 1) * sizeof *set->slots);
    *set = (struct mt_live_set){0};
}

void mt_live_grow(struct mt_live_set *set)
{
    struct mt_block *old = set->slots;
    size_t old_cap = set->mask + 1;
    size_t cap = old_cap * 2;
    set->slots = slots_alloc(cap);
    set->mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].ptr)
            continue;
        size_t s = mt_live_home(set, old[i].ptr);
        while (set->slots[s].ptr)
            s = (s + 1) & set->mask;
        set->slots[s] = old[i];
    }
    mt_host_unmap(old, old_cap * sizeof *old);
}

struct mt_freed_block *mt_freed_ring(struct mt_freed_memory *mem)
{
    if (!mem->ring)
        mem->ring = mt_xcalloc(MT_FREED_MEMORY, sizeof *mem->ring);
    return mem->ring;
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
