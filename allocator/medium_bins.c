/* Medium bins: where free chunks wait to be reused.
 *
 * - Small bins: one exact size each (16-byte steps below 1 KiB), LIFO.
 * - Large bins: 16 per power of two, each kept sorted by size (ascending), so the first
 *   chunk at least as big as a request is its best fit, and the first chunk of any later
 *   non-empty bin is the best fit among the bigger ones.
 * - The unsorted bin: chunks just freed (and leftovers of aligned and in-place requests).
 *   A request first looks at them, oldest first, taking an exact fit and filing the others
 *   into their bins on the way, which is where the sorting cost goes (a free is O(1)).
 * - A bitmap of non-empty bins, so finding the next bigger one is a few word scans.
 *
 * Lists are circular and doubly linked through the free chunk's user area; each link is
 * stored encoded with the address of the field holding it (mt_link_encode), and a chunk is
 * only unlinked after both neighbours are seen to point back at it, so an overflow or a
 * write after free that scribbles over a free chunk is reported instead of turning into a
 * write to an address of the attacker's choosing. Everything here runs under the arena
 * lock. */
#include <string.h>

#include "medium_internal.h"
#include "segmap.h"

/* Chunks the unsorted bin files per request at most: bounds the time of one malloc after
 * a burst of frees; what remains is sorted by the next requests. */
#define UNSORTED_SORT_MAX 4096
/* Steps a sorted insertion may walk in a large bin before giving up on order (a list
 * that long is all but impossible with 16 bins per doubling; the limit keeps a corrupted
 * list from looping forever). */
#define SORTED_WALK_MAX 65536

unsigned mt_medium_bin_index(size_t size)
{
    if (size < MT_MEDIUM_SMALL_BIN_LIMIT)
        return (unsigned)(size >> 4);
    unsigned lg = mt_log2_floor(size);
    if (lg >= MT_MEDIUM_REGION_LOG2)
        return MT_MEDIUM_BINS - 1;
    unsigned sub = (unsigned)(size >> (lg - 4)) & (MT_MEDIUM_BINS_PER_DOUBLING - 1);
    return MT_MEDIUM_SMALL_BINS + (lg - MT_MEDIUM_LARGE_FIRST_LOG2) * MT_MEDIUM_BINS_PER_DOUBLING + sub;
}

static struct mt_medium_link *link_fd(const struct mt_medium_link *node)
{
    return mt_link_decode(&node->fd, node->fd);
}
static struct mt_medium_link *link_bk(const struct mt_medium_link *node)
{
    return mt_link_decode(&node->bk, node->bk);
}
static void set_fd(struct mt_medium_link *node, const struct mt_medium_link *target)
{
    node->fd = mt_link_encode(&node->fd, target);
}
static void set_bk(struct mt_medium_link *node, const struct mt_medium_link *target)
{
    node->bk = mt_link_encode(&node->bk, target);
}

static size_t node_size(const struct mt_medium_link *node)
{
    return mt_chunk_size_of(mt_chunk_load(&mt_chunk_of_link(node)->word));
}

static bool is_head(const struct mt_medium_arena *arena, const struct mt_medium_link *node)
{
    return node >= &arena->unsorted && node < arena->bins + MT_MEDIUM_BINS;
}

static void insert_between(struct mt_medium_link *prev, struct mt_medium_link *node, struct mt_medium_link *next)
{
    set_fd(node, next);
    set_bk(node, prev);
    set_fd(prev, node);
    set_bk(next, node);
}

static void count_in(struct mt_medium_arena *arena, struct mt_chunk *c, size_t size, uint64_t word)
{
    arena->free_chunks++;
    arena->free_bytes += size;
    size_t interior = mt_medium_interior_bytes(c, size);
    if (word & MT_CHUNK_DECOMMITTED)
        arena->decommitted += interior;
    else
        arena->releasable_free += interior;
}

static void count_out(struct mt_medium_arena *arena, struct mt_chunk *c, size_t size, uint64_t word)
{
    arena->free_chunks--;
    arena->free_bytes -= size;
    size_t interior = mt_medium_interior_bytes(c, size);
    if (word & MT_CHUNK_DECOMMITTED)
        arena->decommitted -= interior;
    else
        arena->releasable_free -= interior;
}

