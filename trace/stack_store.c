/* The stack store (stack_store.h): open addressing with linear probing over the process
 * area's slots; entries and frames are reserved with fetch_add and never freed (a stack
 * id is valid for the life of the process image). */
#include "stack_store.h"

#include <stdatomic.h>
#include <string.h>

#include "../common/compiler.h"

/* The header gets a page of its own; the arrays follow, each page-aligned so a sparse
 * memfd only materialises the pages actually touched. */
#define AREA_HEADER_BYTES 4096u
#define AREA_ALIGN 4096u

static uint64_t slots_offset(void)
{
    return AREA_HEADER_BYTES;
}

static uint64_t stacks_offset(void)
{
    return mt_align_up(slots_offset() + (uint64_t)MT_WIRE_STACK_SLOTS * sizeof(uint64_t), AREA_ALIGN);
}

static uint64_t frames_offset(void)
{
    return mt_align_up(stacks_offset() + (uint64_t)MT_WIRE_STACKS_MAX * sizeof(struct mt_wire_stack),
                       AREA_ALIGN);
}

uint64_t mt_stack_store_area_size(void)
{
    return frames_offset() + (uint64_t)MT_WIRE_FRAMES_MAX * sizeof(uint64_t);
}

bool mt_stack_store_init_area(struct mt_wire_proc *proc, uint64_t size)
{
    if (size < mt_stack_store_area_size())
        return false;
    proc->magic = MT_WIRE_MAGIC;
    proc->version = MT_WIRE_VERSION;
    proc->area_size = size;
    proc->slots_at = slots_offset();
    proc->stacks_at = stacks_offset();
    proc->frames_at = frames_offset();
    /* Id 0 means "no stack", and frame 0 is never used so an entry's frames_at of 0 is
     * recognisably unset. */
    atomic_store_explicit(&proc->next_stack, 1, memory_order_relaxed);
    atomic_store_explicit(&proc->next_frame, 1, memory_order_relaxed);
    return true;
}

void mt_stack_store_attach(struct mt_stack_store *store, struct mt_wire_proc *proc, uint32_t generation)
{
    char *base = (char *)proc;
    store->proc = proc;
    store->slots = (_Atomic uint64_t *)(void *)(base + proc->slots_at);
    store->stacks = (struct mt_wire_stack *)(void *)(base + proc->stacks_at);
    store->frames = (uint64_t *)(void *)(base + proc->frames_at);
    store->generation = generation;
}

uint64_t mt_stack_hash(const uint64_t *frames, uint32_t depth)
{
    /* A multiply-xorshift per address (the constants are the 64-bit golden ratio and
     * splitmix64's finaliser): fast and mixes the low bits that differ between sites. */
    uint64_t h = 0x9e3779b97f4a7c15ull ^ depth;
    for (uint32_t i = 0; i < depth; i++) {
        h ^= frames[i];
        h *= 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
    }
    h ^= h >> 29;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 32;
    return h ? h : 1;
}

static bool same_stack(const struct mt_stack_store *store, uint32_t id, uint64_t hash, const uint64_t *frames,
                       uint32_t depth)
{
    const struct mt_wire_stack *s = &store->stacks[id];
    return s->hash == hash && s->depth == depth &&
           memcmp(&store->frames[s->frames_at], frames, depth * sizeof *frames) == 0;
}

/* Reserve and write a complete entry; 0 when the store is full. */
static uint32_t write_entry(struct mt_stack_store *store, uint64_t hash, const uint64_t *frames, uint32_t depth)
{
    struct mt_wire_proc *proc = store->proc;
    if (atomic_load_explicit(&proc->stacks_full, memory_order_relaxed))
        return 0;
    uint32_t id = atomic_fetch_add_explicit(&proc->next_stack, 1, memory_order_relaxed);
    uint32_t at = atomic_fetch_add_explicit(&proc->next_frame, depth, memory_order_relaxed);
    if (id >= MT_WIRE_STACKS_MAX || (uint64_t)at + depth > MT_WIRE_FRAMES_MAX) {
        atomic_store_explicit(&proc->stacks_full, 1, memory_order_relaxed);
        return 0;
    }
    memcpy(&store->frames[at], frames, depth * sizeof *frames);
    store->stacks[id].hash = hash;
    store->stacks[id].frames_at = at;
    store->stacks[id].depth = depth;
    return id;
}

static uint32_t intern_shared(struct mt_stack_store *store, uint64_t hash, const uint64_t *frames, uint32_t depth)
{
    uint64_t tag = (hash >> 32) << 32;
    uint64_t mask = MT_WIRE_STACK_SLOTS - 1;
    uint32_t mine = 0; /* our entry, once written */
    for (uint64_t i = hash & mask, probes = 0; probes < MT_WIRE_STACK_SLOTS; i = (i + 1) & mask, probes++) {
        uint64_t slot = atomic_load_explicit(&store->slots[i], memory_order_acquire);
        if (slot == 0) {
            if (mine == 0) {
                mine = write_entry(store, hash, frames, depth);
                if (mine == 0)
                    return 0;
            }
            uint64_t want = tag | mine;
            if (atomic_compare_exchange_strong_explicit(&store->slots[i], &slot, want, memory_order_release,
                                                        memory_order_acquire))
                return mine;
            /* Lost the slot: `slot` now holds the winner; fall through and compare. */
        }
        if ((slot & ~(uint64_t)UINT32_MAX) == tag && same_stack(store, (uint32_t)slot, hash, frames, depth))
            return (uint32_t)slot;
    }
    return 0;
}

uint32_t mt_stack_store_intern(struct mt_stack_store *store, struct mt_stack_cache *cache, const uint64_t *frames,
                               uint32_t depth)
{
    if (depth == 0 || store->proc == NULL)
        return 0;
    uint64_t hash = mt_stack_hash(frames, depth);
    struct mt_stack_cache_entry *e = NULL;
    if (cache) {
        e = &cache->entry[hash & (MT_STACK_CACHE_SIZE - 1)];
        if (e->hash == hash && e->generation == store->generation)
            return e->id;
    }
    uint32_t id = intern_shared(store, hash, frames, depth);
    if (e && id) {
        e->hash = hash;
        e->id = id;
        e->generation = store->generation;
    }
    return id;
}
