/* The malloc family's semantics, checked as a strict reviewer would: every function of
 * interpose/hooks.h and include/mtrace.h, its errno, its overflow and failure contracts,
 * its alignment guarantees, on every tier (small slabs, medium, large mappings). Written
 * against glibc's documented behaviour, which programs rely on. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>

#include "check.h"
#include "mtrace.h"

/* The tests pass absurd sizes and use blocks after failed reallocs on purpose. */
#pragma GCC diagnostic ignored "-Walloc-size-larger-than="
#pragma GCC diagnostic ignored "-Wuse-after-free"
#pragma GCC diagnostic ignored "-Wstringop-overflow" /* false positive on p[n - 1] */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations" /* mallinfo is tested too */

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* One size per tier and across their edges: small classes, the small/medium edge (8 KiB),
 * medium, the default mmap threshold (128 KiB), large. */
static const size_t tier_sizes[] = {1, 16, 17, 100, 1000, 8192, 8193, 20000, 100000, 131072, 200000, 2 * MiB, 40 * MiB};
#define TIER_COUNT (sizeof tier_sizes / sizeof tier_sizes[0])

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

/* A byte pattern that depends on the position and a seed, so a block moved or copied to
 * the wrong offset does not verify. */
static unsigned char pattern_byte(size_t i, unsigned seed)
{
    return (unsigned char)((i * 131u + seed * 7u + (i >> 8)) ^ 0x5a);
}

static void fill(void *p, size_t n, unsigned seed)
{
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        c[i] = pattern_byte(i, seed);
}

/* Offset of the first byte that does not match, or SIZE_MAX. */
static size_t verify(const void *p, size_t n, unsigned seed)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != pattern_byte(i, seed))
            return i;
    return SIZE_MAX;
}

static bool all_bytes(const void *p, size_t n, unsigned char value)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != value)
            return false;
    return true;
}

/* Everything a function writes to `fd`, read back from a temporary file. */
struct captured {
    char *text;
    size_t len;
};

static struct captured capture(void (*fn)(int fd))
{
    struct captured out = {NULL, 0};
    FILE *tmp = tmpfile();
    if (!tmp)
        return out;
    fn(fileno(tmp));
    long len = lseek(fileno(tmp), 0, SEEK_END);
    out.text = malloc((size_t)len + 1);
    if (out.text && len >= 0) {
        ssize_t got = pread(fileno(tmp), out.text, (size_t)len, 0);
        out.len = got > 0 ? (size_t)got : 0;
        out.text[out.len] = '\0';
    }
    fclose(tmp);
    return out;
}

static void call_malloc_stats(int fd)
{
    int saved = dup(2);
    dup2(fd, 2);
    malloc_stats();
    dup2(saved, 2);
    close(saved);
}

/* ---- malloc, free, calloc ---- */

TEST(malloc_zero_returns_distinct_freeable_pointers)
{
    void *a = malloc(0), *b = malloc(0);
    CHECK(a != NULL && b != NULL && a != b);
    free(a);
    free(b);
    free(NULL); /* a no-op */
}

TEST(every_block_is_16_aligned_and_writable_for_sizes_0_to_1_MiB)
{
    size_t misaligned = 0, checked = 0;
    for (size_t size = 0; size <= 1 * MiB; size += (size < 4096 ? 1 : size / 16 + 1)) {
        unsigned char *p = malloc(size);
        REQUIRE(p != NULL);
        misaligned += ((uintptr_t)p & 15) != 0;
        size_t usable = malloc_usable_size(p);
        CHECK_MSG(usable >= size, "size %zu usable %zu", size, usable);
        if (size) {
            memset(p, 1, malloc_usable_size(p)); /* the usable bytes are the program's */
            p[size - 1] = 2;
        }
        free(p);
        checked++;
    }
    CHECK_MSG(misaligned == 0, "%zu of %zu blocks not 16-aligned", misaligned, checked);
}

TEST(blocks_live_at_once_are_aligned_and_distinct)
{
    enum { N = 3000 };
    static void *p[N];
    for (size_t i = 0; i < N; i++) {
        p[i] = malloc(i % 700);
        REQUIRE(p[i] != NULL);
        CHECK(((uintptr_t)p[i] & 15) == 0);
        memset(p[i], (int)(i & 0xff), i % 700);
    }
    for (size_t i = 0; i < N; i++) {
        CHECK(all_bytes(p[i], i % 700, (unsigned char)(i & 0xff)));
        free(p[i]);
    }
}

