/* Statistics every module reports the same way, summed by mt_alloc_stats(). */
#ifndef MT_ALLOCATOR_STATS_H
#define MT_ALLOCATOR_STATS_H

#include <stddef.h>
#include <stdint.h>

struct mt_zone_stats {
    size_t mapped;       /* address space held */
    size_t committed;    /* of which may be resident (not decommitted) */
    size_t in_use;       /* usable bytes of live blocks */
    size_t free_bytes;   /* committed bytes available for blocks */
    size_t largest_free; /* largest extent a request could be served from without the OS */
    size_t live_blocks;
    size_t total_allocs; /* since start */
    size_t total_frees;
    size_t free_chunks;  /* free extents (medium free chunks, small pages with free slots) */
    size_t releasable;   /* bytes malloc_trim(0) could return right now (medium top) */
};

void mt_zone_stats_add(struct mt_zone_stats *sum, const struct mt_zone_stats *part);

/* Histogram buckets for blocks above the small classes: power-of-two ranges, bucket b
 * holding usable sizes in (2^(b-1), 2^b]. */
#define MT_LOG2_BUCKETS 64

void mt_small_stats(struct mt_zone_stats *out);
void mt_medium_stats(struct mt_zone_stats *out);
void mt_large_stats(struct mt_zone_stats *out);

/* Per-power-of-two counts of medium and large blocks, for show_alloc_hist and snapshots:
 * live[b] blocks live now, allocs[b] allocations since start. */
void mt_medium_histogram(uint64_t live[MT_LOG2_BUCKETS], uint64_t allocs[MT_LOG2_BUCKETS]);
void mt_large_histogram(uint64_t live[MT_LOG2_BUCKETS], uint64_t allocs[MT_LOG2_BUCKETS]);

#endif
