/* Debug mode's records of small blocks: one 16-byte record per slot, found by arithmetic.
 *
 * The debug layer (debug.c) keeps, for every block it hands out, the requested size, the
 * code addresses that allocated and freed it, and whether it is live or quarantined. Small
 * blocks (nearly every call of a real program) keep theirs here, in an array beside their
 * segment indexed like the slot bitmaps (page, slot), instead of a hash table: a free
 * finds the record from the address and the page descriptor the allocator reads anyway,
 * with no probe and no lock. The hash table it replaced cost a cache miss per lookup and
 * 100-200 bytes per block (measured: 70% of debug mode's time on a Python workload).
 *
 * A record is two words, so that a free is one compare-and-swap of the second:
 *   alloc: requested size in the top 16 bits, allocation site in the low 48;
 *   state: MT_DEBUG_LIVE, _QUARANTINED or _WINDOW in bits 48-55, free site in the low 48,
 *          MT_DEBUG_VERIFIED in bit 56; 0 when the debug layer does not hold the slot.
 * Code addresses of user space fit 48 bits on x86-64 and AArch64; a site that does not is
 * kept as 0 (reports then just omit it). */
#ifndef MT_ALLOCATOR_DEBUG_SLOTS_H
#define MT_ALLOCATOR_DEBUG_SLOTS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/compiler.h"
#include "small.h"

/* WINDOW: taken from the allocator by the debug layer's randomization window, not yet
 * handed to the program (the allocation site and size are those of the slot's last
 * block, kept for the report of a late double free). */
enum mt_debug_state { MT_DEBUG_EMPTY = 0, MT_DEBUG_LIVE = 1, MT_DEBUG_QUARANTINED = 2, MT_DEBUG_WINDOW = 3 };

#define MT_DEBUG_SITE_BITS 48
#define MT_DEBUG_SITE_MASK (((uint64_t)1 << MT_DEBUG_SITE_BITS) - 1)

/* In a WINDOW record's state word: the slot's first `size` bytes (the size in its alloc
 * word, that of its last block) were verified to read as poison when the block left the
 * quarantine, and nothing has written them since (a held slot is the holding thread's
 * alone, and small slots never hold allocator data). The next allocation of the slot
 * need not fill those bytes when the fill byte is the poison byte. Above the state byte,
 * so mt_debug_state_of ignores it. */
#define MT_DEBUG_VERIFIED ((uint64_t)1 << (MT_DEBUG_SITE_BITS + 8))

struct mt_debug_slot {
    _Atomic uint64_t alloc; /* size << 48 | allocation site */
    _Atomic uint64_t state; /* state << 48 | free site; 0: not held */
};

MT_INLINE uint64_t mt_debug_site_bits(const void *site)
{
    uint64_t s = (uint64_t)(uintptr_t)site;
    return s <= MT_DEBUG_SITE_MASK ? s : 0;
}

MT_INLINE uint64_t mt_debug_state_word(enum mt_debug_state state, const void *free_site)
{
    return (uint64_t)state << MT_DEBUG_SITE_BITS | mt_debug_site_bits(free_site);
}

MT_INLINE enum mt_debug_state mt_debug_state_of(uint64_t state_word)
{
    return (enum mt_debug_state)((state_word >> MT_DEBUG_SITE_BITS) & 0xff);
}

MT_INLINE size_t mt_debug_size_of(uint64_t alloc_word)
{
    return (size_t)(alloc_word >> MT_DEBUG_SITE_BITS);
}

MT_INLINE const void *mt_debug_site_of(uint64_t word)
{
    return (const void *)(uintptr_t)(word & MT_DEBUG_SITE_MASK);
}

/* Records per page: a slice of 64 KiB, so that each slice can be decommitted on its own
 * whatever the OS page size (up to 64 KiB); a page uses the first MT_MAX_SLOTS_PER_PAGE
 * of them at most, and only the records of slots in use are ever touched. */
#define MT_DEBUG_SLICE_SLOTS (MT_PAGE_SIZE / MT_MIN_BLOCK)
_Static_assert(MT_DEBUG_SLICE_SLOTS >= MT_MAX_SLOTS_PER_PAGE, "a slice has a record for every slot of its page");

/* The records of the small segment holding addr (the first record of its region: page p,
 * slot i at index p * MT_DEBUG_SLICE_SLOTS + i), or NULL when the layer never used it. */
MT_INLINE struct mt_debug_slot *mt_debug_slot_records(uintptr_t addr)
{
    return atomic_load_explicit(&mt_small_segment_of((const void *)addr)->debug_records, memory_order_acquire);
}