void mt_medium_unsorted_push(struct mt_medium_arena *arena, struct mt_chunk *c, size_t size, uint64_t word)
{
    struct mt_medium_link *head = &arena->unsorted;
    insert_between(head, mt_chunk_link(c), link_fd(head));
    count_in(arena, c, size, word);
}

void mt_medium_bin_insert(struct mt_medium_arena *arena, struct mt_chunk *c, size_t size, uint64_t word)
{
    unsigned idx = mt_medium_bin_index(size);
    struct mt_medium_link *head = &arena->bins[idx];
    struct mt_medium_link *node = mt_chunk_link(c);
    struct mt_medium_link *first = link_fd(head);
    arena->bitmap[idx >> 6] |= 1ull << (idx & 63);
    count_in(arena, c, size, word);
    if (first == head || idx < MT_MEDIUM_SMALL_BINS) {
        insert_between(head, node, first);
        return;
    }
    /* Sorted ascending. Equal sizes go first (LIFO among them); the ends are checked
     * before walking because frees of one size and the biggest chunk are the usual cases. */
    struct mt_medium_link *last = link_bk(head);
    if (size <= node_size(first)) {
        insert_between(head, node, first);
        return;
    }
    if (size > node_size(last)) {
        insert_between(last, node, head);
        return;
    }
    struct mt_medium_link *p = link_fd(first);
    for (size_t steps = 0; p != head && steps < SORTED_WALK_MAX; steps++) {
        if (!mt_medium_link_plausible(arena, p))
            break;
        if (node_size(p) >= size) {
            insert_between(link_bk(p), node, p);
            return;
        }
        p = link_fd(p);
    }
    insert_between(head, node, first); /* corrupted or absurdly long: mt_medium_check tells */
}

bool mt_medium_bin_unlink(struct mt_medium_arena *arena, struct mt_chunk *c, uint64_t word,
                          struct mt_medium_fault *fault)
{
    struct mt_medium_link *node = mt_chunk_link(c);
    struct mt_medium_link *fd = link_fd(node);
    struct mt_medium_link *bk = link_bk(node);
    if (MT_UNLIKELY(!mt_medium_link_plausible(arena, fd) || !mt_medium_link_plausible(arena, bk) ||
                    link_bk(fd) != node || link_fd(bk) != node)) {
        mt_medium_fault_set(fault, MT_ERR_CORRUPT_FREELIST, node, 0,
                            "the links of a free chunk do not point back to it (overflow or write after free?)");
        return false;
    }
    set_bk(fd, bk);
    set_fd(bk, fd);
    if (fd == bk && is_head(arena, fd) && fd != &arena->unsorted) {
        unsigned idx = (unsigned)(fd - arena->bins);
        arena->bitmap[idx >> 6] &= ~(1ull << (idx & 63));
    }
    count_out(arena, c, mt_chunk_size_of(word), word);
    return true;
}

/* Verify a chunk found in a bin before using it: a header overwritten after the block was
 * freed shows here. */
static bool binned_chunk_ok(struct mt_chunk *c, uint64_t *word, struct mt_medium_fault *fault)
{
    if (MT_UNLIKELY(!mt_chunk_read(c, word) || (*word & MT_CHUNK_INUSE) ||
                    mt_chunk_size_of(*word) < MT_CHUNK_MIN)) {
        mt_medium_fault_set(fault, MT_ERR_CORRUPT_HEADER, mt_chunk_user(c), 0,
                            "the header of a free chunk was overwritten (write after free?)");
        return false;
    }
    return true;
}

/* Lowest non-empty bin at or above idx, or MT_MEDIUM_BINS. */
static unsigned next_nonempty(const struct mt_medium_arena *arena, unsigned idx)
{
    unsigned w = idx >> 6;
    if (w >= MT_MEDIUM_BITMAP_WORDS)
        return MT_MEDIUM_BINS;
    uint64_t bits = arena->bitmap[w] & (~0ull << (idx & 63));
    while (!bits) {
        if (++w >= MT_MEDIUM_BITMAP_WORDS)
            return MT_MEDIUM_BINS;
        bits = arena->bitmap[w];
    }
    return w * 64 + (unsigned)__builtin_ctzll(bits);
}

