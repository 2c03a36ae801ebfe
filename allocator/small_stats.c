/* Small-block statistics, histogram, walk and consistency check.
 *
 * All of these read other threads' pages with relaxed atomics while those threads keep
 * allocating: each number is exact for a quiescent heap and approximate otherwise. The
 * checker verifies the invariants that hold at every instant for every page, and the
 * stronger ones (used counts, the free-word summary, queue membership, the slot cache
 * against the cached bits) only for the calling thread's own heap, where nothing moves
 * under it. */
#include <string.h>

#include "check.h"
#include "small_internal.h"
#include "stats.h"
#include "walk.h"

static bool page_is_live(const struct mt_page *page)
{
    return page->state == MT_PAGE_ACTIVE && page->block_size != 0;
}

/* Blocks of the page that are live (used minus the pin), clamped to its capacity as the
 * page may change while we read it. */
static uint32_t page_live_blocks(const struct mt_page *page)
{
    uint32_t used = mt_page_used(page);
    used -= used && page->pinned; /* the pin is not a block */
    return used <= page->capacity ? used : page->capacity;
}

void mt_small_stats(struct mt_zone_stats *out)
{
    memset(out, 0, sizeof *out);
    size_t live_blocks = 0;
    uint64_t allocs = 0;
    for (struct mt_segment *seg = atomic_load_explicit(&mt_all_segments, memory_order_acquire); seg;
         seg = seg->all_next) {
        out->mapped += MT_SEGMENT_SIZE;
        out->committed += MT_SEGMENT_META_PAGES * MT_PAGE_SIZE;
        for (size_t i = MT_SEGMENT_META_PAGES; i < MT_PAGES_PER_SEGMENT; i++) {
            const struct mt_page *page = &seg->meta[i].page;
            if (page_is_live(page)) {
                uint32_t used = page_live_blocks(page);
                uint32_t cap = page->capacity;
                out->committed += MT_PAGE_SIZE;
                out->in_use += (size_t)used * page->block_size;
                out->free_bytes += (size_t)(cap - used) * page->block_size;
                live_blocks += used;
                allocs += mt_page_allocs(page);
                if (used < cap) {
                    out->free_chunks++;
                    if (page->block_size > out->largest_free)
                        out->largest_free = page->block_size;
                }
            } else if (page->state == MT_PAGE_FREE && page->committed) {
                out->committed += MT_PAGE_SIZE;
                out->free_bytes += MT_PAGE_SIZE;
                out->free_chunks++;
                out->largest_free = MT_PAGE_SIZE;
            }
        }
    }
    out->live_blocks = live_blocks;
    for (unsigned c = 0; c < MT_SMALL_CLASSES; c++)
        allocs += atomic_load_explicit(&mt_retired_class_allocs[c], memory_order_relaxed);
    out->total_allocs = allocs;
    out->total_frees = allocs >= live_blocks ? allocs - live_blocks : 0;
}

void mt_small_histogram(uint64_t live[MT_SMALL_CLASSES], uint64_t allocs[MT_SMALL_CLASSES],
                        uint64_t capacity[MT_SMALL_CLASSES])
{
    for (struct mt_segment *seg = atomic_load_explicit(&mt_all_segments, memory_order_acquire); seg;
         seg = seg->all_next) {
        for (size_t i = MT_SEGMENT_META_PAGES; i < MT_PAGES_PER_SEGMENT; i++) {
            const struct mt_page *page = &seg->meta[i].page;
            if (!page_is_live(page) || page->cls >= MT_SMALL_CLASSES)
                continue;
            live[page->cls] += page_live_blocks(page);
            allocs[page->cls] += mt_page_allocs(page);
            capacity[page->cls] += page->capacity;
        }
    }
    for (unsigned c = 0; c < MT_SMALL_CLASSES; c++)
        allocs[c] += atomic_load_explicit(&mt_retired_class_allocs[c], memory_order_relaxed);
}

