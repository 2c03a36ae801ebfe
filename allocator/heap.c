/* Thread heaps: the slow paths of small malloc and free, thread start and exit, remote
 * frees, abandonment and adoption of segments.
 *
 * A heap is created at a thread's first allocation and registered with a pthread key whose
 * destructor abandons it at thread exit. The owning thread is the only writer of its heap's
 * queues and of its pages' free bits; everything shared with other threads goes through
 * the remote bits, the `full` flag, `remote_hint` and page->owner (see small.h). The slot
 * cache's slow paths live here too: refilling a class's cache from its refill page (a batch
 * of free bits becomes cached), returning the older half of a full cache to the bitmaps
 * (where pages leave the full list), and releasing a page whose last used slot was freed
 * (dropping its cached slots from the cache).
 *
 * The full-page handshake: the owner sets page->full, then collects remote bits; a remote
 * free sets its bit, then reads page->full and, if set, raises owner->remote_hint. With
 * sequentially consistent ordering on both sides at least one of them sees the other, so a
 * page that gets a free slot back is never stranded on the full list. The same handshake
 * on page->owner (0 at abandonment) guarantees a remote free into a dying thread's page
 * is either collected by the exiting thread or by the freeing thread itself. */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "../common/format.h"
#include "../common/platform.h"
#include "alloc_init.h"
#include "medium.h"
#include "small_internal.h"

/* The empty page has an empty summary and zero bitmap words: the fast path sees "no free
 * slot" and takes the slow path. */
struct mt_page_meta mt_empty_page_meta = {.page = {.state = MT_PAGE_META}};

struct mt_heap mt_heap_empty MT_BIG_BSS;

/* Until a thread has a heap its cache tops point at the empty heap's caches: empty, so
 * malloc goes to the slow path; free never pushes there (no page belongs to the empty
 * heap, so it takes the remote path). */
#define EMPTY_TOP(c) &mt_heap_empty.cache[c].entry[0]
#define EMPTY_TOP_x8(c) EMPTY_TOP(c), EMPTY_TOP(c + 1), EMPTY_TOP(c + 2), EMPTY_TOP(c + 3), \
                        EMPTY_TOP(c + 4), EMPTY_TOP(c + 5), EMPTY_TOP(c + 6), EMPTY_TOP(c + 7)
MT_TLS struct mt_small_tls mt_tls = {
    .heap = &mt_heap_empty,
    .cache_top = {EMPTY_TOP_x8(0), EMPTY_TOP_x8(8), EMPTY_TOP_x8(16), EMPTY_TOP_x8(24), EMPTY_TOP_x8(32),
                  EMPTY_TOP_x8(40), EMPTY_TOP_x8(48)}};
#undef EMPTY_TOP_x8
#undef EMPTY_TOP
_Static_assert(MT_SMALL_CLASSES == 56, "mt_tls's initialiser lists 56 caches");

struct mt_heap *mt_heap_registry;
/* Written when a page is released: in .lbss with the other variables most processes never
 * touch, so the ones they do share .data's page (MT_BIG_BSS). */
_Atomic uint64_t mt_retired_class_allocs[MT_SMALL_CLASSES] MT_BIG_BSS;

/* Free pages a heap keeps resident for reuse before it starts decommitting: 8 pages
 * (512 KiB) absorbs the churn of a thread that frees and reallocates a working set, while
 * bounding what an idle thread holds (measured: 16 pages bought no speed on the bench
 * workloads). */
#define HEAP_COMMITTED_FREE_MAX 8

/* Bytes of blocks one class's slot cache may hold: 16 KiB keeps every class up to 256 bytes
 * at the full MT_CACHE_MAX entries (the churn of small objects is what the cache is for)
 * while an 8 KiB class keeps 2, so a thread holds at most about 730 KiB in its caches. */
#define CACHE_BYTES_MAX (16u << 10)
/* A refill fills the cache to three quarters of its limit: a batch large enough that a
 * thread that only allocates (a producer) takes the slow path once per 46 small blocks,
 * with room left for frees before the cache overflows. */
#define CACHE_REFILL_NUM 3
#define CACHE_REFILL_DEN 4

/* Heaps are carved from mapped chunks and recycled; never returned to the OS, so a
 * remote free may write a stale heap's remote_hint harmlessly. A chunk is carved one heap
 * at a time as threads start, so its untouched heaps cost no resident memory (threading a
 * free list through all 32 at once dirtied a page of each: 124 KiB for a one-thread
 * program), and a fresh heap is the kernel's zero pages, with nothing to clear. */
#define HEAPS_PER_CHUNK 32
static struct mt_heap *heap_free_list; /* exited threads' heaps (under mt_small_lock) */
static struct mt_heap *heap_chunk_next, *heap_chunk_end; /* the chunk being carved (same) */
static pthread_key_t heap_exit_key;

/* Per class: the cache's entry limit and the refill batch (set by mt_small_init). */
static uint8_t cache_limit[MT_SMALL_CLASSES];
static uint8_t cache_refill_count[MT_SMALL_CLASSES];

unsigned mt_small_cache_limit(unsigned cls)
{
    return cache_limit[cls];
}