TEST(sizes_up_to_hundreds_of_MiB)
{
    size_t sizes[] = {64 * MiB, 300 * MiB};
    for (size_t k = 0; k < 2; k++) {
        size_t n = sizes[k];
        unsigned char *p = malloc(n);
        REQUIRE(p != NULL);
        CHECK(((uintptr_t)p & 15) == 0);
        CHECK(malloc_usable_size(p) >= n);
        for (size_t off = 0; off < n; off += MiB)
            p[off] = (unsigned char)(off >> 20);
        p[n - 1] = 0xee;
        for (size_t off = 0; off < n; off += MiB)
            CHECK(p[off] == (unsigned char)(off >> 20));
        CHECK(p[n - 1] == 0xee);
        free(p);
    }
}

TEST(huge_and_overflowing_requests_fail_with_enomem)
{
    size_t huge[] = {SIZE_MAX, SIZE_MAX - 4096, SIZE_MAX / 2, SIZE_MAX / 2 + 1, (size_t)1 << 50};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        size_t n = huge[i];
        errno = 0;
        CHECK_MSG(malloc(n) == NULL && errno == ENOMEM, "malloc(%zu) errno %d", n, errno);
        errno = 0;
        CHECK_MSG(calloc(1, n) == NULL && errno == ENOMEM, "calloc(1, %zu)", n);
        errno = 0;
        CHECK_MSG(realloc(NULL, n) == NULL && errno == ENOMEM, "realloc(NULL, %zu)", n);
        errno = 0;
        CHECK_MSG(aligned_alloc(64, n) == NULL && errno == ENOMEM, "aligned_alloc(64, %zu)", n);
        errno = 0;
        CHECK_MSG(memalign(4096, n) == NULL && errno == ENOMEM, "memalign(4096, %zu)", n);
        errno = 0;
        CHECK_MSG(valloc(n) == NULL && errno == ENOMEM, "valloc(%zu)", n);
        errno = 0;
        CHECK_MSG(pvalloc(n) == NULL && errno == ENOMEM, "pvalloc(%zu)", n);
        void *out = (void *)0x1234;
        CHECK_MSG(posix_memalign(&out, 64, n) == ENOMEM && out == (void *)0x1234, "posix_memalign(64, %zu)", n);
    }
    CHECK(mt_heap_check() == 0);
}

TEST(calloc_overflow_fails_with_enomem)
{
    struct {
        size_t count, size;
    } cases[] = {{SIZE_MAX, 2}, {2, SIZE_MAX}, {SIZE_MAX / 2 + 1, 2}, {(size_t)1 << 32, (size_t)1 << 32},
                 {SIZE_MAX, SIZE_MAX}, {65537, SIZE_MAX / 65536}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        errno = 0;
        void *p = calloc(cases[i].count, cases[i].size);
        CHECK_MSG(p == NULL && errno == ENOMEM, "calloc(%zu, %zu) = %p errno %d", cases[i].count, cases[i].size, p,
                  errno);
    }
    void *zero = calloc(0, SIZE_MAX); /* 0 * anything is 0: a valid minimum block */
    CHECK(zero != NULL);
    free(zero);
}

TEST(calloc_is_zeroed_even_when_memory_is_reused_dirty)
{
    size_t reused = 0;
    for (size_t k = 0; k < TIER_COUNT; k++) {
        size_t n = tier_sizes[k];
        for (int round = 0; round < 3; round++) {
            unsigned char *dirty = malloc(n);
            REQUIRE(dirty != NULL);
            memset(dirty, 0xff, malloc_usable_size(dirty));
            free(dirty);
            unsigned char *z = calloc(1, n);
            REQUIRE(z != NULL);
            reused += z == dirty;
            CHECK_MSG(all_bytes(z, n, 0), "calloc(1, %zu) not zero (round %d, reused %d)", n, round, z == dirty);
            free(z);
            /* calloc(count, size) with count > 1 as well. */
            unsigned char *dirty2 = malloc(n * 3);
            memset(dirty2, 0xee, n * 3);
            free(dirty2);
            unsigned char *z2 = calloc(3, n);
            REQUIRE(z2 != NULL);
            CHECK_MSG(all_bytes(z2, n * 3, 0), "calloc(3, %zu) not zero", n);
            free(z2);
        }
    }
    /* Small blocks reuse the lowest free slot: the test did exercise dirty reuse. */
    CHECK(reused > 0);
}

/* ---- realloc, reallocarray ---- */

TEST(realloc_keeps_data_on_grow_and_shrink_across_every_tier)
{
    for (size_t a = 0; a < TIER_COUNT; a++) {
        for (size_t b = 0; b < TIER_COUNT; b++) {
            size_t from = tier_sizes[a], to = tier_sizes[b];
            unsigned char *p = malloc(from);
            REQUIRE(p != NULL);
            fill(p, from, (unsigned)(a * 31 + b));
            unsigned char *q = realloc(p, to);
            REQUIRE(q != NULL);
            CHECK(((uintptr_t)q & 15) == 0);
            CHECK(malloc_usable_size(q) >= to);
            size_t kept = from < to ? from : to;
            size_t bad = verify(q, kept, (unsigned)(a * 31 + b));
            CHECK_MSG(bad == SIZE_MAX, "realloc %zu -> %zu: byte %zu differs", from, to, bad);
            memset(q, 0x11, to); /* the whole new size is writable */
            free(q);
        }
    }
    CHECK(mt_heap_check() == 0);
}