void mt_small_walk(struct mt_walker *walker)
{
    for (struct mt_segment *seg = atomic_load_explicit(&mt_all_segments, memory_order_acquire); seg;
         seg = seg->all_next) {
        for (size_t i = MT_SEGMENT_META_PAGES; i < MT_PAGES_PER_SEGMENT; i++) {
            const struct mt_page *page = &seg->meta[i].page;
            if (!page_is_live(page))
                continue;
            uint32_t block_size = page->block_size;
            uint32_t capacity = page->capacity;
            if (block_size == 0 || capacity == 0 || capacity > MT_MAX_SLOTS_PER_PAGE)
                continue; /* released while we looked */
            if (walker->zone) {
                struct mt_zone_info zone = {MT_ZONE_SMALL, (uintptr_t)page->start, MT_PAGE_SIZE, block_size};
                walker->zone(walker, &zone);
            }
            if (!walker->block)
                continue;
            for (uint32_t w = 0; w * 64 < capacity; w++) {
                uint64_t freed = atomic_load_explicit(mt_page_word(page, w).idle, memory_order_relaxed) |
                                 atomic_load_explicit(mt_page_word(page, w).remote, memory_order_relaxed);
                for (uint32_t b = 0; b < 64 && w * 64 + b < capacity; b++)
                    if (!(freed & (1ull << b)))
                        walker->block(walker, page->start + (size_t)(w * 64 + b) * block_size, block_size);
            }
        }
    }
}

/* Invariants of one page that hold at any instant. */
static bool check_page_always(struct mt_check *check, const struct mt_segment *seg, size_t i)
{
    const struct mt_page *page = &seg->meta[i].page;
    /* A page never used has an all-zero descriptor (its segment formats it when it first
     * hands it out). */
    bool never_used = page->start == NULL && page->state == MT_PAGE_FREE;
    if (page->start != (const uint8_t *)seg + i * MT_PAGE_SIZE && !never_used)
        return mt_check_fail(check, page, "small page %zu of segment %p has a wrong start", i, (const void *)seg);
    if (page->state != MT_PAGE_ACTIVE)
        return true;
    if (page->cls >= MT_SMALL_CLASSES || page->block_size != mt_class_size[page->cls])
        return mt_check_fail(check, page->start, "small page has block size %u but class %u", page->block_size,
                             page->cls);
    if (page->capacity != mt_page_capacity_for(page->block_size) || page->words != (page->capacity + 63) / 64 ||
        page->slot_limit == 0)
        return mt_check_fail(check, page->start, "small page capacity %u does not match its block size %u",
                             page->capacity, page->block_size);
    uint32_t tail = page->capacity % 64;
    if (tail) {
        uint64_t beyond = ~((1ull << tail) - 1);
        struct mt_bits_ref last = mt_page_word(page, page->words - 1);
        if ((atomic_load_explicit(last.free, memory_order_relaxed) |
             atomic_load_explicit(last.idle, memory_order_relaxed) |
             atomic_load_explicit(last.remote, memory_order_relaxed)) & beyond)
            return mt_check_fail(check, page->start, "small page has bits set beyond its %u slots",
                                 page->capacity);
    }
    return true;
}

/* Invariants that hold only when nobody else is changing the page. Adds the page's cached
 * slots to *cached_slots. */
