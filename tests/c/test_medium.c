/* Medium blocks: boundary-tag arenas (allocator/medium*.c), through the public malloc family.
 *
 * main() disables separate mappings (M_MMAP_MAX 0), so every request above the small
 * classes is served by a medium arena up to the region limit; is_medium() checks it. The
 * tests link the allocator statically, so a few look at its internals (the thread's arena,
 * its top, its lock and deferred stack) to set up exact situations. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>

#include "../../allocator/medium_internal.h"
#include "../../allocator/segmap.h"
#include "../../allocator/small.h"
#include "../../allocator/stats.h"
#include "../../allocator/walk.h"
#include "../../common/options.h"
#include "check.h"
#include "mtrace.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

static bool is_medium(const void *p)
{
    return mt_segmap_kind(mt_segmap_entry((uintptr_t)p)) == MT_SEG_MEDIUM;
}

/* A pattern that depends on the block's identity and the offset, so a block that got
 * another's contents or a shifted copy is caught. Written a word at a time (blocks go up to
 * megabytes), the tail byte by byte (little-endian bytes of the same words, so any prefix
 * verifies). */
static uint64_t pattern_word(uint32_t seed, size_t i)
{
    return ((uint64_t)seed * 0x9e3779b97f4a7c15ull) ^ (i * 0xff51afd7ed558ccdull);
}

static void fill(void *p, size_t n, uint32_t seed)
{
    uint64_t *w = p;
    size_t words = n / 8;
    for (size_t i = 0; i < words; i++)
        w[i] = pattern_word(seed, i);
    unsigned char *b = p;
    for (size_t i = words * 8; i < n; i++)
        b[i] = (unsigned char)(pattern_word(seed, i / 8) >> (8 * (i % 8)));
}

static bool verify(const void *p, size_t n, uint32_t seed)
{
    const uint64_t *w = p;
    size_t words = n / 8;
    for (size_t i = 0; i < words; i++)
        if (w[i] != pattern_word(seed, i))
            return false;
    const unsigned char *b = p;
    for (size_t i = words * 8; i < n; i++)
        if (b[i] != (unsigned char)(pattern_word(seed, i / 8) >> (8 * (i % 8))))
            return false;
    return true;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* First test, so the thread's arena is fresh: a block that ends in the region's last page
 * leaves a minimal top next to the fence; freeing it trims the top, which must keep the
 * fence's page (a trim once zeroed it, and the next free near the end reported the fence
 * as a corrupted header). */
TEST(trimming_the_top_keeps_the_fence)
{
    struct mt_medium_arena *a = mt_heap_arena();
    REQUIRE(a != NULL);
    char *first = malloc(1 * MiB); /* a fresh top is bigger than the largest request */
    REQUIRE(first != NULL);
    size_t room = (size_t)((uintptr_t)a->current->fence - (uintptr_t)a->top);
    REQUIRE(room > 2 * MiB);
    size_t request = room - MT_CHUNK_MIN - MT_CHUNK_HEADER;
    char *top_block = (char *)a->top + MT_CHUNK_HEADER;
    char *p = malloc(request);
    REQUIRE(p != NULL);
    CHECK(p == top_block); /* carved from the top, leaving a minimal top by the fence */
    memset(p + request - 4096, 1, 4096);
    free(p); /* merges with the top, which is trimmed */
    CHECK(mt_heap_check() == 0);
    char *q = malloc(request);
    REQUIRE(q != NULL);
    memset(q + request - 4096, 2, 4096);
    free(q);
    free(first);
    CHECK(mt_heap_check() == 0);
}

/* The block just before the top grows into it without moving. Early in the file, while the
 * arena's top is still bigger than anything in its bins. */
TEST(realloc_in_place_into_the_top)
{
    struct mt_medium_arena *a = mt_heap_arena();
    REQUIRE(a != NULL);
    /* Bigger than every binned chunk, so it is carved from the top (this thread is the
     * arena's only user here: its bins hold still). */
    mt_lock(&a->lock);
    size_t largest_binned = mt_medium_bins_largest(a);
    size_t top_size = (size_t)((uintptr_t)a->current->fence - (uintptr_t)a->top);
    mt_unlock(&a->lock);
    size_t size = largest_binned + 64 * KiB;
    REQUIRE(size + 1 * MiB < top_size);
    char *top_start = (char *)mt_chunk_user(a->top);
    char *p = malloc(size);
    REQUIRE(p == top_start);
    fill(p, size, 3);
    char *q = realloc(p, size + 512 * KiB);
    CHECK(q == p);
    CHECK(verify(q, size, 3));
    CHECK(malloc_usable_size(q) >= size + 512 * KiB);
    CHECK(mt_heap_check() == 0);
    free(q);
    CHECK(mt_heap_check() == 0);
}

