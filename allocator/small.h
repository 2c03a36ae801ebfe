/* Small blocks: thread-owned slab pages with out-of-band slot bitmaps, and a per-thread
 * cache of slots per size class in front of them.
 *
 * A small segment (4 MiB, aligned) holds a header, page descriptors and slot bitmaps in its
 * first two 64 KiB pages, then 62 pages of slots. A page serves one size class. Each slot
 * has three bits kept outside the slot, in the segment header:
 *   free   - the slot is available in the page; written only by the owning thread;
 *   idle   - the slot holds no live block as far as the owner knows: it is free, or it sits
 *            in the owner's slot cache ("cached": idle and not free); written only by the
 *            owner. One bit for both, so the owner's free() checks and sets one word;
 *   remote - another thread freed the slot; set atomically by that thread, folded into
 *            `free` and `idle` by the owner when it runs out of slots ("collect").
 * No pointer is ever stored inside a free slot, so an overflow or use-after-free cannot
 * corrupt the allocator's lists, and a double free is caught deterministically from any
 * thread: one of the slot's bits says it is already free.
 *
 * The slot cache: per thread and class, a small LIFO stack of free slots (the block's
 * address, and its page descriptor's with the slot index) kept in the heap, its top pointer
 * in TLS. free() of an owned slot sets its idle bit (already set: a double free; remote
 * frees are covered by the page's tag, see Ownership), counts the slot out of its page and
 * pushes it; malloc() pops the most recently freed slot (hot in the CPU cache, with its
 * bitmap word and page descriptor), clears the bit and counts it back. A cached slot is
 * not counted in its page's used count, so a page whose blocks are all freed is released
 * at once (its entries are dropped from the cache), whatever the cache holds. When
 * a class's stack is empty, malloc's slow path moves a batch of free bits of the refill
 * page into it; when it is full, free's slow path returns the older half to the bitmaps.
 * Each stack holds at most mt_small_cache_limit(cls) entries (fewer for big blocks,
 * bounding the bytes a thread keeps).
 *
 * Ownership: a segment belongs to one thread's heap (seg->owner), and each of its pages in
 * use carries a copy (page->owner) so that free() decides local or remote from the page
 * descriptor it reads anyway. The owner allocates and frees with plain loads and stores:
 * no lock, no atomic read-modify-write, no system call. Other threads free with one
 * atomic OR on the remote word, and then tag page->owner with MT_PAGE_REMOTE_PENDING
 * (another atomic OR, skipped while the tag is already set). A tagged page no longer
 * matches its owner's heap, so the owner's free() takes the slow path for it, which
 * collects the remote frees (clearing the tag) before checking the block: the fast path
 * checks a block's remote bit without reading it, by comparing the owner it compares
 * anyway. When a thread exits, it empties its slot cache and its
 * segments are abandoned (seg->owner and page->owner 0): frees into them take a global lock,
 * and the next thread that needs pages adopts them, so memory of dead threads is reused or
 * returned.
 *
 * Invariants (checked by mt_small_check):
 *   - bit w of page->nonempty is set exactly when bitmap word w has a free bit;
 *   - mt_page_used(page) == capacity - popcount(idle) + page->pinned (uncollected remote
 *     frees count as used), and is never 0 for a page in use: the page is released when it
 *     reaches 0. The page a thread refills from is pinned: the extra count keeps it from
 *     being released while it is the refill page;
 *   - free is a subset of idle; idle and remote are disjoint; no bit is set beyond the
 *     page's capacity;
 *   - a slot is cached (idle, not free) exactly when the owner's cache of the page's class
 *     holds one entry for it; entries above a cache's top hold no block (but the end mark);
 *   - pages in a heap's avail queue for class c have block size mt_class_size[c];
 *   - page->full is set exactly for pages on the heap's full list. */
#ifndef MT_ALLOCATOR_SMALL_H
#define MT_ALLOCATOR_SMALL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/compiler.h"
#include "config.h"
#include "error.h"
#include "segmap.h"
#include "size_class.h"

struct mt_heap;
struct mt_medium_arena;

enum mt_page_state { MT_PAGE_FREE = 0, MT_PAGE_ACTIVE = 1, MT_PAGE_META = 2 };

