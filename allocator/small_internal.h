/* Cross-file names of the small-block engine (segment.c, page.c, heap.c). */
#ifndef MT_ALLOCATOR_SMALL_INTERNAL_H
#define MT_ALLOCATOR_SMALL_INTERNAL_H

#include "../common/lock.h"
#include "small.h"

/* Protects the segment pool, the abandoned list, the heap registry and the heap pool, and
 * serialises frees into abandoned segments. Taken on slow paths only: a thread's first
 * allocation, a new or adopted segment, thread exit, a free into a dead thread's memory. */
extern mt_lock_t mt_small_lock;

/* Every small segment ever mapped, newest first; segments are never unmapped (their
 * pages are decommitted instead), so walkers may follow this list without the lock. */
extern _Atomic(struct mt_segment *) mt_all_segments;

/* Heaps of live threads (under mt_small_lock). */
extern struct mt_heap *mt_heap_registry;

/* Where a thread's cache top of a class points until it first uses the class: no entry,
 * and the end mark at the top (heap.c). */
extern const struct mt_slot_cache mt_cache_unstarted;

/* Entries a class's slot cache holds at most (MT_CACHE_MAX, fewer for big blocks). */
unsigned mt_small_cache_limit(unsigned cls);

/* Allocations made from pages since released, per class (a page in use counts its own:
 * mt_page_allocs). */
extern _Atomic uint64_t mt_retired_class_allocs[MT_SMALL_CLASSES];

/* ---- pages (page.c) ---- */
void mt_page_init(struct mt_page *page, unsigned cls);
/* Fold remote frees into the free bits; true if any were found. Reports a slot freed both
 * locally and remotely as a double free. */
bool mt_page_collect(struct mt_page *page);
/* Make cached slots free and recompute `used` from the bitmaps: after a fork, for the
 * pages of threads that are gone with their slot caches (and may have been stopped
 * between changing a bit and pushing, popping or counting it). */
void mt_page_recount(struct mt_page *page);
/* Free bytes available in the page (free slots times block size). */
size_t mt_page_free_bytes(const struct mt_page *page);

/* ---- segments (segment.c) ---- */
/* A segment with every page free, from the pool or the OS; NULL when the OS refuses. Its
 * owner is NULL; the caller sets it. Takes mt_small_lock. */
struct mt_segment *mt_segment_acquire(void);
/* The page's slots have all been handed out at some time (its touched mark reached its
 * capacity): make its huge-page range of the segment one transparent huge page if every
 * page there is in use and at least 7/8 of the range has been written, once in the
 * segment's life. A program with megabytes of small blocks touches them at random and,
 * with 4 KiB pages, spends a good part of its time on TLB misses (churn bench: 64K live
 * blocks of 16-256 B, 12 MiB: 7-12% of its CPU time); a range that full is nearly all
 * resident anyway, so the huge page costs little memory. Ranges with free pages or
 * sparsely used ones (a program with under 2 MiB of small blocks, a few big blocks in each
 * page) keep 4 KiB pages. The range is collapsed (MADV_COLLAPSE), not advised: a page
 * decommitted later splits the huge page and stays out of memory. Once per segment: a
 * program that frees everything and allocates again (segments to the pool, decommitted,
 * and back) does not copy its memory into new huge pages each time. */
void mt_segment_page_touched(struct mt_page *page);
/* Put an unowned segment whose pages are all free into the pool, decommitted. Caller holds
 * mt_small_lock. */
void mt_segment_pool_put(struct mt_segment *seg);
/* Pop a free page of the segment; NULL when it has none. */
struct mt_page *mt_segment_take_page(struct mt_segment *seg);
/* Return a page that became empty to its segment, decommitting it when `decommit`. */
void mt_segment_put_page(struct mt_segment *seg, struct mt_page *page, bool decommit);

/* Abandoned segments (under mt_small_lock). */
void mt_abandoned_push(struct mt_segment *seg);
void mt_abandoned_remove(struct mt_segment *seg);
struct mt_segment *mt_abandoned_first(void);

#endif