/* A class's cache before the thread first uses the class: empty for malloc (the entry
 * below the top is the region's header) and full for free (the entry at the top is the
 * end mark), so both fast paths take their slow paths, which start the heap's own cache
 * of the class. A heap's 56 caches take 56 KiB: writing every end mark when the thread
 * started made all of it resident, for the few classes most threads use. Never written,
 * so read-only: it shares the page of read-only data every process reads anyway
 * (interpose/resident.ld), where in .data its 1 KiB alignment took a page of its own. */
const struct mt_slot_cache mt_cache_unstarted = {.entry = {[0] = {.block = MT_CACHE_SENTINEL}}};

static bool cache_started(const struct mt_heap *heap, unsigned cls)
{
    return ((uintptr_t)mt_tls.cache_top[cls] & ~MT_CACHE_MASK) == (uintptr_t)&heap->cache[cls];
}

static void cache_start(struct mt_heap *heap, unsigned cls)
{
    heap->cache[cls].entry[mt_small_cache_limit(cls)].block = MT_CACHE_SENTINEL;
    mt_tls.cache_top[cls] = heap->cache[cls].entry;
}

static size_t cache_count(const struct mt_heap *heap, unsigned cls)
{
    if (!cache_started(heap, cls))
        return 0;
    return (size_t)(mt_tls.cache_top[cls] - heap->cache[cls].entry);
}

/* ---- page queues -------------------------------------------------------------------- */

static void queue_push_front(struct mt_page_queue *q, struct mt_page *page)
{
    page->prev = NULL;
    page->next = q->first;
    if (q->first)
        q->first->prev = page;
    else
        q->last = page;
    q->first = page;
}

static void queue_push_back(struct mt_page_queue *q, struct mt_page *page)
{
    page->next = NULL;
    page->prev = q->last;
    if (q->last)
        q->last->next = page;
    else
        q->first = page;
    q->last = page;
}

static void queue_remove(struct mt_page_queue *q, struct mt_page *page)
{
    if (page->prev)
        page->prev->next = page->next;
    else
        q->first = page->next;
    if (page->next)
        page->next->prev = page->prev;
    else
        q->last = page->prev;
    page->next = page->prev = NULL;
}

/* ---- heap segments ------------------------------------------------------------------- */

static void heap_segment_link(struct mt_heap *heap, struct mt_segment *seg)
{
    seg->prev = NULL;
    seg->next = heap->segments;
    if (heap->segments)
        heap->segments->prev = seg;
    heap->segments = seg;
}

static void heap_segment_unlink(struct mt_heap *heap, struct mt_segment *seg)
{
    if (seg->prev)
        seg->prev->next = seg->next;
    else
        heap->segments = seg->next;
    if (seg->next)
        seg->next->prev = seg->prev;
    seg->next = seg->prev = NULL;
}

/* Drop the cache entries of a page about to be released (its cached slots are free; the
 * page's bitmaps are rewritten when it is used again). */
static void cache_purge_page(struct mt_heap *heap, const struct mt_page *page)
{
    unsigned cls = page->cls;
    if (!cache_started(heap, cls))
        return;
    struct mt_cache_entry *top = mt_tls.cache_top[cls];
    struct mt_cache_entry *kept = heap->cache[cls].entry;
    for (struct mt_cache_entry *e = kept; e < top; e++)
        if ((struct mt_page *)(e->slot & MT_CACHE_ADDRESS_MASK) != page)
            *kept++ = *e;
    memset(kept, 0, (size_t)(top - kept) * sizeof *kept); /* see mt_small_malloc */
    mt_tls.cache_top[cls] = kept;
}

/* A page of ours became empty: back to its segment, and the segment to the pool when it is
 * entirely free and not our only one. */
static void heap_release_page(struct mt_heap *heap, struct mt_page *page)
{
    cache_purge_page(heap, page);
    struct mt_segment *seg = mt_small_segment_of(page->start);
    bool keep_resident = heap->committed_free_pages < HEAP_COMMITTED_FREE_MAX;
    mt_segment_put_page(seg, page, !keep_resident);
    if (page->committed)
        heap->committed_free_pages++;
    if (seg->used_pages == 0 && !(heap->segments == seg && seg->next == NULL)) {
        for (size_t i = MT_SEGMENT_META_PAGES; i < MT_PAGES_PER_SEGMENT; i++)
            if (seg->meta[i].page.committed)
                heap->committed_free_pages--;
        heap_segment_unlink(heap, seg);
        mt_lock(&mt_small_lock);
        mt_segment_pool_put(seg);
        mt_unlock(&mt_small_lock);
    }
}

/* Queue a page of an adopted or re-examined segment by its state. Caller owns the page. */
static void heap_requeue_page(struct mt_heap *heap, struct mt_page *page)
{
    uint32_t used = mt_page_used(page);
    if (used == 0) {
        atomic_store_explicit(&page->full, 0, memory_order_relaxed);
        heap_release_page(heap, page);
    } else if (used < page->capacity) {
        atomic_store_explicit(&page->full, 0, memory_order_relaxed);
        queue_push_back(&heap->avail[page->cls], page);
    } else {
        queue_push_back(&heap->full, page);
        atomic_store_explicit(&page->full, 1, memory_order_seq_cst);
        if (mt_page_collect(page)) {
            /* A remote free raced with marking it full. */
            queue_remove(&heap->full, page);
            atomic_store_explicit(&page->full, 0, memory_order_relaxed);
            queue_push_back(&heap->avail[page->cls], page);
        }
    }
}