TEST(realloc_growing_step_by_step_keeps_everything)
{
    size_t n = 1;
    unsigned char *p = malloc(n);
    p[0] = pattern_byte(0, 9);
    while (n < 8 * MiB) {
        size_t next = n + n / 3 + 7;
        p = realloc(p, next);
        REQUIRE(p != NULL);
        for (size_t i = n; i < next; i++)
            p[i] = pattern_byte(i, 9);
        n = next;
    }
    CHECK(verify(p, n, 9) == SIZE_MAX);
    free(p);
}

TEST(realloc_null_is_malloc_and_size_zero_frees)
{
    char *p = realloc(NULL, 100);
    REQUIRE(p != NULL);
    memset(p, 1, 100);
    struct mt_heap_stats before, after;
    mt_heap_stats(&before);
    errno = 0;
    CHECK(realloc(p, 0) == NULL); /* glibc: frees and returns NULL */
    mt_heap_stats(&after);
    CHECK_EQ_U(after.live_blocks, before.live_blocks - 1);
    for (size_t k = 0; k < TIER_COUNT; k++) {
        void *q = malloc(tier_sizes[k]);
        mt_heap_stats(&before);
        CHECK(realloc(q, 0) == NULL);
        mt_heap_stats(&after);
        CHECK_MSG(after.live_blocks == before.live_blocks - 1, "realloc(%zu-byte block, 0) did not free it",
                  tier_sizes[k]);
    }
}

TEST(failed_realloc_leaves_the_block_intact_with_enomem)
{
    size_t huge[] = {SIZE_MAX, SIZE_MAX / 2, (size_t)1 << 50};
    for (size_t k = 0; k < TIER_COUNT; k++) {
        size_t n = tier_sizes[k];
        unsigned char *p = malloc(n);
        REQUIRE(p != NULL);
        fill(p, n, (unsigned)k);
        for (size_t h = 0; h < 3; h++) {
            errno = 0;
            CHECK_MSG(realloc(p, huge[h]) == NULL, "realloc(%zu-byte block, %zu) succeeded", n, huge[h]);
            CHECK(errno == ENOMEM);
            CHECK(malloc_usable_size(p) >= n);
            CHECK_MSG(verify(p, n, (unsigned)k) == SIZE_MAX, "block of %zu changed by a failed realloc", n);
        }
        errno = 0;
        CHECK(reallocarray(p, SIZE_MAX / 2, 4) == NULL && errno == ENOMEM);
        CHECK(verify(p, n, (unsigned)k) == SIZE_MAX);
        free(p); /* still a live block: freeing it is fine */
    }
    CHECK(mt_heap_check() == 0);
}

TEST(reallocarray_multiplies_and_detects_overflow)
{
    int *v = reallocarray(NULL, 10, sizeof(int));
    REQUIRE(v != NULL);
    for (int i = 0; i < 10; i++)
        v[i] = i;
    v = reallocarray(v, 100000, sizeof(int));
    REQUIRE(v != NULL);
    CHECK(malloc_usable_size(v) >= 100000 * sizeof(int));
    for (int i = 0; i < 10; i++)
        CHECK(v[i] == i);
    errno = 0;
    CHECK(reallocarray(v, SIZE_MAX, 2) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(reallocarray(v, (size_t)1 << 33, (size_t)1 << 33) == NULL && errno == ENOMEM);
    CHECK(v[9] == 9);
    free(v);
    errno = 0;
    CHECK(reallocarray(NULL, SIZE_MAX / 3, 4) == NULL && errno == ENOMEM);
}

/* ---- the aligned family ---- */

TEST(posix_memalign_alignments_from_8_bytes_to_64_MiB)
{
    for (size_t align = sizeof(void *); align <= 64 * MiB; align *= 2) {
        size_t sizes[] = {1, 100, 5000, align, align + 1, 300000};
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            void *p = (void *)0x1;
            errno = 4242;
            int rc = posix_memalign(&p, align, sizes[s]);
            CHECK_MSG(rc == 0, "posix_memalign(%zu, %zu) = %d", align, sizes[s], rc);
            CHECK(errno == 4242); /* reports through its return value only */
            if (rc)
                continue;
            CHECK_MSG(((uintptr_t)p & (align - 1)) == 0, "align %zu size %zu -> %p", align, sizes[s], p);
            CHECK(malloc_usable_size(p) >= sizes[s]);
            memset(p, 0x3c, sizes[s]);
            free(p);
        }
    }
    CHECK(mt_heap_check() == 0);
}