struct mt_page {
    /* Read or written by every malloc/free of the page: keep together (one cache line). */
    _Atomic uintptr_t owner;  /* owning heap while the page is in use (0: abandoned), with
                                 MT_PAGE_REMOTE_PENDING set while remote frees wait */
    uint64_t nonempty;        /* bit w set: bitmap word w has a free bit (owner's view) */
    uint8_t *start;           /* first slot (the page's own start) */
    _Atomic uint64_t counts;  /* mt_page_used (live and remotely freed slots, + pinned) in
                                 the low bits, the page's allocations above (owner-written) */
    uint16_t block_size;      /* 0 while the page is free (at most MT_SMALL_MAX) */
    uint16_t touched;         /* slots [0, touched) were handed out at some time: the
                                 memory above was never written (refills prefer below) */
    uint32_t recip;           /* ceil(2^32 / block_size): exact division for offsets < 64 KiB */
    uint16_t capacity;        /* slots; 0 while the page is free */
    uint8_t words;            /* bitmap words covering `capacity` slots */
    uint8_t cls;
    _Atomic uint8_t full;     /* on the owner's full list: a free must move it back */
    /* Slow-path bookkeeping, in one byte so that slot_limit fits the line. */
    uint8_t state : 2;        /* enum mt_page_state */
    uint8_t committed : 1;    /* memory may be resident (not decommitted since last use) */
    uint8_t pinned : 1;       /* the heap's refill page: its used count holds one more */
    uint8_t refill_shift : 3; /* a refill hands out up to MT_REFILL_FLOOR << refill_shift
                                 never-touched slots (heap.c, cache_take_from_page) */
    uint16_t slot_limit;      /* an offset is a slot start iff the low half of offset * recip
                                 is below this (mt_small_slot_index); 0 while the page is free */
    struct mt_page *next, *prev; /* heap avail/full queue, or segment free list */
} MT_ALIGNED(MT_CACHE_LINE);

_Static_assert(sizeof(struct mt_page) == MT_CACHE_LINE, "a page descriptor is one cache line");

/* Never-touched slots a refill may take from a page (heap.c, cache_take_from_page): the
 * whole batch while no other thread has freed into the page, and from the first remote
 * free collected MT_REFILL_FLOOR, doubling with each refill that collects none. */
#define MT_REFILL_FLOOR 4
#define MT_REFILL_SHIFT_MAX 4

/* page->owner's tag: set by a remote free after its remote bit, cleared by the owner's
 * collect before it reads the remote bits (mt_page_collect), so a remote bit published
 * before the tag was cleared is collected and one published after leaves the tag set.
 * Heaps are aligned far beyond 2 bytes, so bit 0 of their address is free. */
#define MT_PAGE_REMOTE_PENDING ((uintptr_t)1)

MT_INLINE struct mt_heap *mt_page_owner(const struct mt_page *page, memory_order order)
{
    return (struct mt_heap *)(atomic_load_explicit(&page->owner, order) & ~MT_PAGE_REMOTE_PENDING);
}

/* page->counts: one word so that an allocation is one addition (MT_PAGE_ONE_ALLOC: a used
 * slot more and an allocation more), which also feeds show_alloc_hist's per-class totals
 * (folded into mt_retired_class_allocs when the page is released). */
#define MT_PAGE_USED_BITS 16
#define MT_PAGE_USED_MASK (((uint64_t)1 << MT_PAGE_USED_BITS) - 1)
#define MT_PAGE_ONE_ALLOC (((uint64_t)1 << MT_PAGE_USED_BITS) + 1)
_Static_assert(MT_MAX_SLOTS_PER_PAGE + 1 <= MT_PAGE_USED_MASK, "a page's used count fits its bits");

MT_INLINE uint32_t mt_page_used(const struct mt_page *page)
{
    return (uint32_t)(atomic_load_explicit(&page->counts, memory_order_relaxed) & MT_PAGE_USED_MASK);
}

MT_INLINE uint64_t mt_page_allocs(const struct mt_page *page)
{
    return atomic_load_explicit(&page->counts, memory_order_relaxed) >> MT_PAGE_USED_BITS;
}

/* Owner only: add `delta` to the counts (modulo 2^64, so (uint64_t)-n takes n used slots
 * off); returns the new used count. */
