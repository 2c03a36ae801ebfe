/* Medium arenas: regions, the top chunk, allocation, freeing with coalescing, resizing,
 * deferred remote frees, returning memory to the OS, and fork (design in medium.h, chunk
 * layout in medium_chunk.h, bins in medium_bins.c).
 *
 * Locking: each arena's lock covers its regions, bins, top and counters. A thread frees
 * into any arena: it tries the lock and, when busy, pushes the block on the arena's
 * deferred stack instead of waiting. Whoever next holds the lock drains the stack, and an
 * unlock re-checks it after releasing (seq_cst on both sides), so a block pushed
 * while the holder was leaving is never stranded: either the holder sees it, or the
 * pusher's own trylock after the push succeeds.
 *
 * Checks run before anything is modified, and a failed one is reported after the lock is
 * released, leaving the block alone (continue mode goes on with a consistent heap). */
#include "medium.h"

#include <string.h>

#include "../common/lock.h"
#include "../common/options.h"
#include "../common/platform.h"
#include "medium_internal.h"
#include "segmap.h"
#include "tunables.h"

/* Address space is made read-write in steps of at least this much: one mprotect per MiB
 * of growth; it costs no memory until touched. */
#define COMMIT_GRANULE ((size_t)1 << 20)
/* Purging: freeing a chunk into the bins never gives pages back by itself. The arena keeps
 * an upper estimate of the resident free memory in its bins (interiors of free chunks not
 * flagged decommitted, plus pages hidden inside flagged ones) and, with huge pages, adds
 * the top's resident pages; when a free takes the sum past the allowance (below), the top
 * is trimmed and then a purge decommits the interiors of free chunks of at least PURGE_CHUNK_MIN, largest bins
 * first, until the sum is half a budget below the allowance. That half is the hysteresis:
 * the next purge comes only after another half budget of frees, so a program whose free
 * memory swings around the allowance does not pay a madvise and the refaults at every
 * free, as the former per-free decommit did (the `large` bench faulted 300k pages, glibc
 * 150k). Below PURGE_CHUNK_MIN the madvise and the faults of reuse cost more than the
 * memory is worth; glibc gives back nothing but the top. The top also follows glibc's
 * rule on its own, trim_top beyond the trim threshold, with the same drop allowance
 * (release_range). */
#define PURGE_CHUNK_MIN ((size_t)1 << 20)
/* The budget, with huge pages (medium_internal.h): 8 MiB, an eighth of what is in use, or
 * the trim threshold when the program set it (mallopt, MTRACE_TRIM_THRESHOLD), whichever
 * is largest, for the bins and the top together. Without huge pages: 8 MiB, a quarter of
 * what is in use, or the trim threshold, which adapts (tunables.h) to twice the largest
 * mapped block freed so far, for the bins alone, the top following its own rule. A
 * program that frees its working set falls back to about the budget either way
 * (test_medium, test_rss).
 *
 * Why two: on the `large` bench (16 live blocks of 128 KiB-8 MiB, 60 MiB at most) the
 * second lets the bins keep 16 MiB and the top as much again: peak RSS 82.3 MiB (glibc
 * 74.3) for 220k page faults (glibc 272k). The first: 78.6 MiB for 57k faults with huge
 * pages, which make the extra faults cheap, but 694k faults of 4 KiB without them. */
#define RESIDENT_FREE_BUDGET ((size_t)8 << 20)
#define RESIDENT_FREE_IN_USE_SHIFT_HUGE 3
#define RESIDENT_FREE_IN_USE_SHIFT 2
#define PURGE_TARGET_SHIFT 1 /* purge down to the allowance minus budget / 2 */
/* On top of the budget, an arena keeps the memory its working set has just shrunk by: up
 * to in_use_peak - in_use (the "drop"), in its bins and again in its top. A working set
 * that shrinks and grows back again (the `large` bench: 30-60 MiB of 128 KiB-8 MiB
 * blocks) reuses its pages instead of faulting them in again. The peak is forgotten when
 * in use falls below a quarter of it (the program has let its working set go:
 * test_medium, test_rss), and otherwise its excess over in_use halves each time
 * allocations reach PEAK_DECAY_VOLUME_FACTOR times the peak (a working set that stays
 * smaller gives the rest back as it runs). */
#define PEAK_RESET_SHIFT 2
#define PEAK_DECAY_VOLUME_FACTOR 4
/* What a region holds besides the largest request: its header, the fence, and the slack
 * an aligned request needs (alignment up to the request size, see alloc.c). 64 KiB keeps
 * every supported request inside a fresh region with room to spare. */
#define REGION_RESERVED ((size_t)64 << 10)
#define MAX_REQUEST (MT_MEDIUM_REGION_SIZE - REGION_RESERVED)

/* MT_BIG_BSS: written only by programs that allocate medium blocks (see heap.c's
 * mt_retired_class_allocs). */
struct mt_medium_arena *_Atomic mt_medium_arenas[MT_MEDIUM_ARENAS_LIMIT] MT_BIG_BSS;
_Atomic unsigned mt_medium_arena_count;
size_t mt_medium_page = 4096;
size_t mt_medium_huge_page;

static mt_lock_t arenas_lock = MT_LOCK_INIT; /* creation of arenas, and fork */
static _Atomic unsigned arena_ticket;        /* round robin over arenas */
static _Atomic unsigned arena_default_max; /* 0 until the first arena is picked */

/* ---- small helpers ---------------------------------------------------------------------- */

static size_t chunk_size_for(size_t size)
{
    size_t nb = mt_align_up(size + MT_CHUNK_HEADER, MT_ALIGNMENT);
    return nb < MT_CHUNK_MIN ? MT_CHUNK_MIN : nb;
}

MT_INLINE struct mt_medium_region *region_of(const void *ptr, uint8_t entry)
{
    return (struct mt_medium_region *)mt_segmap_region_start((uintptr_t)ptr, entry);
}

static struct mt_medium_region *region_of_addr(const void *ptr)
{
    return region_of(ptr, mt_segmap_entry((uintptr_t)ptr));
}

MT_INLINE uint64_t region_checksum(const struct mt_medium_region *r, const struct mt_medium_arena *arena)
{
    return mt_header_check((uintptr_t)r, (uint64_t)(uintptr_t)arena);
}

MT_INLINE bool region_ok(const struct mt_medium_region *r)
{
#ifndef MT_NO_HARDENING
    return r->check == region_checksum(r, r->arena);
#else
    (void)r;
    return true;
#endif
}

/* ptr could be a block of r: aligned, after the first chunk's header, before the fence. */
MT_INLINE bool pointer_in_region(const struct mt_medium_region *r, const void *ptr)
{
    uintptr_t p = (uintptr_t)ptr;
    /* The fence moves when the region grows (under the lock): read it atomically. */
    uintptr_t fence = (uintptr_t)__atomic_load_n(&r->fence, __ATOMIC_RELAXED);
    return (p & (MT_ALIGNMENT - 1)) == 0 && p >= (uintptr_t)r->chunks + MT_CHUNK_HEADER && p < fence;
}

static uint8_t *fence_page_of(const struct mt_medium_region *r)
{
    return mt_medium_region_end(r) - mt_medium_page;
}