TEST(posix_memalign_rejects_bad_alignments_without_touching_out_or_errno)
{
    size_t bad[] = {0, 1, 2, 4, sizeof(void *) - 1, 24, 48, 100, 4097, SIZE_MAX, SIZE_MAX / 2};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *p = (void *)0xdead;
        errno = 4242;
        CHECK_MSG(posix_memalign(&p, bad[i], 64) == EINVAL, "alignment %zu", bad[i]);
        CHECK(p == (void *)0xdead);
        CHECK(errno == 4242);
    }
    void *p = (void *)0xdead;
    errno = 4242;
    CHECK(posix_memalign(&p, 64, SIZE_MAX / 2) == ENOMEM);
    CHECK(p == (void *)0xdead && errno == 4242);
}

TEST(aligned_alloc_honours_powers_of_two_and_rejects_others)
{
    for (size_t align = 1; align <= 16 * MiB; align *= 2) {
        void *p = aligned_alloc(align, 3 * align / 2 + 1); /* the size need not be a multiple (C17) */
        REQUIRE(p != NULL);
        CHECK_MSG(((uintptr_t)p & (align - 1)) == 0 && ((uintptr_t)p & 15) == 0, "align %zu -> %p", align, p);
        memset(p, 1, 3 * align / 2 + 1);
        free(p);
    }
    size_t bad[] = {0, 3, 24, 1000, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        CHECK_MSG(aligned_alloc(bad[i], 64) == NULL && errno == EINVAL, "aligned_alloc(%zu)", bad[i]);
    }
}

TEST(memalign_rounds_odd_alignments_up_like_glibc)
{
    for (size_t align = 1; align <= 1 * MiB; align *= 2) {
        void *p = memalign(align, 1000);
        REQUIRE(p != NULL);
        CHECK(((uintptr_t)p & (align - 1)) == 0);
        free(p);
    }
    void *p = memalign(24, 100); /* glibc rounds 24 up to 32 */
    REQUIRE(p != NULL);
    CHECK(((uintptr_t)p & 31) == 0);
    free(p);
    p = memalign(3000, 100);
    REQUIRE(p != NULL);
    CHECK(((uintptr_t)p & 4095) == 0);
    free(p);
    errno = 0;
    CHECK(memalign(SIZE_MAX / 2 + 2, 16) == NULL && errno == EINVAL);
}

TEST(valloc_and_pvalloc_are_page_aligned_and_pvalloc_rounds_to_pages)
{
    size_t page = page_size();
    size_t sizes[] = {0, 1, 100, page - 1, page, page + 1, 3 * page + 5, 1 * MiB + 3};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *v = valloc(sizes[i]);
        REQUIRE(v != NULL);
        CHECK(((uintptr_t)v & (page - 1)) == 0);
        CHECK(malloc_usable_size(v) >= sizes[i]);
        free(v);
        unsigned char *pv = pvalloc(sizes[i]);
        REQUIRE(pv != NULL);
        CHECK(((uintptr_t)pv & (page - 1)) == 0);
        size_t rounded = sizes[i] ? (sizes[i] + page - 1) / page * page : page;
        CHECK_MSG(malloc_usable_size(pv) >= rounded, "pvalloc(%zu): usable %zu < %zu", sizes[i],
                  malloc_usable_size(pv), rounded);
        memset(pv, 9, rounded); /* every byte up to the page boundary is the program's */
        free(pv);
    }
}

TEST(zero_byte_aligned_blocks_are_real_blocks)
{
    /* Regression: memalign(4096, 0) used to return a pointer at the end of its mapping with
     * a usable size of 0, and realloc of it failed without setting errno. */
    for (size_t align = 32; align <= 1 * MiB; align *= 2) {
        unsigned char *p = memalign(align, 0);
        REQUIRE(p != NULL);
        CHECK(((uintptr_t)p & (align - 1)) == 0);
        CHECK_MSG(malloc_usable_size(p) > 0, "memalign(%zu, 0): usable size 0", align);
        memset(p, 1, malloc_usable_size(p)); /* the usable bytes are the program's */
        errno = 0;
        unsigned char *q = realloc(p, 100);
        CHECK_MSG(q != NULL, "realloc of memalign(%zu, 0) failed, errno %d", align, errno);
        if (q)
            memset(q, 2, 100);
        free(q ? q : p);
        void *r = NULL;
        CHECK(posix_memalign(&r, align, 0) == 0 && r != NULL && malloc_usable_size(r) > 0);
        free(r);
    }
}

/* ---- malloc_usable_size ---- */