static struct mt_chunk *take(struct mt_medium_arena *arena, struct mt_medium_link *node, uint64_t *word_out,
                             struct mt_medium_fault *fault)
{
    struct mt_chunk *c = mt_chunk_of_link(node);
    if (!binned_chunk_ok(c, word_out, fault) || !mt_medium_bin_unlink(arena, c, *word_out, fault))
        return NULL;
    return c;
}

struct mt_chunk *mt_medium_bins_take(struct mt_medium_arena *arena, size_t nb, uint64_t *word_out,
                                     struct mt_medium_fault *fault)
{
    if (nb < MT_MEDIUM_SMALL_BIN_LIMIT) {
        unsigned idx = (unsigned)(nb >> 4);
        if (arena->bitmap[idx >> 6] & (1ull << (idx & 63)))
            return take(arena, link_fd(&arena->bins[idx]), word_out, fault);
    }

    /* The unsorted bin, oldest first: an exact fit wins, the rest is filed. */
    struct mt_medium_link *uhead = &arena->unsorted;
    for (unsigned n = 0; n < UNSORTED_SORT_MAX; n++) {
        struct mt_medium_link *node = link_bk(uhead);
        if (node == uhead)
            break;
        if (MT_UNLIKELY(!mt_medium_link_plausible(arena, node))) {
            mt_medium_fault_set(fault, MT_ERR_CORRUPT_FREELIST, node, 0, "the unsorted bin's link is corrupted");
            return NULL;
        }
        uint64_t word;
        struct mt_chunk *c = take(arena, node, &word, fault);
        if (!c)
            return NULL;
        size_t size = mt_chunk_size_of(word);
        if (size == nb) {
            *word_out = word;
            return c;
        }
        mt_medium_bin_insert(arena, c, size, word);
    }

    /* Best fit: the request's own bin (large bins hold a range), then the next bin with
     * anything in it, whose first chunk is its smallest. */
    unsigned idx = mt_medium_bin_index(nb);
    if (idx >= MT_MEDIUM_SMALL_BINS && (arena->bitmap[idx >> 6] & (1ull << (idx & 63)))) {
        struct mt_medium_link *head = &arena->bins[idx];
        if (node_size(link_bk(head)) >= nb) {
            struct mt_medium_link *p = link_fd(head);
            for (size_t steps = 0; p != head && steps < SORTED_WALK_MAX; steps++) {
                if (MT_UNLIKELY(!mt_medium_link_plausible(arena, p))) {
                    mt_medium_fault_set(fault, MT_ERR_CORRUPT_FREELIST, p, 0, "a large bin's link is corrupted");
                    return NULL;
                }
                if (node_size(p) >= nb)
                    return take(arena, p, word_out, fault);
                p = link_fd(p);
            }
        }
    }
    unsigned next = next_nonempty(arena, idx + 1);
    if (next >= MT_MEDIUM_BINS)
        return NULL;
    return take(arena, link_fd(&arena->bins[next]), word_out, fault);
}

size_t mt_medium_bins_largest(const struct mt_medium_arena *arena)
{
    size_t largest = 0;
    for (unsigned w = MT_MEDIUM_BITMAP_WORDS; w-- > 0;) {
        if (arena->bitmap[w]) {
            unsigned idx = w * 64 + mt_log2_floor(arena->bitmap[w]);
            largest = node_size(link_bk(&arena->bins[idx]));
            break;
        }
    }
    const struct mt_medium_link *uhead = &arena->unsorted;
    const struct mt_medium_link *p = link_fd(uhead);
    for (unsigned n = 0; p != uhead && n < UNSORTED_SORT_MAX && mt_medium_link_plausible(arena, p); n++) {
        size_t size = node_size(p);
        largest = size > largest ? size : largest;
        p = link_fd(p);
    }
    return largest;
}