/* A first region whose top runs out grows in place into its reservation: the working set
 * stays in one region with one top (a second region would strand the first one's top).
 * Early in the file, while the thread's arena still has its first region at its first
 * size. Blocks are not written: only their headers' pages become resident. */
TEST(a_full_first_region_grows_in_place)
{
    struct mt_medium_arena *a = mt_heap_arena();
    REQUIRE(a != NULL);
    struct mt_medium_region *r = a->current;
    REQUIRE(r->size == MT_MEDIUM_REGION_SIZE);
    enum { BLOCKS = 24 };
    static char *blocks[BLOCKS];
    size_t block = 4 * MiB; /* 96 MiB in all: more than the first size */
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(block);
        REQUIRE(blocks[i] != NULL);
        blocks[i][0] = (char)i;
        blocks[i][block - 1] = (char)i;
    }
    CHECK(a->current == r);
    CHECK(r->size == MT_MEDIUM_GROWN_REGION_SIZE);
    CHECK((uint8_t *)r->fence == (uint8_t *)r + MT_MEDIUM_GROWN_REGION_SIZE - MT_CHUNK_FENCE);
    for (int i = 0; i < BLOCKS; i++) {
        CHECK(is_medium(blocks[i]));
        CHECK((uintptr_t)blocks[i] - (uintptr_t)r < MT_MEDIUM_GROWN_REGION_SIZE);
    }
    CHECK(mt_heap_check() == 0);
    for (int i = 0; i < BLOCKS; i++) {
        CHECK(blocks[i][0] == (char)i && blocks[i][block - 1] == (char)i);
        free(blocks[i]);
    }
    CHECK(mt_heap_check() == 0);
}

/* Huge pages (medium_internal.h): past MT_MEDIUM_HUGE_ZONE from its region's start, a
 * free chunk gives back whole huge pages only; below it, whole 4 KiB pages. Checked on
 * chunk positions in a real region (the interior is computed from addresses alone), and
 * a region grown past the zone is advised up to the fence's huge page. Nothing to check
 * where the kernel gives no huge pages. */
TEST(free_memory_in_the_huge_zone_goes_back_in_whole_huge_pages)
{
    size_t huge = mt_medium_huge_page;
    if (!huge)
        return;
    char *big = malloc(MT_MEDIUM_HUGE_ZONE + 4 * MiB); /* the region reaches the zone */
    REQUIRE(big != NULL && is_medium(big));
    struct mt_medium_region *r = (struct mt_medium_region *)mt_segmap_region_start(
        (uintptr_t)big, mt_segmap_entry((uintptr_t)big));
    uintptr_t base = (uintptr_t)r, zone = base + MT_MEDIUM_HUGE_ZONE, page = mt_os_page_size();
    CHECK(r->huge_end != NULL);
    CHECK((uintptr_t)r->huge_end % huge == 0);
    CHECK((uintptr_t)r->huge_end > zone && (uintptr_t)r->huge_end <= base + r->size - page);
    uintptr_t lo, hi;
    /* Below the zone: the whole pages between the links and the footer. */
    mt_medium_interior(mt_chunk_at((void *)(base + MiB + 48)), 3 * MiB, &lo, &hi);
    CHECK(lo == base + MiB + page && hi == base + 4 * MiB);
    /* Inside: rounded inwards to huge pages. */
    mt_medium_interior(mt_chunk_at((void *)(zone + 48)), 2 * huge + MiB, &lo, &hi);
    CHECK(lo == zone + huge && hi == zone + 2 * huge);
    /* Smaller than a huge page inside the zone: nothing. */
    CHECK(mt_medium_interior_bytes(mt_chunk_at((void *)(zone + 48)), huge) == 0);
    /* Across the zone's start: 4 KiB pages below it, huge pages above. */
    mt_medium_interior(mt_chunk_at((void *)(zone - MiB)), MiB + huge + MiB, &lo, &hi);
    CHECK(lo == zone - MiB + page && hi == zone + huge);
    free(big);
    CHECK(mt_heap_check() == 0);
}

/* Resident free memory in the bins: the purge estimate (medium.c). */
static size_t bins_resident(struct mt_medium_arena *a)
{
    mt_lock(&a->lock);
    size_t bytes = a->releasable_free + a->hidden_resident;
    mt_unlock(&a->lock);
    return bytes;
}

/* Purging (medium.c): a working set that shrinks keeps the pages it shrank by, beyond the
 * 8 MiB budget, for when it grows back; once it is let go (in use below a quarter of its
 * peak) the arena falls back within the budget without the program calling anything.
 * Inside a region's huge-page zone only whole huge pages count (medium_internal.h), so
 * the blocks are big enough there for each freed one to hold some. */