TEST(the_whole_usable_size_is_writable_without_touching_neighbours)
{
    enum { N = 64 };
    for (size_t size = 1; size < 300000; size = size * 3 / 2 + 1) {
        unsigned char *p[N];
        size_t usable[N];
        for (int i = 0; i < N; i++) {
            p[i] = malloc(size);
            REQUIRE(p[i] != NULL);
            usable[i] = malloc_usable_size(p[i]);
            CHECK(usable[i] >= size);
            memset(p[i], i + 1, usable[i]);
        }
        for (int i = 0; i < N; i++) {
            CHECK_MSG(all_bytes(p[i], usable[i], (unsigned char)(i + 1)), "size %zu: block %d overwritten", size, i);
            free(p[i]);
        }
    }
    CHECK(malloc_usable_size(NULL) == 0);
    CHECK(mt_heap_check() == 0);
}

/* ---- malloc_trim, mallinfo2, malloc_stats ---- */

TEST(malloc_trim_returns_free_pages)
{
    /* Enough small blocks to fill many pages, freed: the heap keeps some resident, and
     * malloc_trim gives those back. */
    enum { N = 40000 };
    static void *p[N];
    for (int i = 0; i < N; i++)
        p[i] = malloc(64);
    for (int i = 0; i < N; i++)
        free(p[i]);
    CHECK(malloc_trim(0) == 1);
    void *q = malloc(64); /* and the allocator still works after it */
    CHECK(q != NULL);
    free(q);
}

TEST(mallinfo2_counts_what_we_allocate)
{
    enum { N = 1000 };
    static void *p[N];
    struct mallinfo2 before = mallinfo2();
    for (int i = 0; i < N; i++)
        p[i] = malloc(100);
    struct mallinfo2 mid = mallinfo2();
    CHECK_MSG(mid.uordblks >= before.uordblks + N * 100, "uordblks %zu -> %zu", before.uordblks, mid.uordblks);
    CHECK(mid.arena >= mid.uordblks);
    for (int i = 0; i < N; i++)
        free(p[i]);
    struct mallinfo2 after = mallinfo2();
    CHECK(after.uordblks + N * 100 <= mid.uordblks);
    /* Above the small classes: medium blocks count in uordblks, mapped ones in hblkhd. The
     * large block is above the highest mmap threshold (32 MiB, however earlier frees made
     * it adapt), so it is mapped whatever the medium tier does. */
    void *medium = malloc(50000), *large = malloc(40 * MiB);
    struct mallinfo2 big = mallinfo2();
    CHECK(big.uordblks + big.hblkhd >= after.uordblks + after.hblkhd + 50000 + 40 * MiB);
    CHECK(big.hblks >= after.hblks + 1);
    CHECK(big.hblkhd >= after.hblkhd + 40 * MiB);
    free(medium);
    free(large);
    struct mallinfo old = mallinfo();
    CHECK(old.arena > 0);
}

TEST(malloc_stats_prints_the_totals)
{
    void *keep = malloc(12345);
    struct captured out = capture(call_malloc_stats);
    REQUIRE(out.text != NULL);
    CHECK_MSG(strstr(out.text, "system bytes") && strstr(out.text, "in use bytes"), "got: %s", out.text);
    CHECK(out.len > 100);
    free(out.text);
    free(keep);
}

/* ---- mallopt ---- */

TEST(mallopt_mmap_threshold_sends_blocks_above_it_to_their_own_mapping)
{
    CHECK(mallopt(M_MMAP_THRESHOLD, 64 * 1024) == 1);
    struct mallinfo2 before = mallinfo2();
    void *p = malloc(100000);
    struct mallinfo2 after = mallinfo2();
    CHECK_EQ_U(after.hblks, before.hblks + 1);
    CHECK(after.hblkhd >= before.hblkhd + 100000);
    free(p);
    CHECK(mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024) == 0); /* above glibc's maximum (32 MiB) */
    CHECK(mallopt(M_MMAP_THRESHOLD, -1) == 0);
    CHECK(mallopt(M_MMAP_THRESHOLD, 128 * 1024) == 1);
}

TEST(mallopt_trim_top_pad_arena_max_are_accepted_and_negative_values_refused)
{
    CHECK(mallopt(M_TRIM_THRESHOLD, 256 * 1024) == 1);
    CHECK(mallopt(M_TRIM_THRESHOLD, -5) == 0);
    CHECK(mallopt(M_TOP_PAD, 64 * 1024) == 1);
    CHECK(mallopt(M_TOP_PAD, -1) == 0);
    CHECK(mallopt(M_ARENA_MAX, 2) == 1);
    CHECK(mallopt(M_ARENA_MAX, 0) == 0);
    CHECK(mallopt(-12345, 1) == 0); /* unknown parameter */
    /* The allocator works under the new settings, medium sizes included. */
    for (size_t k = 0; k < TIER_COUNT; k++) {
        void *p = malloc(tier_sizes[k]);
        CHECK(p != NULL);
        memset(p, 1, tier_sizes[k]);
        free(p);
    }
    CHECK(mallopt(M_TRIM_THRESHOLD, 128 * 1024) == 1);
    CHECK(mallopt(M_TOP_PAD, 0) == 1);
    CHECK(mallopt(M_ARENA_MAX, 8) == 1);
}

