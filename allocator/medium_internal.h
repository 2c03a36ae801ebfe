/* Cross-file names of the medium arenas (medium.c, medium_bins.c, medium_stats.c).
 *
 * Region layout (region->size bytes of address space, segment-aligned; every region has
 * MT_MEDIUM_GROWN_REGION_SIZE reserved and an arena's first one starts at
 * MT_MEDIUM_REGION_SIZE, growing in place when its top runs out):
 *
 *   [region header][arena, in the arena's first region only][chunks ... top][fence]
 *
 * Pages up to region->commit_end are read-write; the rest is PROT_NONE until the top grows
 * into it, except the last page, which holds the fence. region->dirty_end bounds what may
 * be resident: the top's pages beyond it were never touched or were given back.
 *
 * Everything in an arena is under its lock, except `deferred` (a lock-free stack of blocks
 * freed while the lock was busy) and the headers of live blocks, which their owners read
 * without it (medium_chunk.h). */
#ifndef MT_ALLOCATOR_MEDIUM_INTERNAL_H
#define MT_ALLOCATOR_MEDIUM_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/lock.h"
#include "config.h"
#include "error.h"
#include "medium.h"
#include "medium_chunk.h"
#include "segmap.h"
#include "stats.h"

/* Most arenas ever created (mallopt(M_ARENA_MAX) beyond this is clamped): the arena table
 * is a static array so lookups need no lock. */
#define MT_MEDIUM_ARENAS_LIMIT 256
/* Default arena count per CPU when arena_max is 0: glibc's 64-bit default (8) halved,
 * since our small blocks never take an arena lock. */
#define MT_MEDIUM_ARENAS_PER_CPU 4

/* Bins: exact sizes below 1 KiB (16-byte steps, as glibc's small bins), then 16 bins per
 * power of two (so a bin spans at most 1/16 of its sizes, kept sorted for best fit) up
 * to the region size. */
#define MT_MEDIUM_SMALL_BIN_LIMIT 1024
#define MT_MEDIUM_SMALL_BINS (MT_MEDIUM_SMALL_BIN_LIMIT / 16)
#define MT_MEDIUM_BINS_PER_DOUBLING 16
#define MT_MEDIUM_LARGE_FIRST_LOG2 10 /* log2(MT_MEDIUM_SMALL_BIN_LIMIT) */
/* A region can grow to 256 MiB (the most a segment-map entry can reach back: 64
 * segments), so a big working set stays in one region with one top instead of spreading
 * over several 64 MiB ones, each with its own top and holes: on the `large` bench (30-60
 * MiB of 128 KiB-8 MiB blocks) a second 64 MiB region cost 3 MiB more peak RSS and twice
 * the page faults. An arena's first region starts at MT_MEDIUM_REGION_SIZE and grows in
 * place (the rest of its reservation is PROT_NONE address space, not counted as mapped
 * until then: most arenas never need it); later regions start grown. */
#define MT_MEDIUM_GROWN_REGION_SIZE ((size_t)256 << 20)
#define MT_MEDIUM_REGION_LOG2 28      /* log2(MT_MEDIUM_GROWN_REGION_SIZE): the bins span it */
#define MT_MEDIUM_BINS \
    (MT_MEDIUM_SMALL_BINS + (MT_MEDIUM_REGION_LOG2 - MT_MEDIUM_LARGE_FIRST_LOG2) * MT_MEDIUM_BINS_PER_DOUBLING)
#define MT_MEDIUM_BITMAP_WORDS ((MT_MEDIUM_BINS + 63) / 64)
_Static_assert(MT_MEDIUM_GROWN_REGION_SIZE == (size_t)1 << MT_MEDIUM_REGION_LOG2, "region size and its log2 agree");
_Static_assert(MT_MEDIUM_REGION_SIZE <= MT_MEDIUM_GROWN_REGION_SIZE, "later regions are not smaller");
_Static_assert((MT_MEDIUM_GROWN_REGION_SIZE >> MT_SEGMENT_SHIFT) - 1 <= MT_SEGMAP_MAX_DISTANCE,
               "the segment map reaches a region's start from its last segment");