/* Resident free memory the arena may keep (see PURGE_CHUNK_MIN). */
static size_t purge_budget(const struct mt_medium_arena *a)
{
    bool huge = mt_medium_huge_page != 0;
    size_t budget = a->in_use >> (huge ? RESIDENT_FREE_IN_USE_SHIFT_HUGE : RESIDENT_FREE_IN_USE_SHIFT);
    bool trim_set = atomic_load_explicit(&mt_tunables.trim_threshold_fixed, memory_order_relaxed);
    size_t trim = !huge || trim_set ? mt_trim_threshold() : 0;
    if (budget < RESIDENT_FREE_BUDGET)
        budget = RESIDENT_FREE_BUDGET;
    return budget > trim ? budget : trim;
}

/* An upper estimate of the resident free memory in the arena's bins: every such page is
 * counted, some that are not resident may be (a decommitted chunk merged into a freed
 * neighbour). The top is not: trim_top looks after it. */
static size_t resident_free_estimate(const struct mt_medium_arena *a)
{
    return a->releasable_free + a->hidden_resident;
}


static void account_alloc(struct mt_medium_arena *a, size_t csize)
{
    size_t usable = csize - MT_CHUNK_HEADER;
    unsigned bucket = mt_log2_ceil(usable);
    a->in_use += usable;
    if (a->in_use > a->in_use_peak)
        a->in_use_peak = a->in_use;
    a->volume_since_decay += usable;
    a->live_blocks++;
    a->total_allocs++;
    a->hist_live[bucket]++;
    a->hist_allocs[bucket]++;
}

static void account_free(struct mt_medium_arena *a, size_t csize)
{
    size_t usable = csize - MT_CHUNK_HEADER;
    a->in_use -= usable;
    a->live_blocks--;
    a->total_frees++;
    a->hist_live[mt_log2_ceil(usable)]--;
}

static void account_resize(struct mt_medium_arena *a, size_t old_csize, size_t new_csize)
{
    size_t old_usable = old_csize - MT_CHUNK_HEADER, new_usable = new_csize - MT_CHUNK_HEADER;
    a->in_use = a->in_use - old_usable + new_usable;
    if (a->in_use > a->in_use_peak)
        a->in_use_peak = a->in_use;
    a->hist_live[mt_log2_ceil(old_usable)]--;
    a->hist_live[mt_log2_ceil(new_usable)]++;
}

static void report(const struct mt_medium_fault *fault, enum mt_api api)
{
    if (MT_UNLIKELY(fault->set))
        mt_heap_error_simple(fault->kind, fault->ptr, fault->size, api, fault->detail);
}

/* ---- regions and the top ---------------------------------------------------------------- */

/* Advise the region's huge zone (medium_internal.h) once its committed memory reaches
 * it, and again as far as the region grew since: everything from the zone to the huge
 * page holding the fence, committed or not (one madvise per region, not one per commit;
 * mprotect keeps the advice). The fence's huge page stays small: the fence page is
 * resident for good, and a huge page there would make 2 MiB of it. */
static void region_advise_huge(struct mt_medium_region *r)
{
    size_t huge = mt_medium_huge_page;
    uint8_t *zone = (uint8_t *)r + MT_MEDIUM_HUGE_ZONE;
    if (!huge || r->commit_end <= zone)
        return;
    uint8_t *end = (uint8_t *)mt_align_down((uintptr_t)fence_page_of(r), huge);
    uint8_t *start = r->huge_end ? r->huge_end : zone;
    if (end <= start)
        return;
    mt_os_advise_huge(start, (size_t)(end - start));
    r->huge_end = end;
}

/* True when addr lies in the advised part of r, where a touched page may have brought its
 * whole huge page in. */
MT_INLINE bool in_huge_pages(const struct mt_medium_region *r, uintptr_t addr)
{
    return addr >= (uintptr_t)r + MT_MEDIUM_HUGE_ZONE && addr < (uintptr_t)r->huge_end;
}

/* Reserve MT_MEDIUM_GROWN_REGION_SIZE and format the first `size` bytes as a region:
 * header, `extra` bytes after it (the arena, for a first region), a top chunk spanning
 * the rest, and the fence. Not yet in the segment map. */
static struct mt_medium_region *region_create(size_t size, size_t extra, void **extra_out)
{
    size_t page = mt_medium_page;
    uint8_t *base = mt_os_reserve_aligned(MT_MEDIUM_GROWN_REGION_SIZE, MT_SEGMENT_SIZE);
    if (!base)
        return NULL;
    struct mt_medium_region *r = (struct mt_medium_region *)base;
    uint8_t *end = base + size;
    uint8_t *header_end = base + mt_align_up(sizeof *r, MT_CACHE_LINE);
    uint8_t *chunks = header_end + mt_align_up(extra, MT_CACHE_LINE);
    uintptr_t commit = mt_align_up((uintptr_t)chunks + MT_CHUNK_HEADER + mt_top_pad(), COMMIT_GRANULE);
    if (commit > (uintptr_t)(end - page))
        commit = (uintptr_t)(end - page);
    if (!mt_os_commit(base, commit - (uintptr_t)base) || !mt_os_commit(end - page, page)) {
        mt_os_unmap(base, MT_MEDIUM_GROWN_REGION_SIZE);
        return NULL;
    }
    r->size = size;
    r->chunks = chunks;
    r->fence = mt_chunk_at(end - MT_CHUNK_FENCE);
    r->commit_end = (uint8_t *)commit;
    r->dirty_end = (uint8_t *)mt_align_up((uintptr_t)chunks + MT_CHUNK_HEADER, page);
    mt_chunk_write(mt_chunk_at(chunks), (size_t)((uint8_t *)r->fence - chunks), 0, true);
    mt_chunk_write(r->fence, MT_CHUNK_FENCE, MT_CHUNK_INUSE, false);
    region_advise_huge(r); /* a top pad beyond the zone commits into it from the start */
    *extra_out = header_end;
    return r;
}

static void region_publish(struct mt_medium_arena *a, struct mt_medium_region *r)
{
    r->arena = a;
    r->check = region_checksum(r, a);
    r->next = a->regions;
    a->regions = r;
    a->current = r;
    a->top = mt_chunk_at(r->chunks);
    mt_segmap_set((uintptr_t)r, r->size, MT_SEG_MEDIUM);
}

/* Make [.., need) read-write, with the top pad and a granule of slack (a whole huge page
 * inside the huge zone, so that every huge page there can be mapped whole). */
static bool region_commit(struct mt_medium_region *r, const uint8_t *need)
{
    if (need <= r->commit_end)
        return true;
    uintptr_t target = mt_align_up((uintptr_t)need + mt_top_pad(), COMMIT_GRANULE);
    if (mt_medium_huge_page && target > (uintptr_t)r + MT_MEDIUM_HUGE_ZONE)
        target = mt_align_up(target, mt_medium_huge_page);
    uintptr_t limit = (uintptr_t)fence_page_of(r);
    if (target > limit)
        target = limit; /* the fence page is committed from the start */
    if (target <= (uintptr_t)r->commit_end)
        return true;
    if (!mt_os_commit(r->commit_end, target - (uintptr_t)r->commit_end))
        return false;
    r->commit_end = (uint8_t *)target;
    region_advise_huge(r);
    return true;
}

