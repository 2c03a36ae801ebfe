/* Mappings of guarded blocks (see debug_guard.h).
 *
 * Pool: for each unit size (1 to POOL_MAX_DATA_PAGES data pages, plus the guard page), a
 * stack of free units and a chunk of reserved address space carved from the bottom up.
 * Invariant: every page of a free unit, and the guard page of every unit, is PROT_NONE;
 * only the data pages of a unit whose block is live are read-write. A freed unit keeps
 * its pages (made inaccessible, not discarded), so handing it out again is one mprotect
 * and no page fault. Chunks are never unmapped (address space only, like the stacks).
 * Large guarded mappings are kept the same way, a few, in a cache (below). One lock: one
 * allocation in MTRACE_GUARD_SAMPLE (on average) and the large blocks come here. */
#include "debug_guard.h"

#include "../common/lock.h"
#include "../common/platform.h"
#include "alloc.h"

/* Small blocks go up to 8 KiB: two data pages hold any of them with its alignment. */
#define POOL_MAX_DATA_PAGES 2
/* Address space reserved at a time for one unit size: a few hundred units. */
#define POOL_CHUNK_BYTES ((size_t)2 << 20)
/* First capacity of a unit stack, doubled as it fills: 256 pointers, within the page
 * mmap rounds the first mapping up to. */
#define STACK_MIN 256

struct unit_pool {
    uint8_t **free; /* stack of free units */
    size_t count, cap;
    uint8_t *next, *end; /* uncarved part of the current chunk */
};

/* Mappings of large guarded blocks that left the quarantine, kept for the next large
 * block of about their size: a fresh mapping costs a page fault per page (the fill writes
 * every page, and so do most programs), which made debug mode 8 times glibc's time on
 * the large-block benchmark, where glibc reuses its heap. At most this many mappings and
 * this many bytes (resident: the pages are kept), the oldest unmapped first. */
#define LARGE_CACHE_ENTRIES 16
#define LARGE_CACHE_BYTES ((size_t)64 << 20)
/* A cached mapping serves a block of at least 1/LARGE_FIT_SHARE of its data pages. */
#define LARGE_FIT_SHARE 2

struct cached_mapping {
    uint8_t *base;
    size_t map_size; /* 0: a free entry */
};

static mt_lock_t pool_lock;
static struct unit_pool pools[POOL_MAX_DATA_PAGES];
static struct cached_mapping large_cache[LARGE_CACHE_ENTRIES] MT_BIG_BSS; /* debug mode only */
static size_t large_cache_bytes;

static struct unit_pool *pool_for(size_t map_size)
{
    size_t pages = map_size / mt_os_page_size() - 1;
    return pages >= 1 && pages <= POOL_MAX_DATA_PAGES ? &pools[pages - 1] : NULL;
}

/* A unit's guard page gets a mapping attribute its data pages lack (left out of core
 * dumps: it never holds data), so the data pages become a mapping (VMA) of their own for
 * good, bounded by guards the kernel will not merge them with. Each mprotect of a unit
 * then changes one whole VMA in place; with the guards alike, making the data pages
 * read-write split the chunk's PROT_NONE VMA in three and retiring them merged it back,
 * and those splits and merges (maple tree updates, VMA allocations and RCU frees) were
 * most of the kernel time of the sampled guards, and their cache footprint cost the
 * program as much again (small-block churn: MTRACE_GUARD=0 saved 10% of debug mode's
 * time). One madvise per unit, at its first use: units are never unmapped. */
static void carve_unit(uint8_t *u, size_t unit)
{
    size_t page = mt_os_page_size();
    mt_os_advise_no_dump(u + unit - page, page);
}

static uint8_t *pool_take(struct unit_pool *pool, size_t unit)
{
    mt_lock(&pool_lock);
    uint8_t *u = NULL;
    if (pool->count) {
        u = pool->free[--pool->count];
    } else {
        if ((size_t)(pool->end - pool->next) < unit) {
            uint8_t *chunk = mt_os_reserve(POOL_CHUNK_BYTES);
            if (chunk) {
                pool->next = chunk;
                pool->end = chunk + POOL_CHUNK_BYTES / unit * unit;
            }
        }
        if ((size_t)(pool->end - pool->next) >= unit) {
            u = pool->next;
            pool->next += unit;
            carve_unit(u, unit);
        }
    }
    mt_unlock(&pool_lock);
    return u;
}

/* False when the stack cannot grow (the caller unmaps the unit instead). */
static bool pool_give(struct unit_pool *pool, uint8_t *u)
{
    mt_lock(&pool_lock);
    if (pool->count == pool->cap) {
        size_t new_cap = pool->cap ? pool->cap * 2 : STACK_MIN;
        /* mremap moves the stack's pages instead of copying its entries. */
        uint8_t **stack = pool->free ? mt_os_remap(pool->free, pool->cap * sizeof *stack, new_cap * sizeof *stack, true)
                                     : mt_os_map(new_cap * sizeof *stack);
        if (!stack) {
            mt_unlock(&pool_lock);
            return false;
        }
        pool->free = stack;
        pool->cap = new_cap;
    }
    pool->free[pool->count++] = u;
    mt_unlock(&pool_lock);
    return true;
}