TEST(a_shrinking_working_set_keeps_its_pages_until_let_go)
{
    enum { BLOCKS = 40, EVERY = 4 };
    static char *blocks[BLOCKS];
    struct mt_medium_arena *a = mt_heap_arena();
    REQUIRE(a != NULL);
    malloc_trim(0); /* start from nothing resident in the bins */
    REQUIRE(bins_resident(a) == 0);
    REQUIRE(a->in_use < 4 * MiB);
    size_t block = mt_medium_huge_page ? 2 * mt_medium_huge_page : 1 * MiB;
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(block);
        REQUIRE(blocks[i] != NULL);
        memset(blocks[i], i, block);
    }
    char *guard = malloc(64 * KiB); /* nothing below it merges into the top */
    REQUIRE(guard != NULL);
    size_t kept = 0; /* what decommitting the freed blocks would give back */
    for (int i = 0; i < BLOCKS; i += EVERY) {
        struct mt_chunk *c = mt_chunk_of_user(blocks[i]);
        kept += mt_medium_interior_bytes(c, mt_chunk_size_of(c->word));
        free(blocks[i]); /* 10 separate free chunks */
        blocks[i] = NULL;
    }
    /* Over the 8 MiB budget but within budget + drop: nothing purged. */
    CHECK_MSG(kept >= 9 * MiB, "%zu KiB freed", kept >> 10);
    CHECK_MSG(bins_resident(a) >= kept, "%zu KiB resident in the bins", bins_resident(a) >> 10);
    for (int i = 0; i < BLOCKS; i++)
        free(blocks[i]);
    CHECK_MSG(bins_resident(a) <= 8 * MiB, "%zu KiB resident in the bins", bins_resident(a) >> 10);
    CHECK(mt_heap_check() == 0);
    free(guard);
    CHECK(mt_heap_check() == 0);
}

TEST(sizes_8k_to_32m_keep_their_contents)
{
    void *blocks[64];
    size_t sizes[64];
    int n = 0;
    for (size_t size = 8 * KiB + 1; size <= 32 * MiB && n < 64; size = size * 3 / 2 + 7) {
        void *p = malloc(size);
        REQUIRE(p != NULL);
        CHECK(is_medium(p));
        CHECK(((uintptr_t)p & 15) == 0);
        CHECK(malloc_usable_size(p) >= size);
        fill(p, size, (uint32_t)n);
        blocks[n] = p;
        sizes[n++] = size;
    }
    CHECK(n > 15);
    CHECK(mt_heap_check() == 0);
    for (int i = 0; i < n; i++) {
        CHECK_MSG(verify(blocks[i], sizes[i], (uint32_t)i), "block %d of %zu bytes", i, sizes[i]);
        free(blocks[i]);
    }
    CHECK(mt_heap_check() == 0);
    void *big = malloc(32 * MiB);
    REQUIRE(big != NULL);
    CHECK(is_medium(big));
    memset(big, 0x5a, 32 * MiB);
    free(big);
}

TEST(realloc_shrinks_and_grows_in_place)
{
    char *a = malloc(64 * KiB);
    char *guard = malloc(64 * KiB); /* keeps a away from the top */
    REQUIRE(a && guard);
    fill(a, 64 * KiB, 1);
    char *b = realloc(a, 32 * KiB);
    CHECK(b == a); /* shrink splits the tail off */
    CHECK(verify(b, 32 * KiB, 1));
    CHECK(malloc_usable_size(b) < 40 * KiB);
    char *c = realloc(b, 60 * KiB);
    CHECK(c == b); /* the next chunk is the free tail */
    CHECK(verify(c, 32 * KiB, 1));
    fill(c, 60 * KiB, 2);
    /* Growing into the top: the last block before it grows without moving. */
    free(guard);
    char *d = realloc(c, 3 * MiB);
    CHECK(verify(d, 60 * KiB, 2));
    char *tail = malloc(100 * KiB);
    char *e = realloc(tail, 1 * MiB);
    CHECK(e == tail || !is_medium(e)); /* tail was carved from the top or a free chunk */
    CHECK(mt_heap_check() == 0);
    free(d);
    free(e);
    CHECK(mt_heap_check() == 0);
}

/* A block appended to a little at a time (`s = realloc(s, len + n)`) while the program
 * allocates right behind it after every append: realloc's headroom (an eighth more than
 * the block had) lets it move only a logarithmic number of times, each byte being copied
 * a few times in all, instead of at every append. */