static void note_dirty(struct mt_medium_region *r, const uint8_t *touched_end)
{
    uintptr_t end = mt_align_up((uintptr_t)touched_end, mt_medium_page);
    /* The page before `end` was touched: inside the huge zone its whole huge page may be
     * resident. (huge_end is huge-aligned, so the rounding stays inside the zone.) */
    if (in_huge_pages(r, end - 1))
        end = mt_align_up(end, mt_medium_huge_page);
    if (end > (uintptr_t)r->dirty_end)
        r->dirty_end = (uint8_t *)end;
}

/* Give back the top's resident pages beyond `pad` when more than `threshold` of them are
 * resident. Returns the bytes released. */
static size_t trim_top(struct mt_medium_arena *a, size_t threshold, size_t pad)
{
    struct mt_medium_region *r = a->current;
    uintptr_t top = (uintptr_t)a->top;
    uintptr_t dirty = (uintptr_t)r->dirty_end;
    if (dirty <= top || dirty - top <= threshold)
        return 0;
    if (pad > (uintptr_t)r->fence - top)
        return 0;
    uintptr_t keep = mt_align_up(top + MT_CHUNK_HEADER + pad, mt_medium_page);
    /* Whole huge pages only (medium_internal.h): keep the rest of the one holding keep. */
    if (in_huge_pages(r, keep))
        keep = mt_align_up(keep, mt_medium_huge_page);
    uintptr_t limit = (uintptr_t)fence_page_of(r); /* the fence's page stays */
    uintptr_t end = dirty < limit ? dirty : limit;
    if (keep >= end)
        return 0;
    mt_os_decommit((void *)keep, end - keep);
    r->dirty_end = (uint8_t *)keep;
    return end - keep;
}

static bool top_ok(const struct mt_medium_arena *a, struct mt_medium_fault *fault)
{
    uint64_t word;
    size_t size = (size_t)((uintptr_t)a->current->fence - (uintptr_t)a->top);
    if (MT_UNLIKELY(!mt_chunk_read(a->top, &word) || word != size)) {
        mt_medium_fault_set(fault, MT_ERR_CORRUPT_TOP, mt_chunk_user(a->top), 0,
                            "the top chunk's header does not match the end of its region");
        return false;
    }
    return true;
}

/* Make chunk c (of `size` bytes, the top or the chunk right below it) an in-use chunk of
 * nb bytes, the rest of the current region becoming the new top. False when the top is too
 * small (or corrupted: fault set) or its page cannot be committed. One routine for malloc
 * from the top and for realloc growing into it, so the two cannot disagree on the top's
 * minimum size or on committing its header. */
static bool top_carve(struct mt_medium_arena *a, struct mt_chunk *c, size_t size, size_t nb, bool prev_inuse,
                      struct mt_medium_fault *fault)
{
    struct mt_medium_region *r = a->current;
    size_t total = size + (size_t)((uintptr_t)r->fence - (uintptr_t)a->top);
    if (!top_ok(a, fault) || total < nb + MT_CHUNK_MIN)
        return false;
    struct mt_chunk *rest = mt_chunk_next(c, nb);
    uint8_t *need = (uint8_t *)rest + MT_CHUNK_HEADER;
    if (!region_commit(r, need))
        return false;
    note_dirty(r, need);
    mt_chunk_write(rest, total - nb, 0, true);
    mt_chunk_write(c, nb, MT_CHUNK_INUSE, prev_inuse);
    a->top = rest;
    return true;
}

/* Carve nb bytes off the top; NULL when it is too small (or corrupted: fault set). */
static struct mt_chunk *top_take(struct mt_medium_arena *a, size_t nb, struct mt_medium_fault *fault)
{
    struct mt_chunk *top = a->top;
    return top_carve(a, top, 0, nb, true, fault) ? top : NULL;
}

/* The current region's top ran out: move its fence to the end of its reservation, the
 * top growing with it. False when it is already that big (or the OS refuses the page). */
static bool region_grow(struct mt_medium_arena *a)
{
    struct mt_medium_region *r = a->current;
    size_t page = mt_medium_page;
    if (r->size >= MT_MEDIUM_GROWN_REGION_SIZE)
        return false;
    uint8_t *old_fence_page = fence_page_of(r);
    uint8_t *end = (uint8_t *)r + MT_MEDIUM_GROWN_REGION_SIZE;
    if (!mt_os_commit(end - page, page))
        return false;
    struct mt_chunk *fence = mt_chunk_at(end - MT_CHUNK_FENCE);
    mt_chunk_write(fence, MT_CHUNK_FENCE, MT_CHUNK_INUSE, false);
    /* The old fence page joins the top: if it lies beyond dirty_end, give it back so that
     * everything there is still not resident. */
    if (r->dirty_end <= old_fence_page)
        mt_os_decommit(old_fence_page, page);
    mt_segmap_set((uintptr_t)r, MT_MEDIUM_GROWN_REGION_SIZE, MT_SEG_MEDIUM);
    r->size = MT_MEDIUM_GROWN_REGION_SIZE;
    __atomic_store_n(&r->fence, fence, __ATOMIC_RELAXED);
    mt_chunk_write(a->top, (size_t)((uintptr_t)fence - (uintptr_t)a->top), 0, mt_chunk_prev_inuse(a->top));
    region_advise_huge(r);
    return true;
}

/* The current region is full: grow it, or start a new one, filing what is left of the
 * old top as an ordinary free chunk (its interior given back: a top that ran out is
 * usually big). */
static bool arena_add_region(struct mt_medium_arena *a)
{
    if (region_grow(a))
        return true;
    void *unused;
    struct mt_medium_region *fresh = region_create(MT_MEDIUM_GROWN_REGION_SIZE, 0, &unused);
    if (!fresh)
        return false;
    struct mt_medium_region *old = a->current;
    uint8_t *limit = fence_page_of(old);
    if (old->commit_end < limit) {
        if (!mt_os_commit(old->commit_end, (size_t)(limit - old->commit_end))) {
            mt_os_unmap(fresh, MT_MEDIUM_GROWN_REGION_SIZE);
            return false;
        }
        old->commit_end = limit;
    }
    /* Count the whole old region as possibly resident, then subtract the interior of
     * the retired top below, which is either decommitted now or was never touched. */
    old->dirty_end = mt_medium_region_end(old);
    struct mt_chunk *top = a->top;
    size_t size = (size_t)((uintptr_t)old->fence - (uintptr_t)top);
    unsigned flags = 0;
    uintptr_t lo, hi;
    mt_medium_interior(top, size, &lo, &hi);
    if (hi > lo) {
        mt_os_decommit((void *)lo, hi - lo);
        flags = MT_CHUNK_DECOMMITTED;
    }
    mt_chunk_write(top, size, flags, true);
    mt_chunk_write_footer(top, size);
    mt_medium_bin_insert(a, top, size, flags);
    region_publish(a, fresh);
    return true;
}

/* ---- freeing ---------------------------------------------------------------------------- */

static void purge_locked(struct mt_medium_arena *a, size_t target);

/* How far in_use has fallen below its recent peak, once the peak is forgotten or decayed
 * as PEAK_RESET_SHIFT says. */