/* Adopt one abandoned segment: its live pages join our queues. Returns false if none. */
static bool heap_adopt_segment(struct mt_heap *heap)
{
    mt_lock(&mt_small_lock);
    struct mt_segment *seg = mt_abandoned_first();
    if (!seg) {
        mt_unlock(&mt_small_lock);
        return false;
    }
    mt_abandoned_remove(seg);
    atomic_store_explicit(&seg->owner, heap, memory_order_seq_cst);
    heap_segment_link(heap, seg);
    for (size_t i = MT_SEGMENT_META_PAGES; i < MT_PAGES_PER_SEGMENT; i++) {
        struct mt_page *page = &seg->meta[i].page;
        if (page->state != MT_PAGE_ACTIVE)
            continue;
        atomic_store_explicit(&page->owner, (uintptr_t)heap, memory_order_seq_cst);
        mt_page_collect(page);
        page->next = page->prev = NULL;
        heap_requeue_page(heap, page);
    }
    mt_unlock(&mt_small_lock);
    return true;
}

/* A fresh page for `cls` from our segments, an adopted segment or a new one. */
static struct mt_page *heap_fresh_page(struct mt_heap *heap, unsigned cls)
{
    for (;;) {
        for (struct mt_segment *seg = heap->segments; seg; seg = seg->next) {
            struct mt_page *page = mt_segment_take_page(seg);
            if (page) {
                if (page->committed && heap->committed_free_pages)
                    heap->committed_free_pages--;
                mt_page_init(page, cls);
                atomic_store_explicit(&page->owner, (uintptr_t)heap, memory_order_relaxed);
                queue_push_front(&heap->avail[cls], page);
                return page;
            }
        }
        if (heap_adopt_segment(heap)) {
            /* The adopted segment may have brought pages of this class with free slots. */
            if (heap->avail[cls].first)
                return heap->avail[cls].first;
            continue;
        }
        struct mt_segment *seg = mt_segment_acquire();
        if (!seg)
            return NULL;
        atomic_store_explicit(&seg->owner, heap, memory_order_seq_cst);
        heap_segment_link(heap, seg);
    }
}

/* Pages on the full list that remote frees gave slots back to return to their queues. */
static void heap_collect_full_pages(struct mt_heap *heap)
{
    atomic_store_explicit(&heap->remote_hint, 0, memory_order_seq_cst);
    struct mt_page *page = heap->full.first;
    while (page) {
        struct mt_page *next = page->next;
        if (mt_page_collect(page)) {
            queue_remove(&heap->full, page);
            atomic_store_explicit(&page->full, 0, memory_order_relaxed);
            if (mt_page_used(page) == 0)
                heap_release_page(heap, page);
            else
                queue_push_back(&heap->avail[page->cls], page);
        }
        page = next;
    }
}

/* The page has no free slot left (after collecting): move it to the full list. Returns
 * false if a remote free slipped in while marking, leaving the page available. */
static bool heap_page_to_full(struct mt_heap *heap, struct mt_page *page)
{
    queue_remove(&heap->avail[page->cls], page);
    queue_push_back(&heap->full, page);
    atomic_store_explicit(&page->full, 1, memory_order_seq_cst);
    if (!mt_page_collect(page))
        return true;
    queue_remove(&heap->full, page);
    atomic_store_explicit(&page->full, 0, memory_order_relaxed);
    queue_push_front(&heap->avail[page->cls], page);
    return false;
}

/* Release a page of ours whose last used slot went (on its avail queue or full list). */
static void heap_page_emptied(struct mt_heap *heap, struct mt_page *page)
{
    if (atomic_load_explicit(&page->full, memory_order_relaxed)) {
        queue_remove(&heap->full, page);
        atomic_store_explicit(&page->full, 0, memory_order_relaxed);
    } else {
        queue_remove(&heap->avail[page->cls], page);
    }
    heap_release_page(heap, page);
}

/* Make `page` the one the calling thread allocates class `cls` from: pin it, and unpin
 * (releasing it if that leaves it empty) the previous one. */
static void direct_set(struct mt_heap *heap, unsigned cls, struct mt_page *page)
{
    struct mt_page *old = heap->direct[cls];
    if (old == page)
        return;
    if (page != &mt_empty_page) {
        page->pinned = 1;
        mt_page_count_add(page, 1);
    }
    heap->direct[cls] = page;
    if (old == &mt_empty_page)
        return;
    old->pinned = 0;
    if (mt_page_count_add(old, (uint64_t)-1) == 0)
        heap_page_emptied(heap, old);
}

/* A slot freed by its owner leaves the cache: back to the page's free bits, which may take
 * the page off the full list. (Never empties a page: cached slots are not counted in
 * `used`, and a page is released as soon as its count reaches 0.) */