/* The page descriptor and slot index of ptr, an address in a small segment, or NULL when
 * ptr is not a slot start in use. mt_small_slot_index's one compare refuses interior
 * pointers, indexes past the page's capacity and released pages; the benchmark build
 * without hardening compiles that check out, so there the result is verified here (a
 * multiply and three compares, a twentieth of a debug free's instructions otherwise). */
MT_INLINE struct mt_page *mt_debug_slot_page(const void *ptr, size_t *index)
{
    struct mt_page *page = mt_small_page_of(mt_small_segment_of(ptr), ptr);
    size_t i = mt_small_slot_index(page, ptr);
#ifdef MT_NO_HARDENING
    if (MT_UNLIKELY(i >= page->capacity || page->start + i * page->block_size != (const uint8_t *)ptr))
        return NULL;
#else
    if (MT_UNLIKELY(i == SIZE_MAX))
        return NULL;
#endif
    *index = i;
    return page;
}

/* The record of slot `index` of the page at ptr, given the segment's records. */
MT_INLINE struct mt_debug_slot *mt_debug_slot_at(struct mt_debug_slot *records, const void *ptr, size_t index)
{
    size_t p = ((uintptr_t)ptr >> MT_PAGE_SHIFT) & (MT_PAGES_PER_SEGMENT - 1);
    return &records[p * MT_DEBUG_SLICE_SLOTS + index];
}

/* The record of the block at ptr, an address in a small segment; NULL when ptr is not the
 * start of a slot in use, or the debug layer never had a block in its segment. The record
 * may be empty (state 0): the slot is not the debug layer's. The slot's page in *page. */
MT_INLINE struct mt_debug_slot *mt_debug_slot_find_page(const void *ptr, struct mt_page **page)
{
    size_t index;
    struct mt_page *pg = mt_debug_slot_page(ptr, &index);
    if (!pg)
        return NULL;
    struct mt_debug_slot *records = mt_debug_slot_records((uintptr_t)ptr);
    if (!records)
        return NULL;
    *page = pg;
    return mt_debug_slot_at(records, ptr, index);
}

MT_INLINE struct mt_debug_slot *mt_debug_slot_find(const void *ptr)
{
    struct mt_page *page;
    return mt_debug_slot_find_page(ptr, &page);
}

/* Hold the slot at ptr, a slot start the allocator just returned, for the debug layer
 * (state MT_DEBUG_WINDOW); its record, or NULL when the memory for the records cannot be
 * had (the caller gives the block back). */
struct mt_debug_slot *mt_debug_slot_hold(const void *ptr);

/* A held slot becomes a live block of `size` bytes (at most MT_SMALL_MAX): two stores, no
 * atomic read-modify-write (the slot is the caller's alone). */
MT_INLINE void mt_debug_slot_promote(struct mt_debug_slot *slot, size_t size, const void *site)
{
    atomic_store_explicit(&slot->alloc, (uint64_t)size << MT_DEBUG_SITE_BITS | mt_debug_site_bits(site),
                          memory_order_relaxed);
    atomic_store_explicit(&slot->state, mt_debug_state_word(MT_DEBUG_LIVE, NULL), memory_order_release);
}

/* Hold and promote at once: false when the records cannot be had. */
bool mt_debug_slot_claim(const void *ptr, size_t size, const void *site);

/* Forget the block at ptr (its record `slot`, quarantined or held): the caller frees it
 * to the allocator right after. */
void mt_debug_slot_forget(const void *ptr, struct mt_debug_slot *slot);

/* Called for each held record by mt_debug_slots_scan: false when the block is broken. */
typedef bool (*mt_debug_slot_visit)(void *ctx, const void *ptr, uint64_t alloc, uint64_t state);

/* Visit every held record; stops at the first block `visit` finds broken and returns false
 * (a block that changed while it was looked at is not reported: threads may be freeing
 * and allocating meanwhile). */
bool mt_debug_slots_scan(mt_debug_slot_visit visit, void *ctx);

/* The records' own memory (their regions), for mt_debug_metadata_ranges:
 * they hold no block addresses, and scanning their megabytes of untouched pages as roots
 * would only cost time. */
void mt_debug_slots_ranges(void (*visit)(void *ctx, uintptr_t start, size_t bytes), void *ctx);

void mt_debug_slots_fork_prepare(void);
void mt_debug_slots_fork_parent(void);
void mt_debug_slots_fork_child(void);

#endif