static size_t working_set_drop(struct mt_medium_arena *a)
{
    if (a->in_use < a->in_use_peak >> PEAK_RESET_SHIFT) {
        a->in_use_peak = a->in_use;
    } else if (a->volume_since_decay / PEAK_DECAY_VOLUME_FACTOR > a->in_use_peak) {
        a->in_use_peak = a->in_use + ((a->in_use_peak - a->in_use) >> 1);
        a->volume_since_decay = 0;
    }
    return a->in_use_peak - a->in_use;
}

/* Resident pages of the top, as trim_top sees them. */
static size_t top_resident(const struct mt_medium_arena *a)
{
    uintptr_t top = (uintptr_t)a->top, dirty = (uintptr_t)a->current->dirty_end;
    return dirty > top ? dirty - top : 0;
}

/* Trim and purge when the resident free memory of the bins and (with huge pages) the top
 * passes the budget plus the drop from the peak (see PURGE_CHUNK_MIN, RESIDENT_FREE_BUDGET
 * and PEAK_RESET_SHIFT). */
static void purge_if_over_budget(struct mt_medium_arena *a)
{
    size_t budget = purge_budget(a);
    size_t bins = resident_free_estimate(a);
    size_t top = mt_medium_huge_page ? top_resident(a) : 0;
    if (MT_LIKELY(bins + top <= budget))
        return;
    size_t allowance = budget + working_set_drop(a);
    if (bins + top <= allowance)
        return;
    /* The top goes first: the bins' resident chunks are the holes that best-fit reuses
     * next, the top serves only what they cannot (the `large` bench: 57k page faults
     * this way, 94k purging the bins first, for the same peak). But only a top holding
     * more than half a budget: when the bins alone stay over the allowance (their small
     * chunks are never purged), trimming a small top at every free would make every
     * allocation from it fault again. */
    size_t half = budget >> PURGE_TARGET_SHIFT;
    size_t target = allowance - half;
    size_t top_share = target > bins ? target - bins : 0;
    if (top) {
        trim_top(a, top_share > half ? top_share : half, mt_top_pad());
        top = top_resident(a);
    }
    purge_locked(a, target > top ? target - top : 0);
}

/* Make [c, c + size) free memory; the chunk before it is in use. Merges with the next
 * chunk when it is free or the top, bins the result, purges when over budget.
 * `clean`: interior bytes of free chunks merged in before that are flagged decommitted
 * (`flagged`: there was at least one). `next_word`: the next chunk's header word when the
 * caller has verified it, else NULL. */
static void release_range(struct mt_medium_arena *a, struct mt_medium_region *r, struct mt_chunk *c, size_t size,
                          size_t clean, bool flagged, const uint64_t *next_word, struct mt_medium_fault *fault)
{
    struct mt_chunk *next = mt_chunk_next(c, size);
    if (next == a->top) {
        /* The top's size follows from the region's end, so even a top whose header was
         * overwritten is rebuilt correctly here; it is reported all the same. */
        top_ok(a, fault);
        size_t tsize = (size_t)((uintptr_t)r->fence - (uintptr_t)next);
        a->top = c;
        mt_chunk_write(c, size + tsize, 0, true);
        /* glibc's rule (the top beyond the trim threshold goes back), with the same
         * allowance for a working set that has just shrunk as the bins get. */
        trim_top(a, mt_trim_threshold() + working_set_drop(a), mt_top_pad());
        purge_if_over_budget(a);
        return;
    }
    uint64_t nw = next_word ? *next_word : 0;
    bool next_verified = next_word || mt_chunk_read(next, &nw);
    if (next_verified && !(nw & MT_CHUNK_INUSE)) {
        size_t nsize = mt_chunk_size_of(nw);
        if (nsize >= MT_CHUNK_MIN && mt_chunk_footer(next, nsize) == nsize &&
            mt_medium_bin_unlink(a, next, nw, fault)) {
            if (nw & MT_CHUNK_DECOMMITTED) {
                clean += mt_medium_interior_bytes(next, nsize);
                flagged = true;
            }
            size += nsize;
        } else {
            mt_medium_fault_set(fault, MT_ERR_CORRUPT_HEADER, mt_chunk_user(next), 0,
                                "a free chunk's footer or links were overwritten (write after free?)");
        }
    } else if (next_verified) {
        mt_chunk_set_prev_inuse(next, false);
    } else {
        mt_medium_fault_set(fault, MT_ERR_CORRUPT_HEADER, mt_chunk_user(next), 0,
                            "the header of the block after a freed one was overwritten");
    }
    /* Merged with decommitted chunks: the result keeps the flag when most of its interior
     * is clean, the freed pages counted as hidden (no madvise now: they may be reused
     * first); otherwise it is counted resident whole. Either way the estimate only errs
     * upwards, and the next purge corrects it. */
    unsigned flags = 0;
    if (flagged) {
        size_t interior = mt_medium_interior_bytes(c, size);
        size_t dirty = interior > clean ? interior - clean : 0;
        if (interior && clean >= dirty) {
            flags = MT_CHUNK_DECOMMITTED;
            a->hidden_resident += dirty;
        }
    }
    mt_chunk_write(c, size, flags, true);
    mt_chunk_write_footer(c, size);
    mt_medium_unsorted_push(a, c, size, flags);
    purge_if_over_budget(a);
}

static enum mt_heap_error_kind freed_kind(enum mt_api api, bool freeing)
{
    if (api == MT_API_REALLOC)
        return MT_ERR_REALLOC_FREED;
    return freeing ? MT_ERR_DOUBLE_FREE : MT_ERR_FREED_BLOCK;
}

/* Free the in-use chunk c of region r (lock held). `verified`: its header word as the
 * caller read and verified it without the lock, or NULL. Either way the word is read
 * again under the lock: two threads freeing the same block at once both saw it in use. */