static void cache_return_slot(struct mt_heap *heap, struct mt_cache_entry entry)
{
    struct mt_page *page = (struct mt_page *)(entry.slot & MT_CACHE_ADDRESS_MASK);
    size_t index = (size_t)(entry.slot >> MT_CACHE_INDEX_SHIFT);
    struct mt_bits_ref b = mt_page_word(page, index >> 6);
    uint64_t bit = 1ull << (index & 63);
    /* Cached to free: the idle bit stays. */
    atomic_store_explicit(b.free, atomic_load_explicit(b.free, memory_order_relaxed) | bit,
                          memory_order_relaxed);
    page->nonempty |= 1ull << (index >> 6);
    if (atomic_load_explicit(&page->full, memory_order_relaxed)) {
        queue_remove(&heap->full, page);
        atomic_store_explicit(&page->full, 0, memory_order_relaxed);
        queue_push_back(&heap->avail[page->cls], page);
    }
}

/* Return all but the `keep` newest entries of a class's cache to their pages. */
static void cache_flush(struct mt_heap *heap, unsigned cls, size_t keep)
{
    struct mt_slot_cache *cache = &heap->cache[cls];
    size_t count = cache_count(heap, cls);
    if (count <= keep)
        return;
    size_t n = count - keep;
    struct mt_cache_entry flushed[MT_CACHE_ENTRIES];
    memcpy(flushed, cache->entry, n * sizeof *flushed);
    memmove(cache->entry, cache->entry + n, keep * sizeof *flushed);
    memset(cache->entry + keep, 0, n * sizeof *flushed); /* see mt_small_malloc */
    mt_tls.cache_top[cls] = cache->entry + keep;
    for (size_t i = 0; i < n; i++)
        cache_return_slot(heap, flushed[i]);
}

static void cache_flush_all(struct mt_heap *heap)
{
    for (unsigned c = 0; c < MT_SMALL_CLASSES; c++)
        cache_flush(heap, c, 0);
}

static bool cache_refill(struct mt_heap *heap, unsigned cls);

void mt_small_free_local_slow(void *block, uintptr_t slot)
{
    struct mt_heap *heap = mt_tls.heap;
    struct mt_page *page = (struct mt_page *)(slot & MT_CACHE_ADDRESS_MASK);
    unsigned cls = page->cls;
    /* The class's first free (its first block came from malloc_first_of_class): start the
     * cache with a refill's batch below the block, as the class's first malloc would have.
     * Started empty, the stack would work at its bottom entry, and the bottom entries of
     * every fourth class share an L1 set with the first slot of every page (both at the
     * same offset modulo 4 KiB): the `loop` bench ran 40% slower. */
    if (!cache_started(heap, cls))
        cache_refill(heap, cls);
    struct mt_cache_entry *top = mt_tls.cache_top[cls];
    if (top->block == MT_CACHE_SENTINEL) {
        cache_flush(heap, cls, mt_small_cache_limit(cls) / 2);
        top = mt_tls.cache_top[cls];
    }
    top->block = block;
    top->slot = slot;
    mt_tls.cache_top[cls] = top + 1;
    if (mt_page_used(page) == 0)
        heap_page_emptied(heap, page);
}

/* Move up to `want` of the page's lowest free slots below slot index `below` into
 * taken[n..]; returns the new count. */
static size_t page_take_slots(struct mt_page *page, size_t below, struct mt_cache_entry *taken, size_t n,
                              size_t want)
{
    uint64_t nonempty = page->nonempty;
    uint64_t scan = nonempty;
    uint8_t *start = page->start;
    size_t block_size = page->block_size;
    while (n < want && scan) {
        unsigned w = (unsigned)__builtin_ctzll(scan);
        scan &= scan - 1;
        size_t first = (size_t)w * 64;
        if (first >= below)
            break;
        struct mt_bits_ref b = mt_page_word(page, w);
        uint64_t bits = atomic_load_explicit(b.free, memory_order_relaxed);
        uint64_t avail = below - first >= 64 ? bits : bits & ((1ull << (below - first)) - 1);
        uint64_t rest = avail;
        for (; n < want && rest; n++) {
            size_t index = first + (size_t)__builtin_ctzll(rest);
            taken[n].block = start + index * block_size;
            taken[n].slot = (uintptr_t)page | ((uintptr_t)index << MT_CACHE_INDEX_SHIFT);
            if (index >= page->touched)
                page->touched = (uint16_t)(index + 1);
            rest &= rest - 1;
        }
        uint64_t moved = avail & ~rest;
        /* Free to cached: the idle bits stay. */
        atomic_store_explicit(b.free, bits & ~moved, memory_order_relaxed);
        if ((bits & ~moved) == 0)
            nonempty &= ~(1ull << w);
    }
    page->nonempty = nonempty;
    return n;
}