TEST(mallopt_perturb_fills_new_and_freed_blocks)
{
    const int perturb = 0xab;
    CHECK(mallopt(M_PERTURB, perturb) == 1);
    for (size_t k = 0; k < TIER_COUNT && tier_sizes[k] <= 200000; k++) {
        size_t n = tier_sizes[k];
        unsigned char *p = malloc(n);
        REQUIRE(p != NULL);
        CHECK_MSG(all_bytes(p, n, (unsigned char)(perturb ^ 0xff)), "malloc(%zu) not filled with ~perturb", n);
        unsigned char *z = calloc(1, n);
        REQUIRE(z != NULL);
        CHECK_MSG(all_bytes(z, n, 0), "calloc(1, %zu) not zero under M_PERTURB", n);
        free(z);
        if (n <= 8192) {
            /* A freed small block stays mapped: its bytes show the free fill. */
            free(p);
            CHECK_MSG(all_bytes(p, n, (unsigned char)perturb), "freed %zu-byte block not filled", n);
        } else {
            free(p);
        }
    }
    void *a = NULL;
    CHECK(posix_memalign(&a, 256, 500) == 0);
    CHECK(all_bytes(a, 500, (unsigned char)(perturb ^ 0xff)));
    free(a);
    CHECK(mallopt(M_PERTURB, 0) == 1);
    unsigned char *p = malloc(100);
    memset(p, 0x77, 100);
    free(p);
    unsigned char *q = malloc(100);
    CHECK(q == p && all_bytes(q, 100, 0x77)); /* perturb off: no fill any more */
    free(q);
}

/* ---- heap errors: reported in one line naming the bug, then abort ---- */

static void double_free_of(void *arg)
{
    void *p = malloc(*(size_t *)arg);
    free(p);
    free(p);
}

static void free_of_stack_pointer(void *arg)
{
    (void)arg;
    char local[64];
    free(local + (uintptr_t)arg); /* arg is NULL: defeats -Wfree-nonheap-object */
}

static void free_of_interior_pointer(void *arg)
{
    (void)arg;
    char *p = malloc(100);
    free(p + 16);
}

static void realloc_of_freed_block(void *arg)
{
    void *p = malloc(*(size_t *)arg);
    free(p);
    p = realloc(p, 10);
}

static void usable_size_of_freed_block(void *arg)
{
    (void)arg;
    void *p = malloc(40);
    free(p);
    malloc_usable_size(p);
}

TEST(heap_errors_abort_with_a_one_line_report)
{
    for (size_t k = 0; k < TIER_COUNT; k += 3) {
        size_t size = tier_sizes[k];
        CHECK_MSG(expect_death(double_free_of, &size, SIGABRT, "mtrace: error: double free of 0x"),
                  "double free of a %zu-byte block", size);
        CHECK_MSG(expect_death(realloc_of_freed_block, &size, SIGABRT, "realloc of freed block"),
                  "realloc of a freed %zu-byte block", size);
    }
    CHECK(expect_death(free_of_stack_pointer, NULL, SIGABRT, "invalid free of 0x"));
    CHECK(expect_death(free_of_interior_pointer, NULL, SIGABRT, "points 16 bytes into a block"));
    CHECK(expect_death(usable_size_of_freed_block, NULL, SIGABRT, "in malloc_usable_size()"));
}

/* ---- the slot cache: a small block freed by its owner waits in a per-thread cache for
 * the next malloc of its class, still marked freed, so every double free is caught ---- */

#define CACHE_TEST_SIZE 48
#define CACHE_OVERFLOW_BLOCKS 200 /* more than any class's cache holds */

static void *free_in_thread(void *p)
{
    free(p);
    return NULL;
}

static void free_from_another_thread(void *p)
{
    pthread_t t;
    if (pthread_create(&t, NULL, free_in_thread, p) == 0)
        pthread_join(t, NULL);
}

static void cached_block_freed_again_by_another_thread(void *arg)
{
    (void)arg;
    void *p = malloc(CACHE_TEST_SIZE);
    free(p);
    free_from_another_thread(p);
}

static void block_freed_by_another_thread_freed_again_by_its_owner(void *arg)
{
    (void)arg;
    void *p = malloc(CACHE_TEST_SIZE);
    free_from_another_thread(p);
    free(p);
}

static void double_free_between_other_frees(void *arg)
{
    (void)arg;
    void *a = malloc(CACHE_TEST_SIZE), *b = malloc(CACHE_TEST_SIZE);
    free(a);
    free(b);
    free(a);
}

