/* Memory goes back to the OS: after a large working set is freed, the resident set size
 * (/proc/self/statm) falls back near where it started, for small, medium and large blocks,
 * and also when the blocks were allocated by threads that have since exited and are freed
 * by another thread (which glibc 2.36 does not manage for its per-thread arenas). */
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>

#include "check.h"
#include "mtrace.h"

#define MiB ((size_t)1 << 20)
/* What a freed working set may leave resident: the per-thread cache of empty small pages
 * (8 x 64 KiB per heap), segment headers, medium arena tops kept below the trim threshold,
 * and the test's own bookkeeping. Small against the hundreds of MiB the tests free. */
#define RSS_MARGIN (24 * MiB)

/* Pointer arrays come straight from mmap, so the test's bookkeeping is not part of what
 * it measures the allocator on. */
static void **pointer_array(size_t count)
{
    void *p = mmap(NULL, count * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void pointer_array_free(void **a, size_t count)
{
    munmap(a, count * sizeof(void *));
}

/* Allocate `total` bytes in blocks of sizes from `next_size`, touching each, into `out`;
 * returns the number of blocks. */
static size_t fill_working_set(void **out, size_t max_blocks, size_t total, size_t (*next_size)(size_t i))
{
    size_t used = 0, n = 0;
    while (used < total && n < max_blocks) {
        size_t size = next_size(n);
        char *p = malloc(size);
        if (!p)
            break;
        memset(p, (int)(n & 0xff) | 1, size);
        out[n++] = p;
        used += size;
    }
    return n;
}

static size_t small_size(size_t i)
{
    (void)i;
    return 64;
}

static size_t mixed_small_size(size_t i)
{
    return 16 + (i * 7919) % 4000;
}

/* The sizes of the common small classes, 16 to 256 bytes. */
static size_t churn_small_size(size_t i)
{
    return 16 + (i * 7919) % 241;
}

static size_t medium_size(size_t i)
{
    return 9000 + (i * 7919) % 110000;
}

static size_t large_size(size_t i)
{
    return MiB + (i * 7919) % (3 * MiB);
}

struct rss_case {
    const char *name;
    size_t total;
    size_t (*next_size)(size_t i);
    size_t max_blocks;
};

enum free_order { FREE_IN_ORDER, FREE_REVERSED, FREE_SHUFFLED };

/* Fisher-Yates with a fixed LCG: the same order on every run. */
static void shuffle(void **blocks, size_t n)
{
    uint64_t state = 1;
    for (size_t i = n; i > 1; i--) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        size_t j = (size_t)((state >> 33) % i);
        void *t = blocks[i - 1];
        blocks[i - 1] = blocks[j];
        blocks[j] = t;
    }
}

static void check_returns(const struct rss_case *c, enum free_order order)
{
    size_t start = rss_bytes();
    void **blocks = pointer_array(c->max_blocks);
    REQUIRE(blocks != NULL);
    size_t n = fill_working_set(blocks, c->max_blocks, c->total, c->next_size);
    size_t peak = rss_bytes();
    CHECK_MSG(peak >= start + c->total * 9 / 10, "%s: rss %zu MiB -> %zu MiB, working set %zu MiB", c->name,
              start >> 20, peak >> 20, c->total >> 20);
    if (order == FREE_SHUFFLED)
        shuffle(blocks, n);
    for (size_t i = 0; i < n; i++)
        free(blocks[order == FREE_REVERSED ? n - 1 - i : i]);
    pointer_array_free(blocks, c->max_blocks);
    size_t end = rss_bytes();
    CHECK_MSG(end <= start + RSS_MARGIN, "%s: rss %zu MiB at start, %zu MiB at peak, %zu MiB after free", c->name,
              start >> 20, peak >> 20, end >> 20);
    CHECK(mt_heap_check() == 0);
}

/* Resident transparent huge pages of the process (/proc/self/smaps_rollup), in KiB; 0 when
 * the kernel does not say. */
static size_t anon_huge_kib(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    if (!f)
        return 0;
    char line[256];
    size_t kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "AnonHugePages: %zu kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void *small_working_set_thread(void *arg)
{
    size_t *huge_grew = arg;
    enum { BLOCKS = (3 * MiB / 2) / 64 };
    void **blocks = pointer_array(BLOCKS);
    if (!blocks) {
        *huge_grew = SIZE_MAX;
        return NULL;
    }
    size_t before = anon_huge_kib();
    size_t n = fill_working_set(blocks, BLOCKS, BLOCKS * 64, small_size);
    *huge_grew = anon_huge_kib() - before;
    for (size_t i = 0; i < n; i++)
        free(blocks[i]);
    pointer_array_free(blocks, BLOCKS);
    return NULL;
}

/* Huge pages are for full 2 MiB ranges of small pages only: a thread with 1.5 MiB of small
 * blocks (a fresh heap, its own segment) keeps 4 KiB pages, so a small program does not
 * pay 2 MiB resident for them. */
TEST(small_working_set_keeps_small_pages)
{
    pthread_t t;
    size_t huge_grew = 0;
    REQUIRE(pthread_create(&t, NULL, small_working_set_thread, &huge_grew) == 0);
    pthread_join(t, NULL);
    CHECK_MSG(huge_grew == 0, "AnonHugePages grew by %zu KiB", huge_grew);
}

TEST(small_blocks_200_MiB_of_64_bytes)
{
    struct rss_case c = {"64-byte blocks", 200 * MiB, small_size, 200 * MiB / 64 + 1};
    check_returns(&c, FREE_IN_ORDER);
}

TEST(small_blocks_of_mixed_sizes_freed_in_reverse)
{
    struct rss_case c = {"mixed small blocks", 150 * MiB, mixed_small_size, 150 * MiB / 16};
    check_returns(&c, FREE_REVERSED);
}

TEST(medium_blocks)
{
    struct rss_case c = {"medium blocks", 150 * MiB, medium_size, 150 * MiB / 9000 + 1};
    check_returns(&c, FREE_IN_ORDER);
}

/* Freed in random order, the last blocks freed of each class are scattered over many pages
 * and sit in the thread's slot cache: those pages must still go back (a cached slot does
 * not keep its page). */
TEST(small_blocks_of_16_to_256_bytes_freed_in_random_order)
{
    struct rss_case c = {"16-256 byte blocks, random order", 200 * MiB, churn_small_size, 200 * MiB / 16};
    check_returns(&c, FREE_SHUFFLED);
}

TEST(large_blocks)
{
    struct rss_case c = {"large blocks", 200 * MiB, large_size, 200};
    check_returns(&c, FREE_IN_ORDER);
}

/* Every other block freed first, then the rest: memory returns even when the heap went
 * through a fragmented state. */
TEST(fragmented_then_fully_freed)
{
    size_t start = rss_bytes();
    size_t max = 100 * MiB / 16;
    void **blocks = pointer_array(max);
    REQUIRE(blocks != NULL);
    size_t n = fill_working_set(blocks, max, 100 * MiB, mixed_small_size);
    for (size_t i = 0; i < n; i += 2)
        free(blocks[i]);
    for (size_t i = 1; i < n; i += 2)
        free(blocks[i]);
    pointer_array_free(blocks, max);
    size_t end = rss_bytes();
    CHECK_MSG(end <= start + RSS_MARGIN, "rss %zu MiB at start, %zu MiB after free", start >> 20, end >> 20);
}

/* ---- blocks of exited threads ---- */

#define THREADS 4

struct thread_set {
    void **blocks;
    size_t max, count;
    size_t total;
    size_t (*next_size)(size_t i);
};

static void *allocate_and_exit(void *arg)
{
    struct thread_set *s = arg;
    s->count = fill_working_set(s->blocks, s->max, s->total, s->next_size);
    return NULL;
}

static void check_thread_memory_returns(size_t (*next_size)(size_t), size_t per_thread, size_t min_size,
                                        size_t margin, const char *name)
{
    size_t start = rss_bytes();
    struct thread_set sets[THREADS];
    pthread_t tids[THREADS];
    for (int i = 0; i < THREADS; i++) {
        sets[i] = (struct thread_set){pointer_array(per_thread / min_size + 1), per_thread / min_size + 1, 0,
                                      per_thread, next_size};
        REQUIRE(sets[i].blocks != NULL);
        REQUIRE(pthread_create(&tids[i], NULL, allocate_and_exit, &sets[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(tids[i], NULL);
    size_t peak = rss_bytes();
    CHECK_MSG(peak >= start + THREADS * per_thread * 9 / 10, "%s: rss %zu MiB -> %zu MiB", name, start >> 20,
              peak >> 20);
    /* The threads are gone; the main thread frees everything they allocated. */
    for (int i = 0; i < THREADS; i++) {
        for (size_t k = 0; k < sets[i].count; k++)
            free(sets[i].blocks[k]);
        pointer_array_free(sets[i].blocks, sets[i].max);
    }
    size_t end = rss_bytes();
    CHECK_MSG(end <= start + margin, "%s: rss %zu MiB at start, %zu MiB at peak, %zu MiB after free", name,
              start >> 20, peak >> 20, end >> 20);
    CHECK(mt_heap_check() == 0);
}

TEST(small_blocks_of_exited_threads)
{
    check_thread_memory_returns(small_size, 50 * MiB, 64, RSS_MARGIN, "64-byte blocks of exited threads");
}

TEST(medium_blocks_of_exited_threads)
{
    check_thread_memory_returns(medium_size, 40 * MiB, 9000, RSS_MARGIN, "medium blocks of exited threads");
}

TEST(large_blocks_of_exited_threads)
{
    /* large_blocks above freed mapped blocks of up to 4 MiB: as in glibc, that raised the
     * mmap threshold to their size and the trim threshold to twice it, so these blocks may
     * now be medium ones, and each thread's arena may keep up to 8 MiB of free top. */
    check_thread_memory_returns(large_size, 40 * MiB, MiB, RSS_MARGIN + THREADS * 8 * MiB, "large blocks of exited threads");
}

TEST_MAIN()