/* Move up to the refill batch of the page's free slots into the class's cache, which is
 * empty. Returns how many. Slots below the page's touched mark come first, then the slots
 * other threads freed (collected now rather than when the page runs out), and only then
 * slots never handed out: a page whose blocks are freed by another thread (a producer and
 * a consumer) would otherwise be walked end to end before its first collect, every class's
 * page fully resident (64 KiB each: 1.5 MiB on the xthread bench).
 *
 * Never-touched slots: a full batch for a page only its owner frees into (a thread that
 * allocates a lot refills rarely), but once other threads free into it only a few
 * (MT_REFILL_FLOOR), doubling while refills collect nothing. A producer's blocks in flight
 * to its consumer vary in number per class, and the touched mark follows their peak plus
 * what one refill adds: with full batches, 46 blocks more of every class (xthread bench:
 * touched marks at twice the blocks in flight, 100 KiB more resident than with this).
 * Below the peak, the slots the consumer has returned make the batch, so refills are about
 * as rare as before (xthread's time did not change). */
_Static_assert((MT_REFILL_FLOOR << MT_REFILL_SHIFT_MAX) >= MT_CACHE_MAX, "the largest step is a full batch");
static size_t cache_take_from_page(struct mt_page *page, struct mt_cache_entry *dest, size_t want)
{
    struct mt_cache_entry taken[MT_CACHE_ENTRIES];
    bool untouched = page->touched < page->capacity;
    size_t n = page_take_slots(page, page->touched, taken, 0, want);
    if (n < want && page->touched < page->capacity) {
        if (mt_page_collect(page)) {
            n = page_take_slots(page, page->touched, taken, n, want);
            page->refill_shift = 0;
        } else if (page->refill_shift < MT_REFILL_SHIFT_MAX) {
            page->refill_shift++;
        }
        size_t extend_to = MT_MIN(want, (size_t)MT_REFILL_FLOOR << page->refill_shift);
        if (n < extend_to)
            n = page_take_slots(page, page->capacity, taken, n, extend_to);
    }
    /* Its range of the segment may now be worth a huge page (segment.c). */
    if (untouched && page->touched == page->capacity)
        mt_segment_page_touched(page);
    /* Highest address at the bottom, so pops hand out the lowest first. */
    for (size_t i = 0; i < n; i++)
        dest[i] = taken[n - 1 - i];
    return n;
}

/* Take up to `want` free slots of class `cls` into dest (as cache entries): from the
 * refill page, after collecting its remote frees, else the next available page, an adopted
 * segment or a new one. Returns how many; 0 when out of memory. */
static size_t refill_slots(struct mt_heap *heap, unsigned cls, struct mt_cache_entry *dest, size_t want)
{
    struct mt_page *page = heap->direct[cls];
    for (;;) {
        if (page != &mt_empty_page) {
            size_t n = cache_take_from_page(page, dest, want);
            if (n || (mt_page_collect(page) && (n = cache_take_from_page(page, dest, want))))
                return n;
            if (!heap_page_to_full(heap, page))
                continue; /* a remote free arrived: retry this page */
        }
        if (atomic_load_explicit(&heap->remote_hint, memory_order_relaxed))
            heap_collect_full_pages(heap);
        page = heap->avail[cls].first;
        if (!page)
            page = heap_fresh_page(heap, cls);
        if (!page) {
            direct_set(heap, cls, &mt_empty_page);
            return 0;
        }
        direct_set(heap, cls, page);
    }
}

/* Refill the empty cache of `cls` with a batch. False when out of memory. */
static bool cache_refill(struct mt_heap *heap, unsigned cls)
{
    if (!cache_started(heap, cls))
        cache_start(heap, cls);
    struct mt_cache_entry *entry = heap->cache[cls].entry;
    size_t n = refill_slots(heap, cls, entry, cache_refill_count[cls]);
    mt_tls.cache_top[cls] = entry + n;
    return n != 0;
}

/* A class's first allocation in the thread: one slot straight from a page, handed out as
 * mt_small_malloc hands out a cached one, without starting the class's slot cache. The
 * cache is started by the class's next allocation or its first free (with a batch, as a
 * refill does: mt_small_free_local_slow): many classes are
 * allocated once and kept (stdio's buffer, a program's tables), and each cache started is
 * a 1 KiB region of the heap written (the `loop` bench: a 4 KiB page for stdout's buffer). */
static void *malloc_first_of_class(struct mt_heap *heap, unsigned cls)
{
    struct mt_cache_entry one;
    if (!refill_slots(heap, cls, &one, 1)) {
        errno = ENOMEM;
        return NULL;
    }
    struct mt_page *page = (struct mt_page *)(one.slot & MT_CACHE_ADDRESS_MASK);
    size_t index = (size_t)(one.slot >> MT_CACHE_INDEX_SHIFT);
    struct mt_bits_ref b = mt_page_word(page, index >> 6);
    atomic_store_explicit(b.idle, atomic_load_explicit(b.idle, memory_order_relaxed) & ~(1ull << (index & 63)),
                          memory_order_relaxed);
    mt_page_count_add(page, MT_PAGE_ONE_ALLOC);
    return one.block;
}