MT_INLINE uint32_t mt_page_count_add(struct mt_page *page, uint64_t delta)
{
    uint64_t counts = atomic_load_explicit(&page->counts, memory_order_relaxed) + delta;
    atomic_store_explicit(&page->counts, counts, memory_order_relaxed);
    return (uint32_t)(counts & MT_PAGE_USED_MASK);
}

/* Slots of a page of `block_size`-byte blocks: as many as fit, at most
 * MT_MAX_SLOTS_PER_PAGE. */
MT_INLINE uint32_t mt_page_capacity_for(uint32_t block_size)
{
    uint32_t fit = (uint32_t)(MT_PAGE_SIZE / block_size);
    return fit < MT_MAX_SLOTS_PER_PAGE ? fit : MT_MAX_SLOTS_PER_PAGE;
}

/* A page's descriptor followed by its three bitmaps: their addresses are the descriptor's
 * plus a constant, not one more pointer to load on the allocation path. One array per
 * bitmap, `idle` first, rather than the three words of a slot side by side: malloc and
 * free touch only `idle`, so the line after the descriptor holds the idle bits of a whole
 * page of 128-byte or bigger blocks (the words of the three bitmaps interleaved spread them
 * over three lines), and word w is at page + 64 + 8 * w, an addressing mode rather than a
 * multiplication by 24 (churn bench: 3 instructions fewer per malloc/free pair, see
 * docs/allocator.md). */
struct mt_page_meta {
    struct mt_page page;
    _Atomic uint64_t idle[MT_BITMAP_WORDS];   /* free or cached; owner writes (relaxed); others may read */
    _Atomic uint64_t free[MT_BITMAP_WORDS];   /* owner writes (relaxed); others may read */
    _Atomic uint64_t remote[MT_BITMAP_WORDS]; /* any thread sets bits (atomic OR); owner clears (exchange) */
};

/* The three bitmap words of slots [64 * w, 64 * w + 64) of a page. */
struct mt_bits_ref {
    _Atomic uint64_t *free, *idle, *remote;
};

MT_INLINE struct mt_bits_ref mt_page_word(const struct mt_page *page, size_t w)
{
    /* page is the first member of its mt_page_meta. */
    struct mt_page_meta *meta = (struct mt_page_meta *)(uintptr_t)page;
    return (struct mt_bits_ref){&meta->free[w], &meta->idle[w], &meta->remote[w]};
}

struct mt_page_queue {
    struct mt_page *first, *last;
};

struct mt_segment {
    _Atomic(struct mt_heap *) owner; /* NULL: abandoned (or in the free pool) */
    uint32_t used_pages;             /* pages in state ACTIVE */
    uint32_t free_count;             /* pages on free_pages, and never formatted */
    uint32_t formatted;              /* pages [0, formatted) have a descriptor; the others
                                        were never used (all zero: a free page, start NULL) */
    struct mt_page *free_pages;      /* released pages, singly linked through page->next */
    struct mt_segment *next, *prev;  /* heap's segment list, the abandoned list or the pool */
    struct mt_segment *all_next;     /* every small segment ever mapped (never unmapped) */
    uint8_t in_pool;                 /* on the global pool of unused segments */
    uint64_t huge_ranges;            /* bit r: huge-page range r was collapsed (for good:
                                        mt_segment_page_touched) */
    /* Debug mode's records of this segment's slots (debug_slots.h), NULL until it holds a
     * debug block: set once, and kept when the segment is pooled and reused (the header's
     * page is never decommitted, and the records are never unmapped). Here rather than in
     * a directory beside: a free reaches it from the segment it computes anyway, one load
     * instead of two dependent ones and two tests. */
    _Atomic(struct mt_debug_slot *) debug_records;
    struct mt_page_meta meta[MT_PAGES_PER_SEGMENT] MT_ALIGNED(MT_CACHE_LINE);
};

_Static_assert(sizeof(struct mt_segment) <= MT_SEGMENT_META_PAGES * MT_PAGE_SIZE,
               "segment metadata must fit its reserved pages");

/* One cached slot: the block, and its page descriptor's address with the slot index in the
 * top bits, so a pop reaches the page's count and the slot's bitmap word without computing
 * either from the block. */
