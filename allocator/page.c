/* Small pages: formatting a page for a size class, collecting remote frees and recounting
 * after a fork. Only the owning thread (or a holder of mt_small_lock for an abandoned page)
 * calls these. Moving slots between the bitmaps and the slot cache is heap.c's. */
#include <string.h>

#include "small_internal.h"

void mt_page_init(struct mt_page *page, unsigned cls)
{
    uint32_t block_size = mt_class_size[cls];
    uint32_t capacity = mt_page_capacity_for(block_size);
    page->block_size = block_size;
    /* ceil(2^32 / size): multiplying an offset below 2^16 by it and shifting by 32 gives
     * the exact quotient (the error term n*e/2^32 stays below 1/size), and the low half of
     * the product says whether the offset is a multiple (mt_small_slot_index). */
    page->recip = (uint32_t)((((uint64_t)1 << 32) + block_size - 1) / block_size);
    /* The product's excess over 2^32 per block (0 for a power of two): slot k's offset
     * gives a low half of k * excess, so capacity * excess admits exactly the slots. */
    uint32_t excess = (uint32_t)((uint64_t)page->recip * block_size - ((uint64_t)1 << 32));
    if (excess == 0 && capacity * block_size < MT_PAGE_SIZE) {
        /* A power of two whose slots end before the page does (16 bytes: 2048 slots in
         * 32 KiB): one more in the reciprocal makes the excess the block size, so the
         * limit refuses the offsets past the last slot too. The quotient stays exact: for
         * an offset k * 16 + r below 2^16 the low half k * 16 + r * recip stays below 2^32,
         * and when r > 0 it is at least recip, far above the limit (2048 * 16). */
        page->recip += 1;
        excess = block_size;
    }
    page->slot_limit = (uint16_t)(excess ? capacity * excess : 1);
    page->capacity = (uint16_t)capacity;
    page->cls = (uint8_t)cls;
    page->words = (uint16_t)((capacity + 63) / 64);
    page->nonempty = 0;
    page->state = MT_PAGE_ACTIVE;
    page->committed = 1;
    page->pinned = 0;
    page->touched = 0;
    page->refill_shift = MT_REFILL_SHIFT_MAX; /* full batches until other threads free here */
    atomic_store_explicit(&page->counts, 0, memory_order_relaxed);
    atomic_store_explicit(&page->full, 0, memory_order_relaxed);
    for (uint32_t w = 0; w < page->words; w++) {
        uint32_t slots_here = capacity - w * 64;
        uint64_t mask = slots_here >= 64 ? ~0ull : ((1ull << slots_here) - 1);
        atomic_store_explicit(mt_page_word(page, w).free, mask, memory_order_relaxed);
        atomic_store_explicit(mt_page_word(page, w).idle, mask, memory_order_relaxed);
        atomic_store_explicit(mt_page_word(page, w).remote, 0, memory_order_relaxed);
        page->nonempty |= 1ull << w;
    }
}

bool mt_page_collect(struct mt_page *page)
{
    /* The tag first (see MT_PAGE_REMOTE_PENDING), then the bits. */
    if (atomic_load_explicit(&page->owner, memory_order_relaxed) & MT_PAGE_REMOTE_PENDING)
        atomic_fetch_and_explicit(&page->owner, ~MT_PAGE_REMOTE_PENDING, memory_order_seq_cst);
    bool found = false;
    uint32_t collected = 0;
    for (uint32_t w = 0; w < page->words; w++) {
        struct mt_bits_ref b = mt_page_word(page, w);
        if (atomic_load_explicit(b.remote, memory_order_relaxed) == 0)
            continue;
        uint64_t r = atomic_exchange_explicit(b.remote, 0, memory_order_acq_rel);
        if (r == 0)
            continue;
        uint64_t f = atomic_load_explicit(b.free, memory_order_relaxed);
        uint64_t owner_freed = atomic_load_explicit(b.idle, memory_order_relaxed);
        if (MT_UNLIKELY(owner_freed & r)) {
            /* Freed by the owner and by another thread: report the first such slot, and
             * count it once. */
            uint64_t both = owner_freed & r;
            size_t index = (size_t)w * 64 + (size_t)__builtin_ctzll(both);
            mt_heap_error_simple(MT_ERR_DOUBLE_FREE, page->start + index * page->block_size, page->block_size,
                                 MT_API_FREE, "freed by two threads");
            r &= ~owner_freed;
        }
        atomic_store_explicit(b.free, f | r, memory_order_relaxed);
        atomic_store_explicit(b.idle, owner_freed | r, memory_order_relaxed);
        collected += (uint32_t)mt_popcount64(r);
        page->nonempty |= 1ull << w;
        found = true;
    }
    if (found)
        mt_page_count_add(page, (uint64_t)0 - collected);
    return found;
}

void mt_page_recount(struct mt_page *page)
{
    uint32_t free_slots = 0;
    page->nonempty = 0;
    for (uint32_t w = 0; w < page->words; w++) {
        /* The thread whose cache held the cached slots is gone: they are free. */
        struct mt_bits_ref b = mt_page_word(page, w);
        uint64_t f = atomic_load_explicit(b.idle, memory_order_relaxed);
        atomic_store_explicit(b.free, f, memory_order_relaxed);
        free_slots += (uint32_t)mt_popcount64(f);
        if (f)
            page->nonempty |= 1ull << w;
    }
    page->pinned = 0; /* the thread that pinned it is gone */
    uint64_t allocs = atomic_load_explicit(&page->counts, memory_order_relaxed) & ~MT_PAGE_USED_MASK;
    atomic_store_explicit(&page->counts, allocs | (page->capacity - free_slots), memory_order_relaxed);
}

size_t mt_page_free_bytes(const struct mt_page *page)
{
    uint32_t used = mt_page_used(page);
    return used >= page->capacity ? 0 : (size_t)(page->capacity - used) * page->block_size;
}
