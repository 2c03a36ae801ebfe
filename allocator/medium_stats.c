/* Medium-arena statistics, histogram, walk and consistency check.
 *
 * Each takes one arena lock at a time, so each arena's numbers are exact at the moment
 * they are read; blocks waiting on a deferred stack count as live until drained
 * (introspect.c collects them first). Statistics read counters kept up to date by every
 * operation, so a snapshot costs a few loads per region; only the checker walks chunks. */
#include <string.h>

#include "check.h"
#include "medium_internal.h"
#include "segmap.h"
#include "walk.h"

/* More regions than an arena can have (47-bit address space / 64 MiB): a region list
 * longer than this is a cycle. */
#define REGIONS_MAX ((size_t)1 << 21)
/* A bin list longer than every free chunk could form is a cycle. */
#define BIN_WALK_MAX ((size_t)1 << 32)

static struct mt_medium_arena *arena_at(unsigned i)
{
    return atomic_load_explicit(&mt_medium_arenas[i], memory_order_acquire);
}

static unsigned arena_count(void)
{
    return atomic_load_explicit(&mt_medium_arena_count, memory_order_acquire);
}

/* Bytes of a region that may be resident, before subtracting decommitted free chunks:
 * up to dirty_end, plus the fence page when dirty_end stops short of it. */
static size_t region_committed(const struct mt_medium_region *r)
{
    uint8_t *fence_page = mt_medium_region_end(r) - mt_medium_page;
    size_t bytes = (size_t)(r->dirty_end - (uint8_t *)r);
    return r->dirty_end <= fence_page ? bytes + mt_medium_page : bytes;
}

/* Resident bytes of the top: from its start to dirty_end. */
static size_t top_dirty(const struct mt_medium_arena *a)
{
    uintptr_t top = (uintptr_t)a->top, dirty = (uintptr_t)a->current->dirty_end;
    uintptr_t fence = (uintptr_t)a->current->fence;
    if (dirty > fence)
        dirty = fence;
    return dirty > top ? dirty - top : 0;
}

void mt_medium_stats(struct mt_zone_stats *out)
{
    /* Frees parked on deferred lists are frees already made: count them as such, so
     * mallinfo2, malloc_stats and the tracer's snapshots agree with the program's view. */
    mt_medium_collect();
    memset(out, 0, sizeof *out);
    unsigned count = arena_count();
    for (unsigned i = 0; i < count; i++) {
        struct mt_medium_arena *a = arena_at(i);
        mt_lock(&a->lock);
        size_t committed = 0;
        for (const struct mt_medium_region *r = a->regions; r; r = r->next) {
            out->mapped += r->size;
            committed += region_committed(r);
        }
        /* Pages hidden in decommitted chunks (medium.c, purging) count as resident. */
        size_t clean = a->decommitted > a->hidden_resident ? a->decommitted - a->hidden_resident : 0;
        out->committed += committed > clean ? committed - clean : 0;
        size_t top = top_dirty(a);
        uintptr_t keep = mt_align_up((uintptr_t)a->top + MT_CHUNK_HEADER, mt_medium_page);
        uintptr_t dirty = (uintptr_t)a->top + top;
        out->in_use += a->in_use;
        out->live_blocks += a->live_blocks;
        out->total_allocs += a->total_allocs;
        out->total_frees += a->total_frees;
        out->free_chunks += a->free_chunks + 1; /* the top */
        out->free_bytes += a->free_bytes - clean + top; /* resident free memory */
        size_t largest = mt_medium_bins_largest(a);
        if (top > largest)
            largest = top;
        if (largest > out->largest_free)
            out->largest_free = largest;
        out->releasable += a->releasable_free + (dirty > keep ? dirty - keep : 0);
        mt_unlock(&a->lock);
    }
    /* A decommitted free chunk can serve a request without a system call, but its pages
     * are not part of free_bytes: keep 1 - largest_free / free_bytes (external
     * fragmentation) within [0, 1]. */
    if (out->largest_free > out->free_bytes)
        out->largest_free = out->free_bytes;
}

void mt_medium_histogram(uint64_t live[MT_LOG2_BUCKETS], uint64_t allocs[MT_LOG2_BUCKETS])
{
    unsigned count = arena_count();
    for (unsigned i = 0; i < count; i++) {
        struct mt_medium_arena *a = arena_at(i);
        mt_lock(&a->lock);
        for (unsigned b = 0; b < MT_LOG2_BUCKETS; b++) {
            live[b] += a->hist_live[b];
            allocs[b] += a->hist_allocs[b];
        }
        mt_unlock(&a->lock);
    }
}