TEST(realloc_by_small_steps_moves_a_logarithmic_number_of_times)
{
    enum { STEP = 64, FIRST = 10 * 1024, LAST = 640 * 1024, BLOCKERS = (LAST - FIRST) / STEP + 1 };
    /* 12.5% growth per move from 10 KiB to 640 KiB: log(64) / log(1.125) = 35.3 moves. */
    const unsigned max_moves = 40;
    static char *blocker[BLOCKERS];
    size_t size = FIRST;
    char *p = malloc(size);
    REQUIRE(p != NULL);
    fill(p, size, 9);
    unsigned moves = 0, n = 0;
    while (size + STEP <= LAST) {
        char *q = realloc(p, size + STEP);
        REQUIRE(q != NULL);
        if (q != p)
            moves++;
        p = q;
        size += STEP;
        blocker[n++] = malloc(MT_SMALL_MAX + 16); /* medium, likely right after p */
    }
    CHECK(verify(p, FIRST, 9));
    CHECK_MSG(moves <= max_moves, "%u moves growing %d bytes at a time from %d to %zu", moves, STEP, FIRST, size);
    CHECK(malloc_usable_size(p) <= size + size / 8 + MT_CHUNK_MIN);
    free(p);
    for (unsigned i = 0; i < n; i++)
        free(blocker[i]);
    CHECK(mt_heap_check() == 0);
}

TEST(neighbours_coalesce)
{
    const size_t size = 40000 - 16 * 3; /* an unusual size so no other free chunk fits exactly */
    char *x = malloc(size);
    char *y = malloc(size);
    char *z = malloc(size);
    char *guard = malloc(size);
    REQUIRE(x && y && z && guard);
    size_t chunk = malloc_usable_size(x) + 16;
    REQUIRE(y == x + chunk && z == y + chunk); /* carved one after the other */
    free(x);
    free(z);
    free(y); /* merges with both neighbours */
    CHECK(mt_heap_check() == 0);
    char *all = malloc(3 * chunk - 16);
    CHECK(all == x);
    CHECK(malloc_usable_size(all) >= 3 * chunk - 16);
    memset(all, 0x11, 3 * chunk - 16);
    CHECK(mt_heap_check() == 0);
    free(all);
    free(guard);
    CHECK(mt_heap_check() == 0);
}

TEST(aligned_allocations)
{
    void *keep[64];
    int n = 0;
    for (size_t align = 32; align <= 1 * MiB; align *= 2) {
        const size_t sizes[] = {1, 100, 9000, 70000, 300000};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            void *p = NULL;
            int rc = posix_memalign(&p, align, sizes[i]); /* REQUIRE evaluates twice */
            REQUIRE(rc == 0);
            CHECK_MSG(((uintptr_t)p & (align - 1)) == 0, "align %zu size %zu", align, sizes[i]);
            CHECK(malloc_usable_size(p) >= sizes[i]);
            fill(p, sizes[i], (uint32_t)(align + i));
            if (n < 64 && (i & 1))
                keep[n++] = p;
            else
                free(p);
        }
        void *q = aligned_alloc(align, 3 * align);
        REQUIRE(q != NULL);
        CHECK(((uintptr_t)q & (align - 1)) == 0);
        free(q);
    }
    CHECK(mt_heap_check() == 0);
    for (int i = 0; i < n; i++)
        free(keep[i]);
    CHECK(mt_heap_check() == 0);
}

/* ---- threads ------------------------------------------------------------------------------ */

#define XTHREADS 4
#define XBLOCKS 600

struct xthread {
    int id;
    void *mine[XBLOCKS];
    size_t sizes[XBLOCKS];
    struct xthread *victim; /* whose blocks this thread frees */
    pthread_barrier_t *barrier;
    int bad;
};

static void *cross_thread_main(void *arg)
{
    struct xthread *t = arg;
    uint64_t s = 0x1234567ull * (uint64_t)(t->id + 1);
    for (int i = 0; i < XBLOCKS; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        t->sizes[i] = 8 * KiB + (size_t)(s >> 33) % (120 * KiB);
        t->mine[i] = malloc(t->sizes[i]);
        if (!t->mine[i] || !is_medium(t->mine[i])) {
            t->bad++;
            continue;
        }
        fill(t->mine[i], t->sizes[i], (uint32_t)(t->id * XBLOCKS + i));
    }
    pthread_barrier_wait(t->barrier);
    /* Free another thread's blocks while allocating and freeing our own: the arena locks
     * are contended, so some frees take the deferred path. */
    struct xthread *v = t->victim;
    for (int i = 0; i < XBLOCKS; i++) {
        if (v->mine[i]) {
            if (!verify(v->mine[i], v->sizes[i], (uint32_t)(v->id * XBLOCKS + i)))
                t->bad++;
            free(v->mine[i]);
        }
        void *own = malloc(16 * KiB + (size_t)i * 16);
        if (!own)
            t->bad++;
        free(own);
    }
    return NULL;
}