static bool check_page_quiescent(struct mt_check *check, const struct mt_page *page, size_t *cached_slots)
{
    uint32_t free_slots = 0;
    for (uint32_t w = 0; w < page->words; w++) {
        uint64_t f = atomic_load_explicit(mt_page_word(page, w).free, memory_order_relaxed);
        uint64_t idle = atomic_load_explicit(mt_page_word(page, w).idle, memory_order_relaxed);
        uint64_t r = atomic_load_explicit(mt_page_word(page, w).remote, memory_order_relaxed);
        uint64_t twice = (f & ~idle) | (idle & r);
        if (twice)
            return mt_check_fail(check, page->start + (size_t)(w * 64 + (uint32_t)__builtin_ctzll(twice)) *
                                                          page->block_size,
                                 "small slot is free but not idle, or idle and remotely freed");
        *cached_slots += (size_t)mt_popcount64(idle & ~f);
        if (((page->nonempty >> w) & 1) != (f != 0))
            return mt_check_fail(check, page->start, "small page's summary of free words disagrees with word %u", w);
        free_slots += (uint32_t)mt_popcount64(idle);
    }
    uint32_t used = mt_page_used(page);
    if (used == 0)
        return mt_check_fail(check, page->start, "small page in use counts no used slot (it should be released)");
    if (used + free_slots != page->capacity + page->pinned)
        return mt_check_fail(check, page->start, "small page counts %u used slots but its bitmap says %u", used,
                             page->capacity + page->pinned - free_slots);
    return true;
}

static bool check_queue(struct mt_check *check, const struct mt_page_queue *q, int cls, bool full)
{
    const struct mt_page *prev = NULL;
    size_t n = 0;
    for (const struct mt_page *page = q->first; page; page = page->next) {
        if (++n > MT_PAGES_PER_SEGMENT * 65536)
            return mt_check_fail(check, page, "small page queue does not terminate");
        if (page->prev != prev)
            return mt_check_fail(check, page->start, "small page queue has a broken back link");
        if (page->state != MT_PAGE_ACTIVE)
            return mt_check_fail(check, page->start, "a free page is on a heap queue");
        if (cls >= 0 && page->cls != cls)
            return mt_check_fail(check, page->start, "page of class %u is queued for class %d", page->cls, cls);
        if ((atomic_load_explicit(&page->full, memory_order_relaxed) != 0) != full)
            return mt_check_fail(check, page->start, "page's full flag disagrees with its queue");
        prev = page;
    }
    if (q->last != prev)
        return mt_check_fail(check, q, "small page queue's last pointer is wrong");
    return true;
}

/* The calling thread's slot cache of one class: each entry is a cached slot of an active
 * page of ours of that class, and the stack ends with the sentinel at the class's limit.
 * Together with the count of cached bits over our pages, this makes the cached bits and
 * the entries one-to-one (no slot cached twice, none lost). */
static bool check_cache(struct mt_check *check, const struct mt_heap *self, unsigned cls, size_t *entries)
{
    const struct mt_slot_cache *cache = &self->cache[cls];
    const struct mt_cache_entry *top = mt_tls.cache_top[cls];
    if (top == mt_cache_unstarted.entry) { /* the thread has not used the class yet */
        if (mt_cache_unstarted.entry[0].block != MT_CACHE_SENTINEL)
            return mt_check_fail(check, &mt_cache_unstarted, "the unstarted slot cache lost its end mark");
        return true;
    }
    unsigned limit = mt_small_cache_limit(cls);
    if (top < cache->entry || top > cache->entry + limit)
        return mt_check_fail(check, cache, "slot cache of class %u has its top outside the stack", cls);
    if (cache->entry[limit].block != MT_CACHE_SENTINEL)
        return mt_check_fail(check, cache, "slot cache of class %u lost its end mark", cls);
    for (const struct mt_cache_entry *e = cache->entry; e < top; e++) {
        void *ptr = e->block;
        if (mt_segmap_kind(mt_segmap_entry((uintptr_t)ptr)) != MT_SEG_SMALL)
            return mt_check_fail(check, ptr, "slot cache of class %u holds a pointer outside small segments", cls);
        const struct mt_page *page = mt_small_page_of(mt_small_segment_of(ptr), ptr);
        size_t index = mt_small_slot_index(page, ptr);
        if (page->state != MT_PAGE_ACTIVE || page->cls != cls ||
            mt_page_owner(page, memory_order_relaxed) != self || index == SIZE_MAX)
            return mt_check_fail(check, ptr, "slot cache of class %u holds a slot that is not one of ours", cls);
        if (e->slot != ((uintptr_t)page | (uintptr_t)index << MT_CACHE_INDEX_SHIFT))
            return mt_check_fail(check, ptr, "slot cache of class %u has a wrong page or index for a slot", cls);
        struct mt_bits_ref b = mt_page_word(page, index >> 6);
        uint64_t cached = atomic_load_explicit(b.idle, memory_order_relaxed) &
                          ~atomic_load_explicit(b.free, memory_order_relaxed);
        if (!((cached >> (index & 63)) & 1))
            return mt_check_fail(check, ptr, "slot cache of class %u holds a slot without its cached bit", cls);
    }
    for (const struct mt_cache_entry *e = top; e < cache->entry + limit; e++)
        if (e->block != NULL)
            return mt_check_fail(check, e->block, "slot cache of class %u keeps a block above its top", cls);
    *entries += (size_t)(top - cache->entry);
    return true;
}