struct mt_cache_entry {
    void *block;
    uintptr_t slot; /* (uintptr_t)page | index << MT_CACHE_INDEX_SHIFT */
};
#define MT_CACHE_INDEX_SHIFT 52
#define MT_CACHE_ADDRESS_MASK (((uintptr_t)1 << MT_CACHE_INDEX_SHIFT) - 1)
_Static_assert(MT_SEGMAP_ADDRESS_BITS <= MT_CACHE_INDEX_SHIFT, "small segment addresses fit below the index");
_Static_assert(MT_MAX_SLOTS_PER_PAGE <= (uintptr_t)1 << (64 - MT_CACHE_INDEX_SHIFT),
               "a slot index fits the top bits of a cache entry");

/* The slot cache of one size class (see the header comment). One aligned region of
 * MT_CACHE_REGION bytes, so the region and its counter are found from the top pointer by
 * masking, and "empty" is a test of the top pointer's low bits, with no load. 1 KiB: 62
 * entries. A program that frees and allocates a mix of sizes moves each class's stack up
 * and down at random, and takes a slow path (refill or flush) each time a stack hits an
 * end; with 30 entries those were 4% of the churn bench's instructions, with 62 under 2%
 * (callgrind; about 1.5% of its time). */
#define MT_CACHE_REGION 1024
#define MT_CACHE_MASK ((uintptr_t)MT_CACHE_REGION - 1)
#define MT_CACHE_ENTRIES (MT_CACHE_REGION / sizeof(struct mt_cache_entry) - 1)
/* Entries are used up to this many: the slot after the last one holds the sentinel. */
#define MT_CACHE_MAX (MT_CACHE_ENTRIES - 1)
/* Marks the end of a class's stack in the block field: a push that finds it takes the slow
 * path. No block is at address 1. */
#define MT_CACHE_SENTINEL ((void *)1)

struct mt_slot_cache {
    uint64_t header[2]; /* unused: keeps an empty stack's top one entry above the region's start */
    struct mt_cache_entry entry[MT_CACHE_ENTRIES]; /* a stack, oldest first; top in TLS */
} MT_ALIGNED(MT_CACHE_REGION);

_Static_assert(sizeof(struct mt_slot_cache) == MT_CACHE_REGION, "a slot cache is one aligned region");
_Static_assert(offsetof(struct mt_slot_cache, entry) == sizeof(struct mt_cache_entry),
               "the header is one entry long: mt_small_malloc tests for empty by the entry below the top");

struct mt_heap {
    struct mt_slot_cache cache[MT_SMALL_CLASSES]; /* owner only */
    struct mt_page *direct[MT_SMALL_CLASSES];     /* refill page per class, pinned, or
                                                     &mt_empty_page */
    struct mt_page_queue avail[MT_SMALL_CLASSES]; /* pages with free slots */
    struct mt_page_queue full;                   /* pages without */
    _Atomic uint32_t remote_hint;  /* a remote free hit one of our full pages */
    uint32_t committed_free_pages; /* free pages of our segments still resident */
    struct mt_segment *segments;   /* owned, doubly linked */
    struct mt_medium_arena *arena; /* medium arena bound to this thread, picked lazily */
    int32_t tid;
    uint8_t registered;            /* the thread-exit destructor is armed */
    struct mt_heap *all_next, *all_prev; /* registry of live heaps */
};
_Static_assert(_Alignof(struct mt_heap) > MT_PAGE_REMOTE_PENDING, "a heap's address leaves bit 0 for page->owner's tag");

/* The calling thread's allocator state. One TLS object, not two: a shared library reaches
 * each initial-exec TLS variable through its own GOT entry, so free(), which needs both
 * the heap and a cache top, loads one offset instead of two. */