void mt_medium_walk(struct mt_walker *walker)
{
    unsigned count = arena_count();
    for (unsigned i = 0; i < count; i++) {
        struct mt_medium_arena *a = arena_at(i);
        mt_lock(&a->lock);
        for (const struct mt_medium_region *r = a->regions; r; r = r->next) {
            if (walker->zone) {
                struct mt_zone_info zone = {MT_ZONE_MEDIUM, (uintptr_t)r, r->size, 0};
                walker->zone(walker, &zone);
            }
            if (!walker->block)
                continue;
            const struct mt_chunk *c = mt_chunk_at(r->chunks);
            while ((uintptr_t)c < (uintptr_t)r->fence) {
                uint64_t word;
                size_t size;
                if (!mt_chunk_read(c, &word) || (size = mt_chunk_size_of(word)) < MT_CHUNK_MIN ||
                    size > (uintptr_t)r->fence - (uintptr_t)c)
                    break; /* corrupted: mt_heap_check says where */
                if (word & MT_CHUNK_INUSE)
                    walker->block(walker, mt_chunk_user(c), size - MT_CHUNK_HEADER);
                c = mt_chunk_next(c, size);
            }
        }
        mt_unlock(&a->lock);
    }
}

/* What walking the chunks found, compared with the arena's counters and bins afterwards. */
struct chunk_totals {
    size_t free_chunks, free_bytes, decommitted, releasable, live, in_use;
};

static bool check_region(struct mt_check *check, const struct mt_medium_arena *a, const struct mt_medium_region *r,
                         struct chunk_totals *t, bool *top_seen)
{
    if (r->arena != a || r->check != mt_header_check((uintptr_t)r, (uint64_t)(uintptr_t)a))
        return mt_check_fail(check, r, "medium region header does not verify");
    for (uintptr_t s = (uintptr_t)r; s < (uintptr_t)mt_medium_region_end(r); s += MT_SEGMENT_SIZE) {
        uint8_t entry = mt_segmap_entry(s);
        if (mt_segmap_kind(entry) != MT_SEG_MEDIUM || mt_segmap_region_start(s, entry) != (uintptr_t)r)
            return mt_check_fail(check, (void *)s, "medium region is not marked in the segment map");
    }
    if (r->chunks < (uint8_t *)r || (uint8_t *)r->fence != mt_medium_region_end(r) - MT_CHUNK_FENCE ||
        r->dirty_end > mt_medium_region_end(r))
        return mt_check_fail(check, r, "medium region bounds are wrong");
    const struct mt_chunk *c = mt_chunk_at(r->chunks);
    bool prev_inuse = true, prev_free = false;
    while ((uintptr_t)c < (uintptr_t)r->fence) {
        uint64_t word;
        if (!mt_chunk_read(c, &word))
            return mt_check_fail(check, mt_chunk_user(c), "medium chunk header checksum does not verify");
        size_t size = mt_chunk_size_of(word);
        if (size < MT_CHUNK_MIN || (size & (MT_ALIGNMENT - 1)) || size > (uintptr_t)r->fence - (uintptr_t)c)
            return mt_check_fail(check, mt_chunk_user(c), "medium chunk size %zu does not fit its region", size);
        if (mt_chunk_prev_inuse(c) != prev_inuse)
            return mt_check_fail(check, mt_chunk_user(c), "medium chunk's prev-in-use bit disagrees with the chunk "
                                                           "before it");
        bool inuse = (word & MT_CHUNK_INUSE) != 0;
        if (c == a->top) {
            if (r != a->current || (uintptr_t)c + size != (uintptr_t)r->fence || word != size)
                return mt_check_fail(check, mt_chunk_user(c), "medium top chunk is not the free tail of the current "
                                                               "region");
            if (prev_free)
                return mt_check_fail(check, mt_chunk_user(c), "a free chunk lies before the top");
            *top_seen = true;
        } else if (!inuse) {
            if (prev_free)
                return mt_check_fail(check, mt_chunk_user(c), "two adjacent medium chunks are free");
            if (mt_chunk_footer(c, size) != size)
                return mt_check_fail(check, mt_chunk_user(c), "free medium chunk's footer %zu differs from its size "
                                                               "%zu", mt_chunk_footer(c, size), size);
            size_t interior = mt_medium_interior_bytes(c, size);
            t->free_chunks++;
            t->free_bytes += size;
            if (word & MT_CHUNK_DECOMMITTED)
                t->decommitted += interior;
            else
                t->releasable += interior;
        } else {
            t->live++;
            t->in_use += size - MT_CHUNK_HEADER;
        }
        prev_inuse = inuse;
        prev_free = !inuse;
        c = mt_chunk_next(c, size);
    }
    uint64_t fence_word;
    if (c != r->fence || !mt_chunk_read(r->fence, &fence_word) || fence_word != (MT_CHUNK_FENCE | MT_CHUNK_INUSE))
        return mt_check_fail(check, r->fence, "medium chunks do not end at the region's fence");
    if (mt_chunk_prev_inuse(r->fence) != prev_inuse)
        return mt_check_fail(check, r->fence, "the fence's prev-in-use bit disagrees with the last chunk");
    return true;
}

