/* Debug mode's records of small blocks (see debug_slots.h for the record).
 *
 * Layout: each small segment that ever held a debug block has a region of its own,
 * MT_PAGES_PER_SEGMENT slices of MT_DEBUG_SLICE_SLOTS records (slice p for page p, record
 * i for slot i), then a header. It is mapped on demand and never unmapped (as the segments
 * it describes are not); only the records of slots in use are ever touched, so a page of
 * 80-byte blocks costs 13 KiB of records, not the slice's 64 KiB. The segment's header
 * points at its region (debug_records), so a free finds it with one load.
 *
 * Invariants:
 *   - a record's state word is nonzero exactly while the debug layer holds the slot (live
 *     or quarantined): it is written after the allocator returned the slot and cleared
 *     before the slot goes back to it, so a nonzero record describes the block in its slot
 *     now (and the page cannot change size class under a held slot);
 *   - held[p] counts the nonzero records of page p, and HELD_DIRTY says slice p may have
 *     resident memory. Slices whose count fell to zero are decommitted by a sweep every
 *     SWEEP_EVERY times a count falls to zero, so records do not stay resident after the
 *     program frees its blocks (200 MiB of 64-byte blocks would leave 50 MiB), and a page
 *     that empties and fills again on every call (a malloc/free loop without quarantine)
 *     does not pay an madvise each time (it did: ten times slower). The decommit runs
 *     under region_lock with HELD_DECOMMITTING set in held[p]; a claim that finds the bit
 *     waits for it to clear before writing its record, so a decommit never wipes a live
 *     record. */
#include "debug_slots.h"

#include "../common/lock.h"
#include "../common/platform.h"
#include "small.h"

#define SLICE_BYTES (MT_DEBUG_SLICE_SLOTS * sizeof(struct mt_debug_slot))
/* Flags in held[p], far above any count of slots. */
#define HELD_DECOMMITTING (1u << 31) /* slice p is being decommitted */
#define HELD_DIRTY (1u << 30)        /* slice p was written since it was last decommitted */
#define HELD_COUNT_MASK (HELD_DIRTY - 1)
/* Pages emptied between two sweeps: at most this many emptied slices stay resident (a
 * megabyte of records at most), and a loop that empties a page on every call pays one
 * madvise per this many calls (about as fast as the hash table this replaced; with 256,
 * test_rss's exited-threads case in debug mode ended 30 MiB above its start, past its
 * 24 MiB margin, as it does not with 64). A sweep reads 64 counts per 4 MiB of small blocks: pages empty once
 * per hundreds of frees in ordinary programs, so that stays cheap on large heaps too. */
#define SWEEP_EVERY 64

struct region_header {
    struct slot_region *next; /* every region, newest first, for the scan */
    uintptr_t segment;        /* the small segment described */
    _Atomic uint32_t held[MT_PAGES_PER_SEGMENT];
};

struct slot_region {
    /* Slices first: each starts at a multiple of SLICE_BYTES from the mapping, so it can be
     * decommitted on its own whatever the OS page size (up to 64 KiB). */
    struct mt_debug_slot slots[MT_PAGES_PER_SEGMENT][MT_DEBUG_SLICE_SLOTS];
    struct region_header h;
};

_Static_assert(SLICE_BYTES % 65536 == 0, "slices must be page-aligned for any OS page size up to 64 KiB");

_Static_assert(offsetof(struct slot_region, slots) == 0, "a segment's header points at its region's first record");

static _Atomic(struct slot_region *) regions; /* list head (h.next links) */
/* Guards region creation and slice decommits; taken rarely (a new segment, a page whose
 * last debug block left). */
static mt_lock_t region_lock;
static _Atomic uint64_t pages_emptied;

static struct slot_region *region_of(uintptr_t addr)
{
    return (struct slot_region *)mt_debug_slot_records(addr);
}

static MT_NOINLINE struct slot_region *region_create(uintptr_t addr)
{
    mt_lock(&region_lock);
    struct slot_region *r = region_of(addr);
    if (!r && (r = mt_os_map(sizeof *r))) {
        struct mt_segment *seg = mt_small_segment_of((const void *)addr);
        r->h.segment = (uintptr_t)seg;
        r->h.next = atomic_load_explicit(&regions, memory_order_relaxed);
        atomic_store_explicit(&regions, r, memory_order_release);
        atomic_store_explicit(&seg->debug_records, &r->slots[0][0], memory_order_release);
    }
    mt_unlock(&region_lock);
    return r;
}

static unsigned page_number(const void *ptr)
{
    return (unsigned)(((uintptr_t)ptr >> MT_PAGE_SHIFT) & (MT_PAGES_PER_SEGMENT - 1));
}