static void free_chunk_locked(struct mt_medium_arena *a, struct mt_medium_region *r, struct mt_chunk *c,
                              const uint64_t *verified, struct mt_medium_fault *fault, enum mt_api api)
{
    uint64_t word;
    void *user = mt_chunk_user(c);
    if (verified) {
        word = mt_chunk_load(&c->word);
        if (MT_UNLIKELY(word != *verified) && !mt_chunk_read(c, &word))
            verified = NULL;
    }
    if (MT_UNLIKELY(!verified && !mt_chunk_read(c, &word))) {
        mt_medium_fault_set(fault, MT_ERR_CORRUPT_HEADER, user, 0, "the 16 bytes before the block were overwritten");
        return;
    }
    size_t size = mt_chunk_size_of(word);
    if (MT_UNLIKELY(!(word & MT_CHUNK_INUSE))) {
        mt_medium_fault_set(fault, freed_kind(api, true), user, size - MT_CHUNK_HEADER, NULL);
        return;
    }
    struct mt_chunk *next = mt_chunk_next(c, size);
    uint64_t nw;
    if (MT_UNLIKELY(size < MT_CHUNK_MIN || (uintptr_t)next > (uintptr_t)r->fence)) {
        mt_medium_fault_set(fault, MT_ERR_CORRUPT_HEADER, user, 0, "the block's size runs past its region");
        return;
    }
    if (MT_UNLIKELY(!mt_chunk_read(next, &nw))) {
        mt_medium_fault_set(fault, MT_ERR_CORRUPT_HEADER, user, size - MT_CHUNK_HEADER,
                            "the header after the block was overwritten (buffer overflow?)");
        return;
    }
    if (MT_UNLIKELY(!mt_chunk_prev_inuse(next))) {
        mt_medium_fault_set(fault, MT_ERR_CORRUPT_HEADER, user, size - MT_CHUNK_HEADER,
                            "the next chunk's prev-in-use bit says the block is already free");
        return;
    }
    size_t clean = 0;
    bool flagged = false;
    struct mt_chunk *start = c;
    size_t total = size;
    if (!mt_chunk_prev_inuse(c)) {
        size_t psize = mt_chunk_prev_size(c);
        struct mt_chunk *prev = (struct mt_chunk *)((uintptr_t)c - psize);
        uint64_t pw;
        if (MT_UNLIKELY(psize < MT_CHUNK_MIN || (psize & (MT_ALIGNMENT - 1)) ||
                        psize > (size_t)((uintptr_t)c - (uintptr_t)r->chunks) || !mt_chunk_read(prev, &pw) ||
                        (pw & MT_CHUNK_INUSE) || mt_chunk_size_of(pw) != psize)) {
            mt_medium_fault_set(fault, MT_ERR_CORRUPT_HEADER, user, size - MT_CHUNK_HEADER,
                                "the free chunk before the block is corrupted (its footer or header)");
            return;
        }
        if (!mt_medium_bin_unlink(a, prev, pw, fault))
            return;
        if (pw & MT_CHUNK_DECOMMITTED) {
            clean = mt_medium_interior_bytes(prev, psize);
            flagged = true;
        }
        start = prev;
        total += psize;
    }
    /* The block's own header must say free even when it becomes the inside of a merged
     * chunk: a second free() of it then finds a verified header without the in-use bit.
     * (Unmerged, release_range rewrites it anyway.) */
    if (start != c)
        mt_chunk_write(c, size, 0, false);
    account_free(a, size);
    release_range(a, r, start, total, clean, flagged, next == a->top ? NULL : &nw, fault);
}

/* Free every block of the deferred stack (lock held). Stops at the first failure: the
 * rest of the stack is suspect (a double free pushes a block twice, making a cycle). */
static void drain_locked(struct mt_medium_arena *a, struct mt_medium_fault *fault)
{
    uintptr_t head = atomic_exchange_explicit(&a->deferred, 0, memory_order_acquire);
    struct mt_medium_fault local = {0};
    while (head && !local.set) {
        uintptr_t *slot = (uintptr_t *)head;
        uintptr_t next = (uintptr_t)mt_link_decode(slot, *slot);
        free_chunk_locked(a, region_of_addr(slot), mt_chunk_of_user(slot), NULL, &local, MT_API_FREE);
        if (next && !local.set) {
            uint8_t entry = mt_segmap_entry(next);
            if (mt_segmap_kind(entry) != MT_SEG_MEDIUM || region_of((void *)next, entry)->arena != a ||
                !pointer_in_region(region_of((void *)next, entry), (void *)next))
                mt_medium_fault_set(&local, MT_ERR_CORRUPT_FREELIST, slot, 0,
                                    "a block waiting to be freed was written to (write after free?)");
        }
        head = next;
    }
    if (local.set)
        mt_medium_fault_set(fault, local.kind, local.ptr, local.size, local.detail);
}

MT_INLINE void arena_lock(struct mt_medium_arena *a, struct mt_medium_fault *drain_fault)
{
    mt_lock(&a->lock);
    if (MT_UNLIKELY(atomic_load_explicit(&a->deferred, memory_order_relaxed) != 0))
        drain_locked(a, drain_fault);
}

/* Unlock, then take care of blocks deferred while we held the lock (see file comment):
 * the release and the load of the stack are sequentially consistent, as are the pusher's
 * push and its trylock, so one of the two sides always sees the other. */
MT_INLINE void arena_unlock(struct mt_medium_arena *a, struct mt_medium_fault *drain_fault)
{
    mt_unlock_sc(&a->lock);
    while (MT_UNLIKELY(atomic_load_explicit(&a->deferred, memory_order_seq_cst) != 0) && mt_trylock_sc(&a->lock)) {
        drain_locked(a, drain_fault);
        mt_unlock_sc(&a->lock);
    }
}

static void deferred_push(struct mt_medium_arena *a, void *ptr)
{
    uintptr_t *slot = ptr;
    uintptr_t head = atomic_load_explicit(&a->deferred, memory_order_relaxed);
    do
        *slot = mt_link_encode(slot, (void *)head);
    while (!atomic_compare_exchange_weak_explicit(&a->deferred, &head, (uintptr_t)ptr, memory_order_seq_cst,
                                                  memory_order_relaxed));
}

/* Where a pointer that is not a live block's start lies (lock held). */
enum pointer_class { PTR_OUTSIDE, PTR_BAD_HEADER, PTR_INSIDE_LIVE, PTR_INSIDE_FREE, PTR_HEAP_CORRUPT };

static enum pointer_class classify_locked(const struct mt_medium_region *r, const void *ptr,
                                          const struct mt_chunk **found, size_t *found_size)
{
    uintptr_t p = (uintptr_t)ptr;
    uintptr_t target = p - MT_CHUNK_HEADER;
    if (p < (uintptr_t)r->chunks + MT_CHUNK_HEADER || p >= (uintptr_t)r->fence)
        return PTR_OUTSIDE;
    const struct mt_chunk *c = mt_chunk_at(r->chunks);
    while ((uintptr_t)c < (uintptr_t)r->fence) {
        uint64_t word;
        size_t size = 0;
        bool ok = mt_chunk_read(c, &word);
        if (ok)
            size = mt_chunk_size_of(word);
        if (!ok || size < MT_CHUNK_MIN || size > (uintptr_t)r->fence - (uintptr_t)c) {
            *found = c;
            return (uintptr_t)c == target ? PTR_BAD_HEADER : PTR_HEAP_CORRUPT;
        }
        if (p < (uintptr_t)c + size) {
            *found = c;
            *found_size = size;
            return (word & MT_CHUNK_INUSE) ? PTR_INSIDE_LIVE : PTR_INSIDE_FREE;
        }
        c = mt_chunk_next(c, size);
    }
    return PTR_OUTSIDE;
}

/* A pointer into a medium region that is not the start of a live block: find out what it
 * is and report it. Cold: only buggy programs get here. */