void *mt_small_malloc_slow(unsigned cls)
{
    struct mt_heap *heap = mt_tls.heap;
    if (MT_UNLIKELY(heap == &mt_heap_empty)) {
        heap = mt_heap_get();
        if (!heap) {
            errno = ENOMEM;
            return NULL;
        }
    }
    if (!cache_started(heap, cls) && heap->direct[cls] == &mt_empty_page)
        return malloc_first_of_class(heap, cls);
    /* Creating the heap may have allocated (pthread_setspecific) and filled the cache. */
    if (cache_count(heap, cls) == 0 && !cache_refill(heap, cls)) {
        errno = ENOMEM;
        return NULL;
    }
    return mt_small_malloc(cls);
}

/* Free into a segment whose owner has exited: serialised by the lock. */
static void free_into_abandoned(struct mt_segment *seg, struct mt_page *page)
{
    mt_lock(&mt_small_lock);
    if (mt_page_owner(page, memory_order_seq_cst) == NULL && !seg->in_pool &&
        page->state == MT_PAGE_ACTIVE) {
        mt_page_collect(page);
        if (mt_page_used(page) == 0) {
            mt_segment_put_page(seg, page, true);
            if (seg->used_pages == 0) {
                mt_abandoned_remove(seg);
                mt_segment_pool_put(seg);
            }
        }
    }
    mt_unlock(&mt_small_lock);
}

/* Free into a page of ours tagged with remote frees: collect them (which clears the tag
 * and reports a slot freed both here and remotely), then free as the fast path does. */
static void free_local_tagged(struct mt_heap *heap, struct mt_page *page, void *ptr, size_t index, enum mt_api api)
{
    if (mt_page_collect(page) && atomic_load_explicit(&page->full, memory_order_relaxed)) {
        /* As heap_collect_full_pages: the page has free slots again. (Not emptied: our
         * block still counts.) */
        queue_remove(&heap->full, page);
        atomic_store_explicit(&page->full, 0, memory_order_relaxed);
        queue_push_back(&heap->avail[page->cls], page);
    }
    struct mt_bits_ref b = mt_page_word(page, index >> 6);
    uint64_t bit = 1ull << (index & 63);
    uint64_t idle = atomic_load_explicit(b.idle, memory_order_relaxed);
    if (MT_UNLIKELY((idle | atomic_load_explicit(b.remote, memory_order_relaxed)) & bit)) {
        mt_small_free_double(ptr, api);
        return;
    }
    atomic_store_explicit(b.idle, idle | bit, memory_order_relaxed);
    mt_page_count_add(page, (uint64_t)-1);
    mt_small_free_local_slow(ptr, (uintptr_t)page | ((uintptr_t)index << MT_CACHE_INDEX_SHIFT));
}

void mt_small_free_remote(void *ptr, enum mt_api api)
{
    struct mt_segment *seg = mt_small_segment_of(ptr);
    struct mt_page *page = mt_small_page_of(seg, ptr);
    size_t index = mt_small_slot_index(page, ptr);
    struct mt_heap *self = mt_tls.heap;
    if (mt_page_owner(page, memory_order_relaxed) == self && self != &mt_heap_empty) {
        free_local_tagged(self, page, ptr, index, api);
        return;
    }
    size_t wi = index >> 6;
    uint64_t bit = 1ull << (index & 63);
    struct mt_bits_ref b = mt_page_word(page, wi);
    /* The owner's idle bit is read BEFORE our remote bit is published: once published, the
     * owner may collect it into `idle` at any moment, and reading `idle` afterwards would
     * take our own legal free for a double free. A live block's idle bit is clear, so a
     * set bit here always means the block was already freed (and collected, or freed by
     * the owner). Two threads freeing at once are caught by the fetch_or or, if the owner
     * collected in between, by mt_page_collect's idle-and-remote check. */
    if (MT_UNLIKELY(atomic_load_explicit(b.idle, memory_order_relaxed) & bit)) {
        mt_heap_error_simple(MT_ERR_DOUBLE_FREE, page->start + index * page->block_size, page->block_size, api,
                             NULL);
        return;
    }
    uint64_t old = atomic_fetch_or_explicit(b.remote, bit, memory_order_seq_cst);
    if (MT_UNLIKELY(old & bit)) {
        mt_heap_error_simple(MT_ERR_DOUBLE_FREE, page->start + index * page->block_size, page->block_size, api,
                             NULL);
        return;
    }
    /* Tag the page (see MT_PAGE_REMOTE_PENDING); the read (or the OR) of page->owner after
     * our remote bit is published is also the abandonment handshake's. */
    uintptr_t tagged = atomic_load_explicit(&page->owner, memory_order_seq_cst);
    if (!(tagged & MT_PAGE_REMOTE_PENDING))
        tagged = atomic_fetch_or_explicit(&page->owner, MT_PAGE_REMOTE_PENDING, memory_order_seq_cst);
    struct mt_heap *owner = (struct mt_heap *)(tagged & ~MT_PAGE_REMOTE_PENDING);
    if (owner == NULL)
        free_into_abandoned(seg, page);
    else if (atomic_load_explicit(&page->full, memory_order_seq_cst))
        atomic_store_explicit(&owner->remote_hint, 1, memory_order_release);
}