struct mt_small_tls {
    /* Never NULL: &mt_heap_empty until the thread's first allocation, and again after its
     * exit destructor ran. */
    struct mt_heap *heap;
    /* Top of each class's slot cache: the next entry to push (the last pushed is
     * top[-1]). Points into mt_heap_empty's empty caches until the thread's first
     * allocation, then at a shared stack that is both empty and full until the thread's
     * first use of the class (heap.c), so the fast path needs no heap test (an empty cache
     * sends malloc to the slow path, a full one free). Kept in TLS so malloc's first load
     * is the top. */
    struct mt_cache_entry *cache_top[MT_SMALL_CLASSES];
};
extern MT_TLS MT_HIDDEN struct mt_small_tls mt_tls;
extern struct mt_heap mt_heap_empty;
/* The page with no free slot that stands for "none" in mt_heap.direct. */
extern struct mt_page_meta mt_empty_page_meta;
#define mt_empty_page (mt_empty_page_meta.page)

/* Out of line: the class's cache is empty. Refill it (collect remote frees, next page,
 * adopt, new segment) and pop; first use of a thread; out of memory (sets errno, returns
 * NULL). */
void *mt_small_malloc_slow(unsigned cls);
/* Out of line: the class's cache is full (return its older half to the bitmaps) or the
 * block's page has no used slot left (release it). Pushes the block, whose idle bit the
 * caller has set and counted (`slot` as in mt_cache_entry; the class is its page's, read
 * again here rather than passed: one register move less on the fast path). */
void mt_small_free_local_slow(void *block, uintptr_t slot);
/* Out of line: free from a thread that does not own the page, or into one of ours tagged
 * with MT_PAGE_REMOTE_PENDING (ptr is a valid slot start). */
void mt_small_free_remote(void *ptr, enum mt_api api);
/* Out of line: the pointer is inside a small segment but is not a slot start. */
void mt_small_free_invalid(const void *ptr, enum mt_api api);
/* Out of line: the slot is already free. */
void mt_small_free_double(const void *ptr, enum mt_api api);

MT_INLINE struct mt_segment *mt_small_segment_of(const void *ptr)
{
    return (struct mt_segment *)((uintptr_t)ptr & ~(uintptr_t)MT_SEGMENT_MASK);
}

MT_INLINE struct mt_page *mt_small_page_of(struct mt_segment *seg, const void *ptr)
{
    return &seg->meta[((uintptr_t)ptr >> MT_PAGE_SHIFT) & (MT_PAGES_PER_SEGMENT - 1)].page;
}

/* Slot index of ptr in page, or SIZE_MAX when ptr is not the start of a slot. Pages are
 * aligned to their size, so the offset is the address's low bits. */
MT_INLINE size_t mt_small_slot_index(const struct mt_page *page, const void *ptr)
{
    uint32_t offset = (uint32_t)((uintptr_t)ptr & (MT_PAGE_SIZE - 1));
    uint64_t product = (uint64_t)offset * page->recip;
    uint32_t index = (uint32_t)(product >> 32);
#ifndef MT_NO_HARDENING /* bench/ measures the cost of the always-on checks without them */
    /* The same product tells whether the offset is the start of a slot, in one compare.
     * With recip = ceil(2^32 / size) = (2^32 + e) / size, an offset k * size + r (r < size)
     * gives a low half of k * e + r * recip (nothing wraps for offsets below 2^16): at
     * least recip (over 2^19) when r > 0, exactly k * e for a multiple. So a multiple is
     * told from an interior pointer by any limit up to recip (Lemire's divisibility test),
     * and the limit capacity * e also refuses slot index `capacity`: the tail of a page
     * whose size does not divide it. For a power of two, e = 0 and there is no tail: the
     * limit is 1. A released page has limit 0: nothing passes (page.c, segment.c;
     * tests/c/test_small_slots.c checks every class and offset). */
    if (MT_UNLIKELY((uint32_t)product >= page->slot_limit))
        return SIZE_MAX;
#endif
    return index;
}

/* Pop the class's most recently freed slot: TLS top, the entry, the slot's bitmap word and
 * its page's count. */