TEST(cross_thread_frees_from_four_threads)
{
    struct mt_zone_stats before, after; /* medium only: thread start-up allocates small blocks */
    mt_medium_stats(&before);
    static struct xthread threads[XTHREADS];
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, XTHREADS);
    pthread_t tids[XTHREADS];
    for (int i = 0; i < XTHREADS; i++) {
        memset(&threads[i], 0, sizeof threads[i]);
        threads[i].id = i;
        threads[i].victim = &threads[(i + 1) % XTHREADS];
        threads[i].barrier = &barrier;
    }
    for (int i = 0; i < XTHREADS; i++) {
        int rc = pthread_create(&tids[i], NULL, cross_thread_main, &threads[i]);
        REQUIRE(rc == 0);
    }
    for (int i = 0; i < XTHREADS; i++)
        pthread_join(tids[i], NULL);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < XTHREADS; i++)
        CHECK_EQ_U(threads[i].bad, 0);
    CHECK(mt_heap_check() == 0); /* drains deferred frees first */
    mt_medium_stats(&after);
    CHECK_EQ_U(after.live_blocks, before.live_blocks);
}

static void *free_twice_or_once(void *arg)
{
    void **blocks = arg;
    free(blocks[0]);
    if (blocks[1])
        free(blocks[1]);
    return NULL;
}

static struct mt_medium_arena *arena_of(const void *p)
{
    uintptr_t region = mt_segmap_region_start((uintptr_t)p, mt_segmap_entry((uintptr_t)p));
    return ((struct mt_medium_region *)region)->arena;
}

/* The arena's lock is held (as by a thread in the middle of a malloc): a free from another
 * thread must not wait for it, and the block is freed when the stack is drained. */
TEST(remote_free_into_a_busy_arena_is_deferred)
{
    char *p = malloc(50000);
    REQUIRE(p != NULL && is_medium(p));
    struct mt_medium_arena *a = arena_of(p);
    struct mt_zone_stats before, after;
    mt_medium_stats(&before);
    mt_lock(&a->lock);
    void *blocks[2] = {p, NULL};
    pthread_t tid;
    int rc = pthread_create(&tid, NULL, free_twice_or_once, blocks);
    REQUIRE(rc == 0);
    pthread_join(tid, NULL); /* returns: the free did not wait for the lock */
    CHECK(atomic_load(&a->deferred) == (uintptr_t)p);
    mt_unlock(&a->lock);
    mt_medium_collect();
    CHECK(atomic_load(&a->deferred) == 0);
    mt_medium_stats(&after);
    CHECK_EQ_U(after.live_blocks, before.live_blocks - 1);
    CHECK_EQ_U(after.total_frees, before.total_frees + 1);
    CHECK(mt_heap_check() == 0);
}

static void deferred_double_free(void *arg)
{
    (void)arg;
    char *p = malloc(50000);
    char *guard = malloc(50000);
    struct mt_medium_arena *a = arena_of(p);
    mt_lock(&a->lock);
    void *blocks[2] = {p, p};
    pthread_t tid;
    pthread_create(&tid, NULL, free_twice_or_once, blocks);
    pthread_join(tid, NULL);
    mt_unlock(&a->lock);
    mt_medium_collect(); /* drains: the second copy is a double free */
    free(guard);
}

/* ---- random sequence against a model --------------------------------------------------------- */

#define MODEL_SLOTS 1500
#define MODEL_OPS 40000
#define MODEL_PHASE 8000

struct model_slot {
    char *p;
    size_t size;
    uint32_t seed;
};

static size_t random_size(void)
{
    uint64_t r = rng();
    switch (r % 8) {
    case 0:
        return 8 * KiB + 1 + (r >> 8) % 1024;           /* just above the small classes */
    case 1:
        return 256 * KiB + (r >> 8) % (2 * MiB);        /* big */
    default:
        return 8 * KiB + 1 + (r >> 8) % (120 * KiB);    /* typical medium */
    }
}