static MT_COLD void report_not_live(struct mt_medium_region *r, const void *ptr, enum mt_api api, bool freeing)
{
    if (!region_ok(r)) {
        mt_heap_error_simple(MT_ERR_CORRUPT_HEADER, ptr, 0, api, "the header of its medium region was overwritten");
        return;
    }
    uint64_t word;
    if (pointer_in_region(r, ptr) && mt_chunk_read(mt_chunk_of_user(ptr), &word) && !(word & MT_CHUNK_INUSE)) {
        size_t size = mt_chunk_size_of(word);
        mt_heap_error_simple(freed_kind(api, freeing), ptr, size > MT_CHUNK_HEADER ? size - MT_CHUNK_HEADER : 0, api,
                             NULL);
        return;
    }
    struct mt_medium_arena *a = r->arena;
    struct mt_medium_fault drain_fault = {0};
    const struct mt_chunk *found = NULL;
    size_t found_size = 0;
    arena_lock(a, &drain_fault);
    enum pointer_class where = classify_locked(r, ptr, &found, &found_size);
    arena_unlock(a, &drain_fault);
    report(&drain_fault, MT_API_FREE);
    size_t usable = found_size > MT_CHUNK_HEADER ? found_size - MT_CHUNK_HEADER : 0;
    switch (where) {
    case PTR_BAD_HEADER:
        mt_heap_error_simple(MT_ERR_CORRUPT_HEADER, ptr, 0, api,
                             "the 16 bytes before the block were overwritten (underflow, or overflow of the block "
                             "before)");
        return;
    case PTR_HEAP_CORRUPT:
        mt_heap_error_simple(MT_ERR_CORRUPT_HEADER, mt_chunk_user(found), 0, api,
                             "found while looking up a pointer: a chunk header of the region is corrupted");
        return;
    case PTR_INSIDE_LIVE:
        mt_heap_error_simple(MT_ERR_INTERIOR_FREE, ptr, usable, api, "points inside a live block, not at its start");
        return;
    case PTR_INSIDE_FREE:
        mt_heap_error_simple(freed_kind(api, freeing), ptr, 0, api, "points into free memory (freed before?)");
        return;
    default:
        mt_heap_error_simple(MT_ERR_INVALID_FREE, ptr, 0, api, "not a block of its medium region");
        return;
    }
}

void mt_medium_free(void *ptr, uint8_t entry, enum mt_api api)
{
    struct mt_medium_region *r = region_of(ptr, entry);
    struct mt_chunk *c = mt_chunk_of_user(ptr);
    uint64_t word;
    if (MT_UNLIKELY(!region_ok(r) || !pointer_in_region(r, ptr) || !mt_chunk_read(c, &word) ||
                    !(word & MT_CHUNK_INUSE))) {
        report_not_live(r, ptr, api, true);
        return;
    }
    struct mt_medium_arena *a = r->arena;
    struct mt_medium_fault fault = {0};
    if (MT_LIKELY(mt_trylock(&a->lock))) {
        if (MT_UNLIKELY(atomic_load_explicit(&a->deferred, memory_order_relaxed) != 0))
            drain_locked(a, &fault);
        struct mt_medium_fault own = {0};
        free_chunk_locked(a, r, c, &word, &own, api);
        arena_unlock(a, &fault);
        report(&own, api);
        report(&fault, MT_API_FREE);
        return;
    }
    /* Busy: leave the block for the holder rather than wait. */
    deferred_push(a, ptr);
    if (mt_trylock_sc(&a->lock)) {
        drain_locked(a, &fault);
        arena_unlock(a, &fault);
        report(&fault, MT_API_FREE);
    }
}

/* ---- allocation ------------------------------------------------------------------------- */

/* A chunk taken from a bin (prev and next in use) serves nb bytes; the rest, when big
 * enough, is split off and filed straight into its bin (an exact fit for the next request
 * is unlikely, and the unsorted bin would only file it one request later), keeping the
 * decommitted flag when its interior lies inside the original's (it always does: it ends
 * where the original ended). */
static size_t use_binned(struct mt_medium_arena *a, struct mt_chunk *c, size_t size, uint64_t word, size_t nb)
{
    size_t rest = size - nb;
    if (rest >= MT_CHUNK_MIN) {
        mt_chunk_write(c, nb, MT_CHUNK_INUSE, true);
        struct mt_chunk *tail = mt_chunk_next(c, nb);
        unsigned flags = (word & MT_CHUNK_DECOMMITTED) && mt_medium_interior_bytes(tail, rest)
                             ? MT_CHUNK_DECOMMITTED
                             : 0;
        mt_chunk_write(tail, rest, flags, true);
        mt_chunk_write_footer(tail, rest);
        mt_medium_bin_insert(a, tail, rest, flags);
        return nb;
    }
    mt_chunk_write(c, size, MT_CHUNK_INUSE, true);
    mt_chunk_set_prev_inuse(mt_chunk_next(c, size), true);
    return size;
}

/* An in-use chunk of at least nb bytes (its size in *csize), lock held; NULL when the OS
 * refuses memory or a check failed (fault set). Not yet counted. */
static struct mt_chunk *malloc_locked(struct mt_medium_arena *a, size_t nb, size_t *csize,
                                      struct mt_medium_fault *fault)
{
    uint64_t word;
    struct mt_chunk *c = mt_medium_bins_take(a, nb, &word, fault);
    if (c) {
        *csize = use_binned(a, c, mt_chunk_size_of(word), word, nb);
        return c;
    }
    if (fault->set)
        return NULL;
    c = top_take(a, nb, fault);
    if (!c && !fault->set && arena_add_region(a))
        c = top_take(a, nb, fault);
    *csize = nb;
    return c;
}

void *mt_medium_malloc(struct mt_medium_arena *a, size_t size)
{
    if (MT_UNLIKELY(size > MAX_REQUEST))
        return NULL;
    size_t nb = chunk_size_for(size);
    struct mt_medium_fault fault = {0}, drained = {0};
    size_t csize;
    arena_lock(a, &drained);
    struct mt_chunk *c = malloc_locked(a, nb, &csize, &fault);
    if (c)
        account_alloc(a, csize);
    arena_unlock(a, &drained);
    report(&drained, MT_API_FREE);
    report(&fault, MT_API_MALLOC);
    return c ? mt_chunk_user(c) : NULL;
}

/* Cut an in-use chunk down to nb bytes when the tail is big enough to be a chunk. */
static size_t shrink_locked(struct mt_medium_arena *a, struct mt_chunk *c, size_t size, size_t nb,
                            struct mt_medium_fault *fault)
{
    if (size - nb < MT_CHUNK_MIN)
        return size;
    mt_chunk_write(c, nb, MT_CHUNK_INUSE, mt_chunk_prev_inuse(c));
    release_range(a, region_of_addr(c), mt_chunk_next(c, nb), size - nb, 0, false, NULL, fault);
    return nb;
}

void *mt_medium_memalign(struct mt_medium_arena *a, size_t align, size_t size)
{
    if (MT_UNLIKELY(size > MAX_REQUEST || align > MAX_REQUEST || size + align > MAX_REQUEST))
        return NULL;
    size_t nb = chunk_size_for(size);
    struct mt_medium_fault fault = {0}, drained = {0};
    size_t csize;
    arena_lock(a, &drained);
    /* Over-allocate so an aligned start with a whole free chunk before it always fits. */
    struct mt_chunk *c = malloc_locked(a, nb + align + MT_CHUNK_MIN, &csize, &fault);
    if (c) {
        uintptr_t user = (uintptr_t)mt_chunk_user(c);
        if (user & (align - 1)) {
            uintptr_t aligned = mt_ptr_align_up(user + MT_CHUNK_MIN, align);
            size_t lead = aligned - user;
            struct mt_chunk *block = mt_chunk_of_user((void *)aligned);
            /* The lead becomes a free chunk: its previous chunk is in use (c came from a
             * bin or the top), its next is the aligned block. */
            mt_chunk_write(c, lead, 0, true);
            mt_chunk_write_footer(c, lead);
            mt_medium_unsorted_push(a, c, lead, 0);
            mt_chunk_write(block, csize - lead, MT_CHUNK_INUSE, false);
            c = block;
            csize -= lead;
        }
        csize = shrink_locked(a, c, csize, nb, &fault);
        account_alloc(a, csize);
    }
    arena_unlock(a, &drained);
    report(&drained, MT_API_FREE);
    report(&fault, MT_API_MEMALIGN);
    return c ? mt_chunk_user(c) : NULL;
}