/* A cached mapping with room for `data` bytes of data pages, not too much more; NULL when
 * there is none. */
static uint8_t *large_cache_take(size_t data, size_t *map_size)
{
    size_t page = mt_os_page_size();
    struct cached_mapping *best = NULL;
    mt_lock(&pool_lock);
    for (size_t i = 0; i < LARGE_CACHE_ENTRIES; i++) {
        struct cached_mapping *c = &large_cache[i];
        size_t cap = c->map_size ? c->map_size - page : 0;
        if (cap >= data && cap / LARGE_FIT_SHARE <= data && (!best || c->map_size < best->map_size))
            best = c;
    }
    uint8_t *base = NULL;
    if (best) {
        base = best->base;
        *map_size = best->map_size;
        large_cache_bytes -= best->map_size;
        best->map_size = 0;
    }
    mt_unlock(&pool_lock);
    return base;
}

/* Keep a retired mapping for reuse, unmapping the oldest ones beyond the cache's bounds;
 * false when it does not fit at all (the caller unmaps it). */
static bool large_cache_put(uint8_t *base, size_t map_size)
{
    if (map_size > LARGE_CACHE_BYTES)
        return false;
    struct cached_mapping evicted[LARGE_CACHE_ENTRIES];
    size_t n_evicted = 0;
    mt_lock(&pool_lock);
    /* Entries are kept oldest first: evict from the front, append at the back. */
    size_t used = 0;
    for (size_t i = 0; i < LARGE_CACHE_ENTRIES; i++)
        if (large_cache[i].map_size)
            large_cache[used++] = large_cache[i];
    for (size_t i = used; i < LARGE_CACHE_ENTRIES; i++)
        large_cache[i].map_size = 0;
    size_t drop = 0;
    while (drop < used && (used - drop == LARGE_CACHE_ENTRIES || large_cache_bytes + map_size > LARGE_CACHE_BYTES)) {
        evicted[n_evicted++] = large_cache[drop];
        large_cache_bytes -= large_cache[drop].map_size;
        drop++;
    }
    for (size_t i = drop; i < used; i++)
        large_cache[i - drop] = large_cache[i];
    used -= drop;
    for (size_t i = used; i < LARGE_CACHE_ENTRIES; i++)
        large_cache[i].map_size = 0;
    large_cache[used] = (struct cached_mapping){base, map_size};
    large_cache_bytes += map_size;
    mt_unlock(&pool_lock);
    for (size_t i = 0; i < n_evicted; i++)
        mt_os_unmap(evicted[i].base, evicted[i].map_size);
    return true;
}

uint8_t *mt_debug_guard_map(size_t data, size_t align, size_t *map_size)
{
    size_t page = mt_os_page_size();
    *map_size = data + page;
    struct unit_pool *pool = align <= page ? pool_for(*map_size) : NULL;
    if (pool) {
        uint8_t *u = pool_take(pool, *map_size);
        /* A reused unit keeps its pages (retired without a discard): no page fault. */
        if (u && mt_os_commit(u, data))
            return u;
        if (u)
            pool_give(pool, u);
        return NULL;
    }
    if (align <= page) {
        uint8_t *base = large_cache_take(data, map_size);
        if (base) {
            /* The block ends against the guard page: only its own pages become
             * accessible; the ones before it stay inaccessible and are given back. */
            size_t head = *map_size - page - data;
            if (mt_os_commit(base + head, data))
                return base;
            mt_os_unmap(base, *map_size);
            *map_size = data + page;
        }
    }
    uint8_t *map = mt_os_map_aligned(*map_size, align > page ? align : page);
    if (!map)
        return NULL;
    if (!mt_os_protect_none(map + data, page)) {
        mt_os_unmap(map, *map_size);
        return NULL;
    }
    return map;
}

void mt_debug_guard_retire(uint8_t *base, size_t map_size)
{
    /* Inaccessible, pages kept: the unit or mapping is reused without page faults. What
     * stays resident is bounded by the quarantine and the caches. */
    mt_os_protect_none(base, map_size - mt_os_page_size());
}

void mt_debug_guard_unmap(uint8_t *base, size_t map_size)
{
    struct unit_pool *pool = pool_for(map_size);
    /* A pooled unit is retired already (its block was freed), as the stack requires. */
    if (pool && pool_give(pool, base))
        return;
    if (!pool && large_cache_put(base, map_size))
        return;
    mt_os_unmap(base, map_size);
}

void mt_debug_guard_ranges(void (*visit)(void *ctx, uintptr_t start, size_t bytes), void *ctx)
{
    mt_lock(&pool_lock);
    for (size_t i = 0; i < POOL_MAX_DATA_PAGES; i++)
        if (pools[i].free)
            visit(ctx, (uintptr_t)pools[i].free, pools[i].cap * sizeof *pools[i].free);
    mt_unlock(&pool_lock);
}

void mt_debug_guard_fork_prepare(void)
{
    mt_lock(&pool_lock);
}

void mt_debug_guard_fork_parent(void)
{
    mt_unlock(&pool_lock);
}

void mt_debug_guard_fork_child(void)
{
    mt_lock_reset(&pool_lock);
}