TEST(random_sequence_matches_model)
{
    static struct model_slot slots[MODEL_SLOTS];
    memset(slots, 0, sizeof slots);
    rng_state = 0xdeadbeefcafef00dull;
    uint32_t next_seed = 1;
    for (int op = 1; op <= MODEL_OPS; op++) {
        struct model_slot *s = &slots[rng() % MODEL_SLOTS];
        uint64_t r = rng();
        if (!s->p) {
            s->size = random_size();
            s->seed = next_seed++;
            if (r % 5 == 0) {
                size_t align = (size_t)64 << (r >> 8) % 12;
                int rc = posix_memalign((void **)&s->p, align, s->size);
                REQUIRE(rc == 0);
                CHECK(((uintptr_t)s->p & (align - 1)) == 0);
            } else {
                s->p = malloc(s->size);
            }
            REQUIRE(s->p != NULL);
            CHECK(malloc_usable_size(s->p) >= s->size);
            fill(s->p, s->size, s->seed);
        } else if (r % 3 == 0) {
            size_t new_size = random_size();
            char *q = realloc(s->p, new_size);
            REQUIRE(q != NULL);
            CHECK_MSG(verify(q, s->size < new_size ? s->size : new_size, s->seed), "realloc kept the contents");
            s->p = q;
            s->size = new_size;
            s->seed = next_seed++;
            fill(s->p, s->size, s->seed);
        } else {
            CHECK_MSG(verify(s->p, s->size, s->seed), "slot freed at op %d", op);
            free(s->p);
            s->p = NULL;
        }
        if (op % MODEL_PHASE == 0) {
            CHECK_MSG(mt_heap_check() == 0, "heap check after op %d", op);
            for (int i = 0; i < MODEL_SLOTS; i++)
                if (slots[i].p)
                    CHECK(verify(slots[i].p, slots[i].size, slots[i].seed));
        }
    }
    for (int i = 0; i < MODEL_SLOTS; i++)
        free(slots[i].p);
    CHECK(mt_heap_check() == 0);
}

/* ---- memory goes back to the OS ----------------------------------------------------------- */

#define WORKING_SET (256 * MiB)
#define WS_MAX_BLOCKS 8192

struct working_set {
    char *blocks[WS_MAX_BLOCKS];
    int count;
};

static void working_set_fill(struct working_set *ws, size_t total)
{
    size_t got = 0;
    ws->count = 0;
    uint64_t s = 42;
    while (got < total && ws->count < WS_MAX_BLOCKS) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        size_t size = 16 * KiB + (size_t)(s >> 33) % (110 * KiB);
        char *p = malloc(size);
        if (!p)
            break;
        memset(p, 0x77, size);
        ws->blocks[ws->count++] = p;
        got += size;
    }
}

static void *working_set_thread(void *arg)
{
    working_set_fill(arg, WORKING_SET / 2);
    return NULL; /* the thread exits with its blocks live */
}

TEST(rss_falls_after_freeing_a_big_working_set)
{
    static struct working_set mine, theirs;
    size_t start = rss_bytes();
    working_set_fill(&mine, WORKING_SET / 2);
    pthread_t tid;
    int rc = pthread_create(&tid, NULL, working_set_thread, &theirs);
    REQUIRE(rc == 0);
    pthread_join(tid, NULL);
    size_t peak = rss_bytes();
    CHECK_MSG(peak > start + WORKING_SET * 3 / 4, "rss %zu MiB -> %zu MiB", start >> 20, peak >> 20);
    /* Free in an interleaved order, so chunks coalesce from both sides. */
    for (int i = 0; i < mine.count; i += 2)
        free(mine.blocks[i]);
    for (int i = 1; i < mine.count; i += 2)
        free(mine.blocks[i]);
    for (int i = theirs.count - 1; i >= 0; i--)
        free(theirs.blocks[i]); /* allocated by a thread that has exited */
    size_t end = rss_bytes();
    CHECK_MSG(end < start + WORKING_SET / 8, "rss %zu MiB at start, %zu MiB at peak, %zu MiB after free",
              start >> 20, peak >> 20, end >> 20);
    CHECK(mt_heap_check() == 0);
}

TEST(malloc_trim_releases_free_chunks)
{
    char *a = malloc(600 * KiB);
    char *guard = malloc(20 * KiB);
    REQUIRE(a && guard);
    memset(a, 1, 600 * KiB);
    free(a); /* below the interior-decommit size, stays resident */
    struct mallinfo2 before = mallinfo2();
    struct mt_zone_stats medium_before, medium_after;
    mt_medium_stats(&medium_before);
    CHECK(medium_before.free_bytes >= 600 * KiB);
    CHECK(before.keepcost >= 580 * KiB); /* its interior pages could go back */
    CHECK(malloc_trim(0) == 1);
    struct mallinfo2 after = mallinfo2();
    CHECK_MSG(after.keepcost + 580 * KiB <= before.keepcost, "keepcost %zu -> %zu", before.keepcost,
              after.keepcost);
    mt_medium_stats(&medium_after);
    CHECK(medium_after.free_bytes + 580 * KiB <= medium_before.free_bytes); /* no longer resident */
    CHECK(medium_after.committed + 580 * KiB <= medium_before.committed);
    CHECK(mt_heap_check() == 0);
    char *again = malloc(600 * KiB); /* decommitted pages come back as zeros */
    REQUIRE(again != NULL);
    memset(again, 3, 600 * KiB);
    free(again);
    free(guard);
    CHECK(mt_heap_check() == 0);
}