void mt_small_free_double(const void *ptr, enum mt_api api)
{
    struct mt_page *page = mt_small_page_of(mt_small_segment_of(ptr), ptr);
    mt_heap_error_simple(MT_ERR_DOUBLE_FREE, ptr, page->block_size, api, NULL);
}

void mt_small_free_invalid(const void *ptr, enum mt_api api)
{
    struct mt_page *page = mt_small_page_of(mt_small_segment_of(ptr), ptr);
    if (page->state == MT_PAGE_ACTIVE && page->block_size) {
        size_t offset = (size_t)((const uint8_t *)ptr - page->start);
        const void *block = page->start + (offset / page->block_size) * page->block_size;
        char detail[128];
        mt_fmt(detail, sizeof detail, "points %zu bytes into a block of %u bytes at %p",
               offset % page->block_size, page->block_size, block);
        mt_heap_error_simple(MT_ERR_INTERIOR_FREE, ptr, 0, api, detail);
        return;
    }
    mt_heap_error_simple(MT_ERR_INVALID_FREE, ptr, 0, api,
                         page->state == MT_PAGE_FREE ? "its page holds no blocks (freed earlier?)"
                                                     : "not the start of a block");
}

int mt_small_slot_state(const void *ptr)
{
    struct mt_segment *seg = mt_small_segment_of(ptr);
    struct mt_page *page = mt_small_page_of(seg, ptr);
    size_t index = mt_small_slot_index(page, ptr);
    if (index == SIZE_MAX)
        return -1;
    struct mt_bits_ref b = mt_page_word(page, index >> 6);
    uint64_t bit = 1ull << (index & 63);
    uint64_t freed = atomic_load_explicit(b.idle, memory_order_relaxed) |
                     atomic_load_explicit(b.remote, memory_order_relaxed);
    return (freed & bit) ? 0 : 1;
}

size_t mt_small_usable_size(const void *ptr, enum mt_api api)
{
    struct mt_segment *seg = mt_small_segment_of(ptr);
    struct mt_page *page = mt_small_page_of(seg, ptr);
    switch (mt_small_slot_state(ptr)) {
    case 1:
        return page->block_size;
    case 0:
        mt_heap_error_simple(api == MT_API_REALLOC ? MT_ERR_REALLOC_FREED : MT_ERR_FREED_BLOCK, ptr,
                             page->block_size, api, NULL);
        return 0;
    default:
        mt_small_free_invalid(ptr, api);
        return 0;
    }
}

/* ---- heap lifecycle ------------------------------------------------------------------- */

/* A heap struct, zeroed but for the end marks of its caches: an exited thread's, or the
 * next one of the current chunk. Caller holds mt_small_lock. */
static struct mt_heap *heap_alloc_struct(void)
{
    struct mt_heap *heap = heap_free_list;
    if (heap) {
        /* Its caches are empty (heap_recycle) and were decommitted: leave them alone. */
        _Static_assert(offsetof(struct mt_heap, cache) == 0, "the caches come first in a heap");
        heap_free_list = heap->all_next;
        memset((char *)heap + sizeof heap->cache, 0, sizeof *heap - sizeof heap->cache);
        return heap;
    }
    if (heap_chunk_next == heap_chunk_end) {
        struct mt_heap *chunk = mt_os_map(sizeof(struct mt_heap) * HEAPS_PER_CHUNK);
        if (!chunk)
            return NULL;
        heap_chunk_next = chunk;
        heap_chunk_end = chunk + HEAPS_PER_CHUNK;
    }
    return heap_chunk_next++; /* fresh mapped memory reads as zero */
}

static void heap_thread_exit(void *arg);

struct mt_heap *mt_heap_get(void)
{
    struct mt_heap *heap = mt_tls.heap;
    if (MT_LIKELY(heap != &mt_heap_empty))
        return heap;
    if (!mt_alloc_ensure_init())
        return NULL;
    mt_lock(&mt_small_lock);
    heap = heap_alloc_struct();
    if (!heap) {
        mt_unlock(&mt_small_lock);
        return NULL;
    }
    for (unsigned c = 0; c < MT_SMALL_CLASSES; c++) {
        heap->direct[c] = &mt_empty_page;
        mt_tls.cache_top[c] = (struct mt_cache_entry *)(uintptr_t)mt_cache_unstarted.entry;
    }
    heap->tid = mt_os_gettid();
    heap->all_next = mt_heap_registry;
    if (mt_heap_registry)
        mt_heap_registry->all_prev = heap;
    mt_heap_registry = heap;
    mt_unlock(&mt_small_lock);
    mt_tls.heap = heap;
    /* Arm the exit destructor last: pthread_setspecific may itself allocate (keys past the
     * first 32 use a second-level table), which now finds the heap in place. */
    heap->registered = 1;
    pthread_setspecific(heap_exit_key, heap);
    return heap;
}

struct mt_medium_arena *mt_heap_arena(void)
{
    struct mt_heap *heap = mt_heap_get();
    if (!heap)
        return NULL;
    if (MT_UNLIKELY(!heap->arena))
        heap->arena = mt_medium_arena_pick();
    return heap->arena;
}