/* The first block has left the overflowing cache for its page's bitmap. */
static void double_free_after_the_cache_overflowed(void *arg)
{
    size_t size = *(size_t *)arg;
    void *p[CACHE_OVERFLOW_BLOCKS];
    for (size_t i = 0; i < CACHE_OVERFLOW_BLOCKS; i++)
        p[i] = malloc(size);
    for (size_t i = 0; i < CACHE_OVERFLOW_BLOCKS; i++)
        free(p[i]);
    free(p[0]);
}

TEST(double_frees_of_cached_blocks_are_caught_from_any_thread)
{
    CHECK(expect_death(cached_block_freed_again_by_another_thread, NULL, SIGABRT, "double free of 0x"));
    CHECK(expect_death(block_freed_by_another_thread_freed_again_by_its_owner, NULL, SIGABRT, "double free of 0x"));
    CHECK(expect_death(double_free_between_other_frees, NULL, SIGABRT, "double free of 0x"));
    size_t sizes[] = {16, CACHE_TEST_SIZE, 1000, 8192};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        /* "invalid free" when the block's page emptied and went back to its segment. */
        CHECK_MSG(expect_death(double_free_after_the_cache_overflowed, &sizes[i], SIGABRT, "free of 0x"),
                  "double free of a %zu-byte block after %d frees", sizes[i], CACHE_OVERFLOW_BLOCKS);
}

TEST(the_most_recently_freed_block_is_reused_first)
{
    void *a = malloc(CACHE_TEST_SIZE), *b = malloc(CACHE_TEST_SIZE), *c = malloc(CACHE_TEST_SIZE);
    free(a);
    free(b);
    free(c);
    void *x = malloc(CACHE_TEST_SIZE), *y = malloc(CACHE_TEST_SIZE), *z = malloc(CACHE_TEST_SIZE);
    CHECK(x == c && y == b && z == a);
    free(x);
    free(y);
    free(z);
}

TEST(cached_blocks_are_not_counted_in_use_and_survive_a_heap_check)
{
    void *p[CACHE_OVERFLOW_BLOCKS];
    struct mallinfo2 before = mallinfo2();
    for (size_t i = 0; i < CACHE_OVERFLOW_BLOCKS; i++)
        p[i] = malloc(CACHE_TEST_SIZE);
    struct mallinfo2 full = mallinfo2();
    CHECK(full.uordblks >= before.uordblks + CACHE_OVERFLOW_BLOCKS * CACHE_TEST_SIZE);
    for (size_t i = 0; i < CACHE_OVERFLOW_BLOCKS; i++)
        free(p[i]);
    struct mallinfo2 after = mallinfo2();
    CHECK_MSG(after.uordblks == before.uordblks, "in use %zu before, %zu after freeing everything",
              before.uordblks, after.uordblks);
    CHECK(mt_heap_check() == 0);
}

/* Allocations are counted on the page that served them and added to the totals when the
 * page is released: every one counts once, before and after. */
TEST(small_allocation_counts_are_exact_across_page_releases)
{
    enum { N = 3000, SIZE = 3000 }; /* 21 per page: about 140 pages, released on free */
    static void *p[N];
    struct mt_heap_stats before, mid, after;
    mt_heap_stats(&before);
    for (int i = 0; i < N; i++)
        p[i] = malloc(SIZE);
    mt_heap_stats(&mid);
    for (int i = 0; i < N; i++)
        free(p[i]);
    mt_heap_stats(&after);
    CHECK_EQ_U(mid.total_allocs - before.total_allocs, N);
    CHECK_EQ_U(after.total_allocs - before.total_allocs, N);
    CHECK_EQ_U(after.total_frees - before.total_frees, N);
}

/* ---- introspection ---- */

/* Parse "0x... - 0x... : N bytes" lines of show_alloc_mem output. */
struct listing {
    size_t blocks, bytes;           /* summed over block lines */
    size_t total_bytes, total_blocks; /* the Total line */
    bool has_total;
};