struct mt_debug_slot *mt_debug_slot_hold(const void *ptr)
{
    size_t index;
    if (!mt_debug_slot_page(ptr, &index))
        return NULL; /* not reached: the allocator returned it as a slot */
    struct slot_region *r = region_of((uintptr_t)ptr);
    if (MT_UNLIKELY(!r) && !(r = region_create((uintptr_t)ptr)))
        return NULL;
    unsigned p = page_number(ptr);
    struct mt_debug_slot *slot = &r->slots[p][index];
    uint32_t held = atomic_fetch_add_explicit(&r->h.held[p], 1, memory_order_acq_rel);
    while (MT_UNLIKELY(held & HELD_DECOMMITTING)) {
        mt_os_yield(); /* a decommit of this very slice is under way: one madvise */
        held = atomic_load_explicit(&r->h.held[p], memory_order_acquire);
    }
    if (MT_UNLIKELY(!(held & HELD_DIRTY)))
        atomic_fetch_or_explicit(&r->h.held[p], HELD_DIRTY, memory_order_relaxed);
    atomic_store_explicit(&slot->state, mt_debug_state_word(MT_DEBUG_WINDOW, NULL), memory_order_release);
    return slot;
}

bool mt_debug_slot_claim(const void *ptr, size_t size, const void *site)
{
    struct mt_debug_slot *slot = mt_debug_slot_hold(ptr);
    if (!slot)
        return false;
    mt_debug_slot_promote(slot, size, site);
    return true;
}

/* Decommit the slices of every page without a debug block (held[p] exactly HELD_DIRTY). */
static MT_NOINLINE void sweep(void)
{
    mt_lock(&region_lock);
    for (struct slot_region *r = atomic_load_explicit(&regions, memory_order_acquire); r; r = r->h.next) {
        for (unsigned p = 0; p < MT_PAGES_PER_SEGMENT; p++) {
            uint32_t idle = HELD_DIRTY;
            if (atomic_load_explicit(&r->h.held[p], memory_order_relaxed) != idle ||
                !atomic_compare_exchange_strong_explicit(&r->h.held[p], &idle, HELD_DECOMMITTING,
                                                         memory_order_acq_rel, memory_order_relaxed))
                continue;
            mt_os_decommit(r->slots[p], SLICE_BYTES);
            atomic_fetch_and_explicit(&r->h.held[p], ~HELD_DECOMMITTING, memory_order_release);
        }
    }
    mt_unlock(&region_lock);
}

void mt_debug_slot_forget(const void *ptr, struct mt_debug_slot *slot)
{
    struct slot_region *r = region_of((uintptr_t)ptr);
    unsigned p = page_number(ptr);
    atomic_store_explicit(&slot->state, 0, memory_order_release);
    uint32_t held = atomic_fetch_sub_explicit(&r->h.held[p], 1, memory_order_acq_rel);
    if ((held & HELD_COUNT_MASK) == 1 &&
        (atomic_fetch_add_explicit(&pages_emptied, 1, memory_order_relaxed) + 1) % SWEEP_EVERY == 0)
        sweep();
}

bool mt_debug_slots_scan(mt_debug_slot_visit visit, void *ctx)
{
    for (struct slot_region *r = atomic_load_explicit(&regions, memory_order_acquire); r; r = r->h.next) {
        struct mt_segment *seg = (struct mt_segment *)r->h.segment;
        for (unsigned p = 0; p < MT_PAGES_PER_SEGMENT; p++) {
            if ((atomic_load_explicit(&r->h.held[p], memory_order_acquire) & HELD_COUNT_MASK) == 0)
                continue;
            const struct mt_page *page = &seg->meta[p].page;
            size_t capacity = page->capacity, block_size = page->block_size;
            const uint8_t *start = page->start;
            for (size_t i = 0; i < capacity && i < MT_MAX_SLOTS_PER_PAGE; i++) {
                struct mt_debug_slot *slot = &r->slots[p][i];
                uint64_t state = atomic_load_explicit(&slot->state, memory_order_acquire);
                if (state == 0)
                    continue;
                uint64_t alloc = atomic_load_explicit(&slot->alloc, memory_order_relaxed);
                if (visit(ctx, start + i * block_size, alloc, state))
                    continue;
                /* Broken, unless the block changed meanwhile (freed, reused, its page given
                 * to another size class). */
                if (atomic_load_explicit(&slot->state, memory_order_acquire) == state &&
                    atomic_load_explicit(&slot->alloc, memory_order_relaxed) == alloc &&
                    page->block_size == block_size)
                    return false;
            }
        }
    }
    return true;
}

void mt_debug_slots_ranges(void (*visit)(void *ctx, uintptr_t start, size_t bytes), void *ctx)
{
    mt_lock(&region_lock);
    for (struct slot_region *r = atomic_load_explicit(&regions, memory_order_acquire); r; r = r->h.next)
        visit(ctx, (uintptr_t)r, sizeof *r);
    mt_unlock(&region_lock);
}

void mt_debug_slots_fork_prepare(void)
{
    mt_lock(&region_lock);
}

void mt_debug_slots_fork_parent(void)
{
    mt_unlock(&region_lock);
}

void mt_debug_slots_fork_child(void)
{
    mt_lock_reset(&region_lock);
}