/* Transparent huge pages. A fault costs about 1.1 us per 4 KiB page on the bench machine
 * and about 0.2 us per 4 KiB inside a 2 MiB huge page (one fault, one zeroing), so a big
 * working set that the arena gives back and faults in again pays five times less with huge
 * pages. A small program must not pay for them in RSS (a touched byte makes 2 MiB
 * resident), so only the part of a region past MT_MEDIUM_HUGE_ZONE from its start is
 * advised (MADV_HUGEPAGE), once the region's committed memory reaches it: an arena holding
 * less never has a huge page.
 *
 * Inside the zone, memory goes back to the OS in whole huge pages only: a free chunk's
 * decommittable interior is rounded inwards to huge-page boundaries, the top is trimmed
 * from a huge-page boundary. A partial MADV_DONTNEED would split the huge page, every
 * later fault there would take 4 KiB again, and khugepaged (max_ptes_none is 511 by
 * default) would collapse the range back into a whole resident huge page, undoing the
 * decommit behind our back. The zone's bounds depend only on the address, so a chunk's
 * interior is the same whenever it is computed (the arena's counters rely on that).
 *
 * 4 MiB (one segment), not 8: a working set cycled through the region below the zone
 * faults there in 4 KiB pages every time it is given back and reused. On the `large` bench
 * the first 8 MiB took 21k of its 56k page faults per run; from 4 MiB: 35k faults,
 * 0.28 -> 0.16 s, peak RSS 78.3 -> 79.3 MiB (glibc 74.4); `fragment` 376k -> 345k faults,
 * same peak and RSS after free; `realloc` and `aligned` unchanged. The price: an arena of
 * 4-8 MiB may now hold huge pages (at most one partly used at its top end). */
#define MT_MEDIUM_HUGE_ZONE ((size_t)4 << 20)
_Static_assert(MT_MEDIUM_HUGE_ZONE % MT_SEGMENT_SIZE == 0,
               "the zone starts on a segment boundary, so on a huge-page boundary (huge pages are used only "
               "when they divide a segment)");

struct mt_medium_region {
    uint64_t check;                 /* mt_header_check(region, arena): a forged region fails */
    struct mt_medium_arena *arena;  /* owner; never changes */
    struct mt_medium_region *next;  /* the arena's regions, newest first */
    size_t size;                    /* bytes of the region, up to the fence; grows once, under the lock */
    uint8_t *chunks;                /* first chunk */
    struct mt_chunk *fence;         /* last MT_CHUNK_FENCE bytes of the region */
    uint8_t *commit_end;            /* [region, commit_end) is read-write (and the fence page) */
    uint8_t *dirty_end;             /* pages from here to the fence page are not resident */
    /* [region + MT_MEDIUM_HUGE_ZONE, huge_end) is advised for huge pages (NULL: nothing
     * yet); huge-page aligned, ends before the huge page holding the fence. */
    uint8_t *huge_end;
};

struct mt_medium_arena {
    mt_lock_t lock;
    uint8_t pad_lock[MT_CACHE_LINE - sizeof(mt_lock_t)];
    /* Blocks freed by threads that found the lock busy: user pointers linked through their
     * first word (encoded), pushed with a CAS, taken whole by the next lock holder. */
    _Atomic uintptr_t deferred;
    uint8_t pad_deferred[MT_CACHE_LINE - sizeof(uintptr_t)];

    unsigned index;
    struct mt_medium_region *regions; /* newest first */
    struct mt_medium_region *current; /* the region holding the top */
    struct mt_chunk *top;

    struct mt_medium_link unsorted;
    struct mt_medium_link bins[MT_MEDIUM_BINS];
    uint64_t bitmap[MT_MEDIUM_BITMAP_WORDS]; /* bit b: bins[b] is not empty */

    /* Counters (under the lock). Free chunks are those in bins, the top excluded. */
    size_t in_use;          /* usable bytes of live blocks */
    size_t live_blocks;
    size_t total_allocs;
    size_t total_frees;
    size_t free_chunks;
    size_t free_bytes;      /* sum of free chunk sizes */
    size_t decommitted;     /* interior bytes of free chunks flagged MT_CHUNK_DECOMMITTED */
    size_t releasable_free; /* interior bytes of free chunks not flagged */
    /* Resident pages inside flagged chunks: freed blocks merged into a decommitted chunk
     * without a madvise. An upper estimate (an allocation from such a chunk does not
     * lower it); zeroed by a purge, which decommits every flagged chunk again. */
    size_t hidden_resident;
    /* The most bytes in use lately: resident free memory up to the drop from it is kept
     * (medium.c, purging). Decays towards in_use as allocation volume passes. */
    size_t in_use_peak;
    size_t volume_since_decay; /* usable bytes allocated since the peak last decayed */
    uint64_t hist_live[MT_LOG2_BUCKETS];
    uint64_t hist_allocs[MT_LOG2_BUCKETS];
};

/* A check that failed under the lock: reported after the lock is released (the report
 * hook may take other locks, and continue mode goes on running). */
struct mt_medium_fault {
    bool set;
    enum mt_heap_error_kind kind;
    const void *ptr;
    size_t size;
    const char *detail;
};