bool mt_small_check(struct mt_check *check)
{
    struct mt_heap *self = mt_tls.heap;
    size_t cached_slots = 0;
    for (struct mt_segment *seg = atomic_load_explicit(&mt_all_segments, memory_order_acquire); seg;
         seg = seg->all_next) {
        if (mt_segmap_kind(mt_segmap_entry((uintptr_t)seg)) != MT_SEG_SMALL)
            return mt_check_fail(check, seg, "small segment is not marked in the segment map");
        for (size_t i = 0; i < MT_PAGES_PER_SEGMENT; i++)
            if (!check_page_always(check, seg, i))
                return false;
        bool mine = atomic_load_explicit(&seg->owner, memory_order_relaxed) == self && self != &mt_heap_empty;
        if (!mine)
            continue;
        uint32_t active = 0, free_pages = 0;
        for (size_t i = MT_SEGMENT_META_PAGES; i < MT_PAGES_PER_SEGMENT; i++) {
            const struct mt_page *page = &seg->meta[i].page;
            if (page->state == MT_PAGE_ACTIVE) {
                active++;
                if (!check_page_quiescent(check, page, &cached_slots))
                    return false;
            }
        }
        for (const struct mt_page *page = seg->free_pages; page; page = page->next) {
            if (page->state != MT_PAGE_FREE)
                return mt_check_fail(check, page->start, "a page in use is on its segment's free list");
            if (++free_pages > MT_PAGES_PER_SEGMENT)
                return mt_check_fail(check, seg, "segment free list does not terminate");
        }
        free_pages += MT_PAGES_PER_SEGMENT - seg->formatted;
        if (active != seg->used_pages || free_pages != seg->free_count ||
            active + free_pages != MT_PAGES_PER_SEGMENT - MT_SEGMENT_META_PAGES)
            return mt_check_fail(check, seg, "segment counts %u used and %u free pages, found %u and %u",
                                 seg->used_pages, seg->free_count, active, free_pages);
    }
    if (self != &mt_heap_empty) {
        for (unsigned c = 0; c < MT_SMALL_CLASSES; c++) {
            if (!check_queue(check, &self->avail[c], (int)c, false))
                return false;
            struct mt_page *direct = self->direct[c];
            if (direct != &mt_empty_page && (direct->state != MT_PAGE_ACTIVE || direct->cls != c))
                return mt_check_fail(check, direct->start, "class %u allocates from a page of class %u", c,
                                     direct->cls);
        }
        if (!check_queue(check, &self->full, -1, true))
            return false;
        size_t entries = 0;
        for (unsigned c = 0; c < MT_SMALL_CLASSES; c++)
            if (!check_cache(check, self, c, &entries))
                return false;
        if (entries != cached_slots)
            return mt_check_fail(check, self, "slot caches hold %zu entries but %zu slots are marked cached", entries,
                                 cached_slots);
    }
    return true;
}