MT_INLINE void *mt_small_malloc(unsigned cls)
{
    struct mt_cache_entry *top = mt_tls.cache_top[cls];
    struct mt_cache_entry *e = top - 1;
    /* Empty when the entry below the top would be the region's header. */
    if (MT_UNLIKELY(((uintptr_t)e & MT_CACHE_MASK) == 0))
        return mt_small_malloc_slow(cls);
    mt_tls.cache_top[cls] = e;
    uintptr_t slot = e->slot;
    struct mt_page *page = (struct mt_page *)(slot & MT_CACHE_ADDRESS_MASK);
    size_t index = (size_t)(slot >> MT_CACHE_INDEX_SHIFT);
    struct mt_bits_ref b = mt_page_word(page, index >> 6);
    atomic_store_explicit(b.idle, atomic_load_explicit(b.idle, memory_order_relaxed) & ~(1ull << (index & 63)),
                          memory_order_relaxed);
    mt_page_count_add(page, MT_PAGE_ONE_ALLOC);
    void *block = e->block;
    /* No copy of a live block's address stays in the cache: a conservative scan for leaks
     * (interpose/leak_scan.c reads the heap's memory as roots) would take it for a
     * reference. */
    e->block = NULL;
    return block;
}

/* Free a pointer whose segment-map entry says MT_SEG_SMALL. The slow paths take only what
 * they cannot recompute cheaply, which keeps this path free of register spills. */
MT_INLINE void mt_small_free(void *ptr, enum mt_api api)
{
    struct mt_page *page = mt_small_page_of(mt_small_segment_of(ptr), ptr);
    /* One register for the descriptor: without this GCC keeps the segment and the page's
     * offset apart and re-adds them for each field, which spills two registers. */
    __asm__("" : "+r"(page));
    size_t index = mt_small_slot_index(page, ptr);
    if (MT_UNLIKELY(index == SIZE_MAX)) {
        mt_small_free_invalid(ptr, api);
        return;
    }
    /* Not ours, or ours with remote frees waiting (whose remote bits the check below does
     * not read): the slow path. */
    if (MT_UNLIKELY(atomic_load_explicit(&page->owner, memory_order_relaxed) != (uintptr_t)mt_tls.heap)) {
        mt_small_free_remote(ptr, api);
        return;
    }
    struct mt_bits_ref b = mt_page_word(page, index >> 6);
    uint64_t idle = atomic_load_explicit(b.idle, memory_order_relaxed);
    uint64_t marked = idle | (1ull << (index & 63));
#ifndef MT_NO_HARDENING
    /* Already free or cached: setting the bit changed nothing. (Not remote: the page is
     * untagged.) One compare after the bit set the path does anyway. */
    if (MT_UNLIKELY(marked == idle)) {
        mt_small_free_double(ptr, api);
        return;
    }
#endif
    atomic_store_explicit(b.idle, marked, memory_order_relaxed);
    uint32_t used = mt_page_count_add(page, (uint64_t)-1);
    unsigned cls = page->cls;
    struct mt_cache_entry *top = mt_tls.cache_top[cls];
    uintptr_t slot = (uintptr_t)page | ((uintptr_t)index << MT_CACHE_INDEX_SHIFT);
    if (MT_UNLIKELY(top->block == MT_CACHE_SENTINEL || used == 0)) {
        mt_small_free_local_slow(ptr, slot);
        return;
    }
    top->block = ptr;
    top->slot = slot;
    mt_tls.cache_top[cls] = top + 1;
}

/* Usable size of a live small block, or 0 after reporting an error for a pointer that is
 * not one (freed: MT_ERR_REALLOC_FREED for realloc, MT_ERR_DOUBLE_FREE-style otherwise). */
size_t mt_small_usable_size(const void *ptr, enum mt_api api);

/* Slot state without reporting: 1 live, 0 free, -1 not a slot start. */
int mt_small_slot_state(const void *ptr);

/* The calling thread's heap, creating it (and initialising the allocator) on first use;
 * NULL only if the OS refuses the memory for it. */
struct mt_heap *mt_heap_get(void);
/* The medium arena of the calling thread. */
struct mt_medium_arena *mt_heap_arena(void);

/* Give back what the calling thread's heap and the global pools hold free; bytes released. */
size_t mt_small_trim(void);

/* Per-class counts summed over every heap (live and exited threads). */
void mt_small_histogram(uint64_t live[MT_SMALL_CLASSES], uint64_t allocs[MT_SMALL_CLASSES],
                        uint64_t capacity[MT_SMALL_CLASSES]);

void mt_small_init(void);
void mt_small_fork_prepare(void);
void mt_small_fork_parent(void);
void mt_small_fork_child(void);

#endif