MT_INLINE void mt_medium_fault_set(struct mt_medium_fault *fault, enum mt_heap_error_kind kind, const void *ptr,
                                   size_t size, const char *detail)
{
    if (fault->set)
        return; /* keep the first */
    fault->set = true;
    fault->kind = kind;
    fault->ptr = ptr;
    fault->size = size;
    fault->detail = detail;
}

/* Every arena created so far; entries [0, mt_medium_arena_count) are set. */
extern struct mt_medium_arena *_Atomic mt_medium_arenas[MT_MEDIUM_ARENAS_LIMIT];
extern _Atomic unsigned mt_medium_arena_count;
/* The OS page size, read once at init. */
extern size_t mt_medium_page;
/* The transparent huge page size, or 0 when the kernel gives none (read once, when the
 * first arena is created). */
extern size_t mt_medium_huge_page;

/* Where the huge zone of the region holding addr (a medium address) starts, or
 * UINTPTR_MAX when huge pages are off. */
MT_INLINE uintptr_t mt_medium_huge_zone(uintptr_t addr)
{
    if (!mt_medium_huge_page)
        return UINTPTR_MAX;
    return mt_segmap_region_start(addr, mt_segmap_entry(addr)) + MT_MEDIUM_HUGE_ZONE;
}

/* What decommitting a free chunk gives back: its interior pages (mt_chunk_interior), in
 * whole huge pages for the part inside its region's huge zone. */
MT_INLINE void mt_medium_interior(const struct mt_chunk *c, size_t size, uintptr_t *lo, uintptr_t *hi)
{
    mt_chunk_interior(c, size, mt_medium_page, lo, hi);
    if (*hi <= *lo)
        return;
    uintptr_t zone = mt_medium_huge_zone((uintptr_t)c);
    if (*hi <= zone)
        return;
    /* zone is huge-aligned and below hi, so the rounded end stays at or above it. */
    uintptr_t end = *hi & ~(uintptr_t)(mt_medium_huge_page - 1);
    uintptr_t start = *lo < zone ? *lo : mt_ptr_align_up(*lo, mt_medium_huge_page);
    *lo = start;
    *hi = end > start ? end : start;
}

MT_INLINE size_t mt_medium_interior_bytes(const struct mt_chunk *c, size_t size)
{
    uintptr_t lo, hi;
    mt_medium_interior(c, size, &lo, &hi);
    return (size_t)(hi - lo);
}

MT_INLINE uint8_t *mt_medium_region_end(const struct mt_medium_region *r)
{
    return (uint8_t *)r + r->size;
}

/* ---- bins (medium_bins.c); all under the arena lock ---- */
unsigned mt_medium_bin_index(size_t size);
/* A link target is either one of the arena's bin heads or a free chunk of some medium
 * region: anything else means a corrupted list. Checked before a decoded link is followed,
 * so a scribbled link is reported instead of dereferenced. */
MT_INLINE bool mt_medium_link_plausible(const struct mt_medium_arena *arena, const void *node)
{
    uintptr_t p = (uintptr_t)node;
    uintptr_t heads = (uintptr_t)&arena->unsorted;
    uintptr_t heads_end = (uintptr_t)(arena->bins + MT_MEDIUM_BINS);
    if (p >= heads && p < heads_end)
        return (p - heads) % sizeof(struct mt_medium_link) == 0;
    return (p & (MT_ALIGNMENT - 1)) == 0 && mt_segmap_kind(mt_segmap_entry(p)) == MT_SEG_MEDIUM;
}
/* File a free chunk (header, footer and flags already written): small and large bins, or
 * the unsorted bin. */
void mt_medium_bin_insert(struct mt_medium_arena *arena, struct mt_chunk *c, size_t size, uint64_t word);
void mt_medium_unsorted_push(struct mt_medium_arena *arena, struct mt_chunk *c, size_t size, uint64_t word);
/* Remove a free chunk from whichever bin holds it, checking its neighbours' links point
 * back to it; false (nothing changed, fault set) when they do not. */
bool mt_medium_bin_unlink(struct mt_medium_arena *arena, struct mt_chunk *c, uint64_t word,
                          struct mt_medium_fault *fault);
/* The best free chunk for a chunk size `nb`, removed from its bin: an exact small bin, the
 * unsorted bin (sorting what it passes), then best fit in the large bins. NULL when the
 * bins have nothing big enough (or a list is corrupted: fault set). *word_out is the
 * chunk's header word. */
struct mt_chunk *mt_medium_bins_take(struct mt_medium_arena *arena, size_t nb, uint64_t *word_out,
                                     struct mt_medium_fault *fault);
/* The largest chunk in the bins (statistics). */
size_t mt_medium_bins_largest(const struct mt_medium_arena *arena);

#endif