/* ---- statistics, walk ------------------------------------------------------------------------ */

static int walk_found;
static const void *walk_target;
static void walk_block(struct mt_walker *w, const void *ptr, size_t size)
{
    (void)w;
    if (ptr == walk_target && size >= 50000)
        walk_found++;
}

TEST(stats_and_walk_see_medium_blocks)
{
    struct mt_heap_stats before, during, after;
    mt_heap_stats(&before);
    char *p = malloc(50000);
    REQUIRE(p != NULL);
    mt_heap_stats(&during);
    CHECK_EQ_U(during.live_blocks, before.live_blocks + 1);
    CHECK(during.in_use >= before.in_use + 50000);
    CHECK_EQ_U(during.total_allocs, before.total_allocs + 1);
    struct mt_walker walker = {NULL, walk_block};
    walk_target = p;
    walk_found = 0;
    mt_alloc_walk(&walker);
    CHECK_EQ_U(walk_found, 1);
    free(p);
    mt_heap_stats(&after);
    CHECK_EQ_U(after.live_blocks, before.live_blocks);
    CHECK_EQ_U(after.total_frees, before.total_frees + 1);
}

TEST(heap_check_finds_a_corrupted_free_list)
{
    char *before = malloc(30000 - 48); /* unusual size: carved one after the other */
    char *p = malloc(30000 - 48);
    char *guard = malloc(30000 - 48);
    REQUIRE(before && p && guard);
    size_t chunk = malloc_usable_size(p) + 16;
    REQUIRE(p == before + chunk && guard == p + chunk); /* p's neighbours stay in use */
    free(p); /* p is a free chunk of its own, its links at p */
    uint64_t saved[2];
    memcpy(saved, p, sizeof saved); /* the free chunk's encoded links */
    memset(p, 0x42, sizeof saved);
    int saved_err = dup(2);
    int devnull = open("/dev/null", 1);
    dup2(devnull, 2);
    int rc = mt_heap_check();
    dup2(saved_err, 2);
    close(saved_err);
    close(devnull);
    CHECK(rc == -1);
    memcpy(p, saved, sizeof saved);
    CHECK(mt_heap_check() == 0);
    free(guard);
    free(before);
}

static void *fork_worker(void *arg)
{
    volatile int *stop = arg;
    while (!*stop) {
        void *p = malloc(20000);
        free(p);
    }
    return NULL;
}