static struct listing parse_listing(const char *text)
{
    struct listing l = {0};
    const char *line = text;
    while (line && *line) {
        void *start, *end;
        size_t n;
        if (sscanf(line, "%p - %p : %zu bytes", &start, &end, &n) == 3) {
            l.blocks++;
            l.bytes += n;
        } else if (sscanf(line, "Total : %zu bytes in %zu blocks", &l.total_bytes, &l.total_blocks) == 2) {
            l.has_total = true;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return l;
}

/* True when `text` has the line "<ptr> - <ptr+usable> : <usable> bytes". */
static bool lists_block(const char *text, const void *p)
{
    char line[128];
    size_t usable = malloc_usable_size((void *)p);
    snprintf(line, sizeof line, "%p - %p : %zu bytes\n", p, (const void *)((const char *)p + usable), usable);
    return strstr(text, line) != NULL;
}

TEST(show_alloc_mem_lists_live_blocks_with_addresses_sizes_and_total)
{
    /* 40 MiB: above any mmap threshold, so the LARGE zone exists whatever thresholds
     * earlier tests made adapt. */
    size_t sizes[] = {48, 1000, 20000, 300000, 40 * MiB};
    void *p[5];
    for (int i = 0; i < 5; i++) {
        p[i] = malloc(sizes[i]);
        REQUIRE(p[i] != NULL);
    }
    struct captured out = capture(mt_show_alloc_mem_fd);
    REQUIRE(out.text != NULL);
    for (int i = 0; i < 5; i++)
        CHECK_MSG(lists_block(out.text, p[i]), "block %p of %zu bytes not listed", p[i], sizes[i]);
    CHECK(strstr(out.text, "SMALL 48 : ") != NULL);
    CHECK(strstr(out.text, "LARGE : ") != NULL);
    struct listing l = parse_listing(out.text);
    CHECK(l.has_total);
    CHECK_EQ_U(l.total_blocks, l.blocks);
    CHECK_EQ_U(l.total_bytes, l.bytes);
    CHECK(l.total_bytes >= 48 + 1000 + 20000 + 300000 + 40 * MiB);
    free(out.text);
    /* Freed blocks disappear from the listing. */
    void *gone = p[3];
    free(p[3]);
    p[3] = NULL;
    out = capture(mt_show_alloc_mem_fd);
    REQUIRE(out.text != NULL);
    char needle[64];
    snprintf(needle, sizeof needle, "%p - ", gone);
    CHECK(strstr(out.text, needle) == NULL);
    CHECK(lists_block(out.text, p[4]));
    free(out.text);
    for (int i = 0; i < 5; i++)
        free(p[i]);
}

TEST(show_alloc_mem_ex_dumps_block_contents)
{
    char *p = malloc(64);
    REQUIRE(p != NULL);
    memset(p, 0, 64);
    strcpy(p, "HELLO-MTRACE-DUMP");
    struct captured out = capture(mt_show_alloc_mem_ex_fd);
    REQUIRE(out.text != NULL);
    CHECK(lists_block(out.text, p));
    CHECK(strstr(out.text, "48 45 4c 4c 4f 2d 4d 54 52 41 43 45 2d 44 55 4d") != NULL); /* hex */
    CHECK(strstr(out.text, "|HELLO-MTRACE-DUM|") != NULL);                              /* ASCII */
    CHECK(strstr(out.text, "Total : ") != NULL);
    free(out.text);
    free(p);
}

TEST(show_alloc_hist_counts_live_blocks_per_class)
{
    enum { N = 777 };
    static void *p[N];
    for (int i = 0; i < N; i++)
        p[i] = malloc(200); /* class 208 */
    void *big = malloc(5 * MiB);
    struct captured out = capture(mt_show_alloc_hist_fd);
    REQUIRE(out.text != NULL);
    CHECK(strstr(out.text, "size class") != NULL);
    const char *row = strstr(out.text, "\n208 ");
    REQUIRE(row != NULL);
    unsigned long long live = 0, bytes = 0, allocs = 0;
    CHECK(sscanf(row + 1, "208 %llu %llu %llu", &live, &bytes, &allocs) == 3);
    CHECK_MSG(live >= N && live < N + 50, "live %llu", live);
    CHECK_EQ_U(bytes, live * 208);
    CHECK(allocs >= live);
    CHECK(strstr(out.text, "(4194304, 8388608]") != NULL); /* the 5 MiB block's bucket */
    CHECK(strstr(out.text, "\ntotal ") != NULL);
    free(out.text);
    for (int i = 0; i < N; i++)
        free(p[i]);
    free(big);
}

TEST(heap_check_and_stats_follow_allocations)
{
    CHECK(mt_heap_check() == 0);
    struct mt_heap_stats before, mid, after;
    mt_heap_stats(&before);
    enum { N = 500 };
    static void *p[N];
    size_t requested = 0;
    for (int i = 0; i < N; i++) {
        size_t n = (size_t)(i % 5 == 0 ? 30000 : 16 + i);
        p[i] = malloc(n);
        requested += n;
    }
    void *large = malloc(2 * MiB);
    requested += 2 * MiB;
    mt_heap_stats(&mid);
    CHECK(mt_heap_check() == 0);
    CHECK_EQ_U(mid.live_blocks, before.live_blocks + N + 1);
    CHECK(mid.in_use >= before.in_use + requested);
    CHECK(mid.total_allocs >= before.total_allocs + N + 1);
    CHECK(mid.mapped >= mid.resident && mid.resident >= mid.in_use);
    for (int i = 0; i < N; i++)
        free(p[i]);
    free(large);
    mt_heap_stats(&after);
    CHECK_EQ_U(after.live_blocks, before.live_blocks);
    CHECK(after.total_frees >= before.total_frees + N + 1);
    CHECK(after.in_use <= before.in_use + 4096);
    CHECK(mt_heap_check() == 0);
}

TEST_MAIN()