/* Give up every segment of `heap` (thread exit, or a forked child's view of the other
 * threads). Caller holds mt_small_lock or is the only thread. */
static void heap_abandon_locked(struct mt_heap *heap, bool recount)
{
    struct mt_segment *seg = heap->segments;
    while (seg) {
        struct mt_segment *next = seg->next;
        atomic_store_explicit(&seg->owner, NULL, memory_order_seq_cst);
        for (size_t i = MT_SEGMENT_META_PAGES; i < MT_PAGES_PER_SEGMENT; i++) {
            struct mt_page *page = &seg->meta[i].page;
            if (page->state != MT_PAGE_ACTIVE)
                continue;
            atomic_store_explicit(&page->owner, 0, memory_order_seq_cst);
            mt_page_collect(page);
            if (recount)
                mt_page_recount(page);
            page->next = page->prev = NULL;
            atomic_store_explicit(&page->full, 0, memory_order_relaxed);
            if (mt_page_used(page) == 0)
                mt_segment_put_page(seg, page, true);
        }
        seg->next = seg->prev = NULL;
        if (seg->used_pages == 0)
            mt_segment_pool_put(seg);
        else
            mt_abandoned_push(seg);
        seg = next;
    }
    heap->segments = NULL;
    if (recount) /* the thread is gone without emptying its caches */
        memset(heap->cache, 0, sizeof heap->cache);
    if (heap->all_prev)
        heap->all_prev->all_next = heap->all_next;
    else
        mt_heap_registry = heap->all_next;
    if (heap->all_next)
        heap->all_next->all_prev = heap->all_prev;
    heap->all_next = heap_free_list;
    heap_free_list = heap;
}

static void heap_thread_exit(void *arg)
{
    struct mt_heap *heap = arg;
    if (!heap || heap == &mt_heap_empty)
        return;
    /* Allocations made by later destructors of this thread start a new heap (and re-arm
     * this destructor, which pthread runs again). */
    cache_flush_all(heap);
    for (unsigned c = 0; c < MT_SMALL_CLASSES; c++)
        direct_set(heap, c, &mt_empty_page);
    /* Only now: releasing a page purges its class's cache through these tops. */
    for (unsigned c = 0; c < MT_SMALL_CLASSES; c++)
        mt_tls.cache_top[c] = mt_heap_empty.cache[c].entry;
    mt_tls.heap = &mt_heap_empty;
    /* The caches are empty (their entries zero): give their pages back, as the next thread
     * to get this heap may use other classes. */
    size_t os_page = mt_os_page_size();
    uintptr_t first = mt_align_up((uintptr_t)heap->cache, os_page);
    uintptr_t end = ((uintptr_t)heap->cache + sizeof heap->cache) & ~(uintptr_t)(os_page - 1);
    if (end > first)
        mt_os_decommit((void *)first, end - first);
    mt_lock(&mt_small_lock);
    heap_abandon_locked(heap, false);
    mt_unlock(&mt_small_lock);
}

void mt_small_init(void)
{
    for (unsigned c = 0; c < MT_SMALL_CLASSES; c++) {
        uint32_t n = CACHE_BYTES_MAX / mt_class_size[c];
        cache_limit[c] = (uint8_t)(n < 1 ? 1 : n > MT_CACHE_MAX ? MT_CACHE_MAX : n);
        uint32_t refill = cache_limit[c] * CACHE_REFILL_NUM / CACHE_REFILL_DEN;
        cache_refill_count[c] = (uint8_t)(refill ? refill : 1);
    }
    pthread_key_create(&heap_exit_key, heap_thread_exit);
}

size_t mt_small_trim(void)
{
    size_t released = 0;
    struct mt_heap *heap = mt_tls.heap;
    if (heap == &mt_heap_empty)
        return 0;
    cache_flush_all(heap);
    for (struct mt_segment *seg = heap->segments; seg; seg = seg->next) {
        for (struct mt_page *page = seg->free_pages; page; page = page->next) {
            if (page->committed) {
                mt_os_decommit(page->start, MT_PAGE_SIZE);
                page->committed = 0;
                released += MT_PAGE_SIZE;
            }
        }
    }
    heap->committed_free_pages = 0;
    return released;
}

/* ---- fork ------------------------------------------------------------------------------ */

void mt_small_fork_prepare(void)
{
    mt_lock(&mt_small_lock);
}

void mt_small_fork_parent(void)
{
    mt_unlock(&mt_small_lock);
}

void mt_small_fork_child(void)
{
    mt_lock_reset(&mt_small_lock);
    /* Only the forking thread survives: the other heaps' pages become abandoned, so the
     * child can free the blocks they hold and reuse their memory; their slot caches are
     * gone with them, so the recount makes their cached slots free. A thread stopped by the
     * fork in the middle of a fast path may have set or cleared an idle bit without
     * pushing or popping its entry: either way the slot is free in the child. */
    struct mt_heap *self = mt_tls.heap;
    struct mt_heap *heap = mt_heap_registry;
    while (heap) {
        struct mt_heap *next = heap->all_next;
        if (heap != self)
            heap_abandon_locked(heap, true);
        heap = next;
    }
}