TEST(fork_while_another_thread_allocates)
{
    volatile int stop = 0;
    pthread_t tid;
    int rc = pthread_create(&tid, NULL, fork_worker, (void *)&stop);
    REQUIRE(rc == 0);
    for (int i = 0; i < 20; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            void *p = malloc(70000);
            memset(p, 1, 70000);
            free(p);
            _exit(mt_heap_check() == 0 ? 0 : 3);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    stop = 1;
    pthread_join(tid, NULL);
}

/* ---- death tests: each always-on check ----------------------------------------------------- */

static void double_free(void *arg)
{
    (void)arg;
    char *p = malloc(20000);
    char *guard = malloc(20000);
    free(p);
    free(p);
    free(guard);
}

static void interior_free(void *arg)
{
    (void)arg;
    char *p = malloc(20000);
    fill(p, 20000, 9);
    free(p + 256);
}

static void realloc_freed(void *arg)
{
    (void)arg;
    char *p = malloc(20000);
    char *guard = malloc(20000);
    free(p);
    p = realloc(p, 30000);
    free(guard);
}

static void corrupted_header(void *arg)
{
    (void)arg;
    char *p = malloc(20000);
    /* Through a volatile pointer: the compiler rightly refuses a visible underflow. */
    char *volatile header = p - 16;
    memset(header, 0x41, 16);
    free(p);
}

static void overflow_into_next(void *arg)
{
    (void)arg;
    char *p = malloc(20000);
    char *q = malloc(20000);
    char *volatile start = p;
    memset(start, 0, malloc_usable_size(p) + 8);
    free(p);
    free(q);
}

static void usable_size_of_freed(void *arg)
{
    (void)arg;
    char *p = malloc(20000);
    char *guard = malloc(20000);
    free(p);
    printf("%zu\n", malloc_usable_size(p));
    free(guard);
}

/* MTRACE_ON_ERROR=continue: each bad call is reported once and skipped, and the heap stays
 * consistent afterwards. In a child, since the option is process-wide. */
static int continue_mode_child(void)
{
    setenv("MTRACE_ON_ERROR", "continue", 1);
    mt_options_reload(true);
    size_t errors = mt_heap_error_count();
    char *p = malloc(20000);
    char *guard = malloc(20000);
    char *q = malloc(30000);
    fill(q, 30000, 5);
    free(p);
    free(p);                                  /* double free */
    char *volatile inside = q + 4096;
    free(inside);                             /* interior */
    if (realloc(p, 40000) != NULL)            /* realloc of freed */
        return 10;
    if (malloc_usable_size(p) != 0)           /* use of freed */
        return 11;
    if (mt_heap_error_count() != errors + 4)
        return 12;
    if (!verify(q, 30000, 5) || mt_heap_check() != 0)
        return 13;
    /* Pointers near and inside live blocks, aligned or not: each call is reported once
     * and nothing else changes. */
    enum { FUZZ_BLOCKS = 64, FUZZ_CALLS = 3000 };
    char *blocks[FUZZ_BLOCKS];
    size_t sizes[FUZZ_BLOCKS];
    for (int i = 0; i < FUZZ_BLOCKS; i++) {
        sizes[i] = 8200 + (size_t)(rng() % 100000);
        blocks[i] = malloc(sizes[i]);
        fill(blocks[i], sizes[i], (uint32_t)i);
    }
    size_t calls = 0;
    errors = mt_heap_error_count();
    for (int k = 0; k < FUZZ_CALLS; k++) {
        uint64_t r = rng();
        int i = (int)(r % FUZZ_BLOCKS);
        long offset = (long)((r >> 16) % (sizes[i] + 128)) - 64;
        if (r >> 63)
            offset &= ~15L;
        bool is_start = false;
        for (int t = 0; t < FUZZ_BLOCKS; t++)
            is_start |= blocks[t] == blocks[i] + offset;
        if (is_start)
            continue;
        char *volatile wild = blocks[i] + offset;
        free(wild);
        calls++;
    }
    if (mt_heap_error_count() != errors + calls || mt_heap_check() != 0)
        return 15;
    for (int i = 0; i < FUZZ_BLOCKS; i++) {
        if (!verify(blocks[i], sizes[i], (uint32_t)i))
            return 16;
        free(blocks[i]);
    }
    free(q);
    free(guard);
    return mt_heap_check() == 0 ? 0 : 14;
}

TEST(continue_mode_reports_and_keeps_the_heap_consistent)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        _exit(continue_mode_child());
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
}

TEST(death_double_free)
{
    CHECK(expect_death(double_free, NULL, SIGABRT, "mtrace: error: double free of"));
}

TEST(death_double_free_through_the_deferred_stack)
{
    CHECK(expect_death(deferred_double_free, NULL, SIGABRT, "mtrace: error: double free of"));
}

TEST(death_interior_free)
{
    CHECK(expect_death(interior_free, NULL, SIGABRT, "mtrace: error: invalid free of"));
}

TEST(death_realloc_of_freed)
{
    CHECK(expect_death(realloc_freed, NULL, SIGABRT, "mtrace: error: realloc of freed block of"));
}

TEST(death_corrupted_header)
{
    CHECK(expect_death(corrupted_header, NULL, SIGABRT, "mtrace: error: corrupted block header of"));
}

TEST(death_overflow_into_the_next_header)
{
    CHECK(expect_death(overflow_into_next, NULL, SIGABRT, "mtrace: error: corrupted block header of"));
}

TEST(death_usable_size_of_freed)
{
    CHECK(expect_death(usable_size_of_freed, NULL, SIGABRT, "mtrace: error: use of freed block of"));
}

/* The same tests without huge pages, in a fresh process (the allocator decides at
 * initialisation): a machine without transparent huge pages takes that path, with its own
 * resident budget (medium.c). Exit status of the run. */
static int run_without_huge_pages(void)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("MTRACE_HUGE_PAGES", "off", 1);
        execl("/proc/self/exe", "test_medium", "--without-huge-pages", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return 1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int main(int argc, char **argv)
{
    (void)argv;
    /* Every request above the small classes goes to the medium arenas. */
    mallopt(M_MMAP_MAX, 0);
    int failed = run_tests();
    if (argc == 1 && mt_medium_huge_page) {
        printf("again without huge pages (MTRACE_HUGE_PAGES=off)\n");
        failed |= run_without_huge_pages();
    }
    return failed;
}