static bool check_bin(struct mt_check *check, const struct mt_medium_arena *a, const struct mt_medium_link *head,
                      int bin, size_t *binned)
{
    const struct mt_medium_link *prev = head;
    const struct mt_medium_link *node = mt_link_decode(&head->fd, head->fd);
    size_t last_size = 0;
    for (size_t n = 0; node != head; n++) {
        if (n > BIN_WALK_MAX || !mt_medium_link_plausible(a, node))
            return mt_check_fail(check, prev, "medium bin %d: a link does not decode to a free chunk", bin);
        if (mt_link_decode(&node->bk, node->bk) != prev)
            return mt_check_fail(check, node, "medium bin %d: a back link does not match", bin);
        const struct mt_chunk *c = mt_chunk_of_link(node);
        uint64_t word;
        if (!mt_chunk_read(c, &word) || (word & MT_CHUNK_INUSE))
            return mt_check_fail(check, node, "medium bin %d holds a chunk that is not free", bin);
        size_t size = mt_chunk_size_of(word);
        uint8_t entry = mt_segmap_entry((uintptr_t)c);
        if (((const struct mt_medium_region *)mt_segmap_region_start((uintptr_t)c, entry))->arena != a)
            return mt_check_fail(check, node, "medium bin %d holds a chunk of another arena", bin);
        if (bin >= 0) {
            if (mt_medium_bin_index(size) != (unsigned)bin)
                return mt_check_fail(check, node, "medium bin %d holds a chunk of size %zu", bin, size);
            if (bin >= MT_MEDIUM_SMALL_BINS && size < last_size)
                return mt_check_fail(check, node, "medium bin %d is not sorted by size", bin);
        }
        last_size = size;
        (*binned)++;
        prev = node;
        node = mt_link_decode(&node->fd, node->fd);
    }
    if (mt_link_decode(&head->bk, head->bk) != prev)
        return mt_check_fail(check, head, "medium bin %d: the head's back link is not the last chunk", bin);
    if (bin >= 0) {
        bool marked = (a->bitmap[bin >> 6] >> (bin & 63)) & 1;
        if (marked != (prev != head))
            return mt_check_fail(check, head, "medium bin %d: the bitmap says %s", bin,
                                 marked ? "non-empty" : "empty");
    }
    return true;
}

static bool check_arena(struct mt_check *check, const struct mt_medium_arena *a)
{
    struct chunk_totals t;
    memset(&t, 0, sizeof t);
    bool top_seen = false, current_seen = false;
    size_t regions = 0;
    for (const struct mt_medium_region *r = a->regions; r; r = r->next) {
        if (++regions > REGIONS_MAX)
            return mt_check_fail(check, a, "medium arena's region list does not terminate");
        current_seen |= r == a->current;
        if (!check_region(check, a, r, &t, &top_seen))
            return false;
    }
    if (!current_seen || !top_seen)
        return mt_check_fail(check, a, "medium arena's top is not in one of its regions");
    size_t binned = 0;
    if (!check_bin(check, a, &a->unsorted, -1, &binned))
        return false;
    for (int b = 0; b < MT_MEDIUM_BINS; b++)
        if (!check_bin(check, a, &a->bins[b], b, &binned))
            return false;
    if (binned != t.free_chunks)
        return mt_check_fail(check, a, "medium arena has %zu free chunks but %zu in its bins", t.free_chunks, binned);
    if (t.free_chunks != a->free_chunks || t.free_bytes != a->free_bytes || t.decommitted != a->decommitted ||
        t.releasable != a->releasable_free)
        return mt_check_fail(check, a, "medium arena's free counters (%zu chunks, %zu bytes) disagree with its "
                                       "chunks (%zu, %zu)", a->free_chunks, a->free_bytes, t.free_chunks,
                             t.free_bytes);
    if (t.live != a->live_blocks || t.in_use != a->in_use)
        return mt_check_fail(check, a, "medium arena counts %zu live blocks (%zu bytes), its chunks say %zu (%zu)",
                             a->live_blocks, a->in_use, t.live, t.in_use);
    return true;
}

bool mt_medium_check(struct mt_check *check)
{
    unsigned count = arena_count();
    for (unsigned i = 0; i < count; i++) {
        struct mt_medium_arena *a = arena_at(i);
        mt_lock(&a->lock);
        bool ok = check_arena(check, a);
        mt_unlock(&a->lock);
        if (!ok)
            return false;
    }
    return true;
}