/* ---- the block's own queries ------------------------------------------------------------ */

size_t mt_medium_usable_size(const void *ptr, uint8_t entry, enum mt_api api)
{
    struct mt_medium_region *r = region_of(ptr, entry);
    uint64_t word;
    if (MT_LIKELY(region_ok(r) && pointer_in_region(r, ptr) && mt_chunk_read(mt_chunk_of_user(ptr), &word) &&
                  (word & MT_CHUNK_INUSE)))
        return mt_chunk_size_of(word) - MT_CHUNK_HEADER;
    if (api != MT_API_INTERNAL)
        report_not_live(r, ptr, api, false);
    return 0;
}

/* Grow in-use chunk c (size bytes) to at least nb bytes and, when the top or the free
 * neighbour has room, up to want bytes (nb <= want). */
static bool grow_locked(struct mt_medium_arena *a, struct mt_chunk *c, size_t size, size_t nb, size_t want,
                        struct mt_medium_fault *fault)
{
    struct mt_chunk *next = mt_chunk_next(c, size);
    bool prev_inuse = mt_chunk_prev_inuse(c);
    if (next == a->top) {
        if (want > nb && top_carve(a, c, size, want, prev_inuse, fault)) {
            account_resize(a, size, want);
            return true;
        }
        if (fault->set || !top_carve(a, c, size, nb, prev_inuse, fault))
            return false;
        account_resize(a, size, nb);
        return true;
    }
    uint64_t nw;
    if (!mt_chunk_read(next, &nw) || (nw & MT_CHUNK_INUSE))
        return false;
    size_t nsize = mt_chunk_size_of(nw);
    if (size + nsize < nb || nsize < MT_CHUNK_MIN || mt_chunk_footer(next, nsize) != nsize)
        return false;
    if (!mt_medium_bin_unlink(a, next, nw, fault))
        return false;
    size_t total = size + nsize;
    size_t new_size = total;
    size_t keep = total < want ? total : want;
    if (total - keep >= MT_CHUNK_MIN) {
        struct mt_chunk *tail = mt_chunk_next(c, keep);
        size_t rest = total - keep;
        unsigned flags = (nw & MT_CHUNK_DECOMMITTED) && mt_medium_interior_bytes(tail, rest)
                             ? MT_CHUNK_DECOMMITTED
                             : 0;
        mt_chunk_write(tail, rest, flags, true);
        mt_chunk_write_footer(tail, rest);
        mt_medium_unsorted_push(a, tail, rest, flags);
        new_size = keep;
    } else {
        mt_chunk_set_prev_inuse(mt_chunk_next(c, total), true);
    }
    mt_chunk_write(c, new_size, MT_CHUNK_INUSE, prev_inuse);
    account_resize(a, size, new_size);
    return true;
}

bool mt_medium_resize_in_place(void *ptr, uint8_t entry, size_t new_size, size_t want_size)
{
    if (new_size > MAX_REQUEST)
        return false;
    if (want_size > MAX_REQUEST || want_size < new_size)
        want_size = new_size;
    struct mt_medium_region *r = region_of(ptr, entry);
    if (!region_ok(r) || !pointer_in_region(r, ptr))
        return false;
    struct mt_medium_arena *a = r->arena;
    struct mt_chunk *c = mt_chunk_of_user(ptr);
    size_t nb = chunk_size_for(new_size);
    struct mt_medium_fault fault = {0}, drained = {0};
    bool ok = false;
    arena_lock(a, &drained);
    uint64_t word;
    if (mt_chunk_read(c, &word) && (word & MT_CHUNK_INUSE)) {
        size_t size = mt_chunk_size_of(word);
        if (nb <= size) {
            size_t shrunk = shrink_locked(a, c, size, nb, &fault);
            if (shrunk != size)
                account_resize(a, size, shrunk);
            ok = true;
        } else {
            ok = grow_locked(a, c, size, nb, chunk_size_for(want_size), &fault);
        }
    }
    arena_unlock(a, &drained);
    report(&drained, MT_API_FREE);
    report(&fault, MT_API_REALLOC);
    return ok;
}

size_t mt_medium_max_request(void)
{
    return MAX_REQUEST;
}

/* ---- arenas ----------------------------------------------------------------------------- */

bool mt_medium_init(void)
{
    mt_medium_page = mt_os_page_size();
    return true;
}

/* The huge page size is read (two /sys files) when the first arena is created, not at
 * start-up: a program that never makes a medium allocation does not open them. Every
 * reader of mt_medium_huge_page works on a region, and the first region is the first
 * arena's, created after this under the same lock. */
static void huge_page_init(void)
{
    static bool done; /* under arenas_lock */
    if (done)
        return;
    /* Huge pages only when they divide a segment: the huge zone (segment-aligned) must start
     * on a huge-page boundary. */
    size_t huge = mt_option_bool(MT_OPT_HUGE_PAGES) ? mt_os_huge_page_size() : 0;
    mt_medium_huge_page = huge && MT_SEGMENT_SIZE % huge == 0 ? huge : 0;
    done = true;
}

/* The CPUs are counted at the first medium allocation, not at start-up: a program that
 * never makes one does not fault in the 64 KiB of libc text around sched_getaffinity. */
static unsigned arena_default_limit(void)
{
    unsigned limit = atomic_load_explicit(&arena_default_max, memory_order_relaxed);
    if (MT_UNLIKELY(limit == 0)) {
        limit = MT_MEDIUM_ARENAS_PER_CPU * (unsigned)mt_os_cpu_count();
        atomic_store_explicit(&arena_default_max, limit, memory_order_relaxed);
    }
    return limit;
}

static unsigned arena_limit(void)
{
    int max = atomic_load_explicit(&mt_tunables.arena_max, memory_order_relaxed);
    unsigned limit = max > 0 ? (unsigned)max : arena_default_limit();
    if (limit == 0)
        limit = 1;
    return limit < MT_MEDIUM_ARENAS_LIMIT ? limit : MT_MEDIUM_ARENAS_LIMIT;
}

static struct mt_medium_arena *arena_create(unsigned index)
{
    huge_page_init();
    void *space;
    struct mt_medium_region *r = region_create(MT_MEDIUM_REGION_SIZE, sizeof(struct mt_medium_arena), &space);
    if (!r)
        return NULL;
    struct mt_medium_arena *a = space; /* fresh pages: every counter is zero */
    a->index = index;
    struct mt_medium_link *heads[MT_MEDIUM_BINS + 1];
    heads[0] = &a->unsorted;
    for (unsigned b = 0; b < MT_MEDIUM_BINS; b++)
        heads[b + 1] = &a->bins[b];
    for (unsigned i = 0; i <= MT_MEDIUM_BINS; i++) {
        heads[i]->fd = mt_link_encode(&heads[i]->fd, heads[i]);
        heads[i]->bk = mt_link_encode(&heads[i]->bk, heads[i]);
    }
    region_publish(a, r);
    return a;
}

struct mt_medium_arena *mt_medium_arena_pick(void)
{
    unsigned ticket = atomic_fetch_add_explicit(&arena_ticket, 1, memory_order_relaxed);
    unsigned index = ticket % arena_limit();
    struct mt_medium_arena *a = atomic_load_explicit(&mt_medium_arenas[index], memory_order_acquire);
    if (a)
        return a;
    mt_lock(&arenas_lock);
    unsigned count = atomic_load_explicit(&mt_medium_arena_count, memory_order_relaxed);
    if (index < count) {
        a = mt_medium_arenas[index];
    } else {
        /* The table stays dense: the next arena is created at `count`. */
        a = arena_create(count);
        if (a) {
            atomic_store_explicit(&mt_medium_arenas[count], a, memory_order_release);
            atomic_store_explicit(&mt_medium_arena_count, count + 1, memory_order_release);
        } else if (count) {
            a = mt_medium_arenas[ticket % count]; /* no memory for another: share one */
        }
    }
    mt_unlock(&arenas_lock);
    return a;
}

/* ---- returning memory, collecting, fork ------------------------------------------------- */

/* Decommit c's interior (a free chunk of `size` bytes, header word `word`); a flagged
 * chunk is decommitted again, for the pages hidden in it. Returns the bytes that were
 * counted resident. */
static size_t decommit_chunk(struct mt_medium_arena *a, struct mt_chunk *c, size_t size, uint64_t word)
{
    uintptr_t lo, hi;
    mt_medium_interior(c, size, &lo, &hi);
    if (hi <= lo)
        return 0;
    mt_os_decommit((void *)lo, hi - lo);
    if (word & MT_CHUNK_DECOMMITTED)
        return 0;
    mt_chunk_write(c, size, (unsigned)(word & MT_CHUNK_FLAG_MASK) | MT_CHUNK_DECOMMITTED, mt_chunk_prev_inuse(c));
    a->releasable_free -= hi - lo;
    a->decommitted += hi - lo;
    return hi - lo;
}

/* Visit the free chunks of bins[first..] from the last bin down, then the unsorted bin;
 * `visit` returns false to stop. A list that does not decode ends its walk
 * (mt_heap_check reports it). */
typedef bool (*chunk_visitor)(struct mt_medium_arena *a, struct mt_chunk *c, size_t size, uint64_t word,
                              void *ctx);

static bool walk_list(struct mt_medium_arena *a, struct mt_medium_link *head, chunk_visitor visit, void *ctx)
{
    struct mt_medium_link *node = mt_link_decode(&head->fd, head->fd);
    while (node != head && mt_medium_link_plausible(a, node)) {
        struct mt_chunk *c = mt_chunk_of_link(node);
        uint64_t word;
        if (!mt_chunk_read(c, &word))
            return true;
        if (!visit(a, c, mt_chunk_size_of(word), word, ctx))
            return false;
        node = mt_link_decode(&node->fd, node->fd);
    }
    return true;
}

static void walk_free_chunks(struct mt_medium_arena *a, unsigned first, chunk_visitor visit, void *ctx)
{
    for (unsigned b = MT_MEDIUM_BINS; b-- > first;)
        if (!walk_list(a, &a->bins[b], visit, ctx))
            return;
    walk_list(a, &a->unsorted, visit, ctx);
}

struct purge_walk {
    size_t target;   /* stop once the estimate is at most this */
    size_t min_size; /* leave smaller chunks alone */
    size_t released;
};

static bool purge_flagged(struct mt_medium_arena *a, struct mt_chunk *c, size_t size, uint64_t word, void *ctx)
{
    (void)ctx;
    if (word & MT_CHUNK_DECOMMITTED)
        decommit_chunk(a, c, size, word);
    return true;
}

static bool purge_resident(struct mt_medium_arena *a, struct mt_chunk *c, size_t size, uint64_t word, void *ctx)
{
    struct purge_walk *w = ctx;
    if (resident_free_estimate(a) <= w->target)
        return false;
    if (size >= w->min_size && !(word & MT_CHUNK_DECOMMITTED))
        w->released += decommit_chunk(a, c, size, word);
    return true;
}

/* Bring the resident free estimate down to `target` (lock held): first pages hidden in
 * flagged chunks (every flagged chunk decommitted again: the only way to know they are
 * gone), then the interiors of resident chunks of at least PURGE_CHUNK_MIN, largest bins
 * first. The top is left to trim_top. Returns the bytes released. */
static size_t purge_chunks(struct mt_medium_arena *a, size_t target, size_t min_size)
{
    if (a->hidden_resident) {
        walk_free_chunks(a, 0, purge_flagged, NULL);
        a->hidden_resident = 0;
    }
    struct purge_walk w = {target, min_size, 0};
    walk_free_chunks(a, min_size ? mt_medium_bin_index(min_size) : 0, purge_resident, &w);
    return w.released;
}

static void purge_locked(struct mt_medium_arena *a, size_t target)
{
    purge_chunks(a, target, PURGE_CHUNK_MIN);
}

size_t mt_medium_trim(size_t pad)
{
    size_t released = 0;
    unsigned count = atomic_load_explicit(&mt_medium_arena_count, memory_order_acquire);
    for (unsigned i = 0; i < count; i++) {
        struct mt_medium_arena *a = atomic_load_explicit(&mt_medium_arenas[i], memory_order_acquire);
        struct mt_medium_fault drained = {0};
        arena_lock(a, &drained);
        released += trim_top(a, 0, pad);
        released += purge_chunks(a, 0, 0);
        arena_unlock(a, &drained);
        report(&drained, MT_API_FREE);
    }
    return released;
}

void mt_medium_collect(void)
{
    unsigned count = atomic_load_explicit(&mt_medium_arena_count, memory_order_acquire);
    for (unsigned i = 0; i < count; i++) {
        struct mt_medium_arena *a = atomic_load_explicit(&mt_medium_arenas[i], memory_order_acquire);
        if (!atomic_load_explicit(&a->deferred, memory_order_acquire))
            continue;
        struct mt_medium_fault drained = {0};
        arena_lock(a, &drained);
        arena_unlock(a, &drained);
        report(&drained, MT_API_FREE);
    }
}

void mt_medium_fork_prepare(void)
{
    mt_lock(&arenas_lock);
    unsigned count = atomic_load_explicit(&mt_medium_arena_count, memory_order_relaxed);
    for (unsigned i = 0; i < count; i++)
        mt_lock(&mt_medium_arenas[i]->lock);
}

void mt_medium_fork_parent(void)
{
    unsigned count = atomic_load_explicit(&mt_medium_arena_count, memory_order_relaxed);
    for (unsigned i = count; i-- > 0;)
        mt_unlock(&mt_medium_arenas[i]->lock);
    mt_unlock(&arenas_lock);
}

void mt_medium_fork_child(void)
{
    unsigned count = atomic_load_explicit(&mt_medium_arena_count, memory_order_relaxed);
    for (unsigned i = 0; i < count; i++)
        mt_lock_reset(&mt_medium_arenas[i]->lock);
    mt_lock_reset(&arenas_lock);
}
