/* Regions (mt_arena_*, allocator/region.c): positions, push/pop/clear, alignment with and
 * without auto-alignment, zeroing over reused memory, pages returned to the OS after a big
 * pop, exhaustion of the reservation, release, and the reports for invalid operations. */
#include <errno.h>
#include <sys/mman.h>

#include "check.h"
#include "mtrace.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

/* True when the page holding `p` is mapped (mincore fails with ENOMEM on a hole). */
static bool is_mapped(const void *p)
{
    unsigned char vec;
    void *page = (void *)((uintptr_t)p & ~(uintptr_t)(page_size() - 1));
    return mincore(page, page_size(), &vec) == 0;
}

TEST(push_advances_position_and_blocks_do_not_overlap)
{
    mt_arena_t *a = mt_arena_create(16 * MiB);
    REQUIRE(a != NULL);
    CHECK_EQ_U(mt_arena_pos(a), 0);
    char *p = mt_arena_push(a, 100);
    REQUIRE(p != NULL);
    CHECK_EQ_U(mt_arena_pos(a), 100);
    memset(p, 'a', 100);
    char *q = mt_arena_push(a, 50);
    REQUIRE(q != NULL);
    CHECK(q >= p + 100);
    CHECK_EQ_U(mt_arena_pos(a), (size_t)(q - p) + 50);
    memset(q, 'b', 50);
    for (int i = 0; i < 100; i++)
        CHECK(p[i] == 'a');
    mt_arena_release(a);
}

TEST(pop_to_returns_to_a_saved_position_and_reuses_its_memory)
{
    mt_arena_t *a = mt_arena_create(16 * MiB);
    REQUIRE(a != NULL);
    char *first = mt_arena_push(a, 64);
    size_t mark = mt_arena_pos(a);
    char *second = mt_arena_push(a, 1000);
    REQUIRE(first && second);
    mt_arena_push(a, 5000);
    mt_arena_pop_to(a, mark);
    CHECK_EQ_U(mt_arena_pos(a), mark);
    char *again = mt_arena_push(a, 1000);
    CHECK(again == second);
    mt_arena_release(a);
}

TEST(pop_removes_the_last_bytes_and_clear_returns_to_zero)
{
    mt_arena_t *a = mt_arena_create(16 * MiB);
    REQUIRE(a != NULL);
    char *p = mt_arena_push(a, 48);
    mt_arena_push(a, 32);
    CHECK_EQ_U(mt_arena_pos(a), 80);
    mt_arena_pop(a, 32);
    CHECK_EQ_U(mt_arena_pos(a), 48);
    mt_arena_pop(a, 48);
    CHECK_EQ_U(mt_arena_pos(a), 0);
    mt_arena_push(a, 4096);
    mt_arena_push(a, 100000);
    mt_arena_clear(a);
    CHECK_EQ_U(mt_arena_pos(a), 0);
    CHECK(mt_arena_push(a, 48) == p); /* a cleared region starts over at its beginning */
    mt_arena_release(a);
}

TEST(auto_alignment_on_aligns_every_push_to_16)
{
    mt_arena_t *a = mt_arena_create(16 * MiB);
    REQUIRE(a != NULL);
    for (size_t size = 1; size < 200; size += 7) {
        char *p = mt_arena_push(a, size);
        REQUIRE(p != NULL);
        CHECK_MSG(((uintptr_t)p & 15) == 0, "push(%zu) -> %p", size, (void *)p);
    }
    mt_arena_release(a);
}

TEST(auto_alignment_off_packs_pushes)
{
    mt_arena_t *a = mt_arena_create(16 * MiB);
    REQUIRE(a != NULL);
    mt_arena_set_auto_align(a, 0);
    char *p = mt_arena_push(a, 3);
    char *q = mt_arena_push(a, 5);
    char *r = mt_arena_push(a, 1);
    REQUIRE(p && q && r);
    CHECK(q == p + 3);
    CHECK(r == q + 5);
    CHECK_EQ_U(mt_arena_pos(a), 9);
    /* Explicit alignment still applies with auto-alignment off. */
    char *s = mt_arena_push_aligned(a, 8, 64);
    REQUIRE(s != NULL);
    CHECK(((uintptr_t)s & 63) == 0);
    /* And switching it back on aligns the next push again. */
    mt_arena_push(a, 1);
    mt_arena_set_auto_align(a, 1);
    char *t = mt_arena_push(a, 1);
    REQUIRE(t != NULL);
    CHECK(((uintptr_t)t & 15) == 0);
    mt_arena_release(a);
}

TEST(push_aligned_honours_every_power_of_two_up_to_the_page)
{
    mt_arena_t *a = mt_arena_create(16 * MiB);
    REQUIRE(a != NULL);
    for (int mode = 0; mode < 2; mode++) {
        mt_arena_set_auto_align(a, mode);
        for (size_t align = 1; align <= page_size(); align *= 2) {
            mt_arena_push(a, 1); /* misalign the position */
            char *p = mt_arena_push_aligned(a, 10, align);
            REQUIRE(p != NULL);
            CHECK_MSG(((uintptr_t)p & (align - 1)) == 0, "align %zu -> %p", align, (void *)p);
            memset(p, 1, 10);
        }
    }
    mt_arena_release(a);
}

TEST(push_aligned_rejects_bad_alignments_with_einval)
{
    mt_arena_t *a = mt_arena_create(16 * MiB);
    REQUIRE(a != NULL);
    size_t bad[] = {3, 24, 100, 4097, page_size() * 2};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t before = mt_arena_pos(a);
        errno = 0;
        CHECK(mt_arena_push_aligned(a, 8, bad[i]) == NULL);
        CHECK_MSG(errno == EINVAL, "align %zu: errno %d", bad[i], errno);
        CHECK_EQ_U(mt_arena_pos(a), before);
    }
    mt_arena_release(a);
}

TEST(push_zero_is_zero_even_over_memory_a_pop_made_dirty)
{
    mt_arena_t *a = mt_arena_create(64 * MiB);
    REQUIRE(a != NULL);
    /* Sizes below and above the decommit slack, so both the memset and the pages the
     * kernel zeroed are exercised. */
    size_t sizes[] = {100, 4096, 70000, 3 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        unsigned char *dirty = mt_arena_push(a, n + 64);
        REQUIRE(dirty != NULL);
        memset(dirty, 0xa5, n + 64);
        mt_arena_pop(a, n + 64);
        unsigned char *z = mt_arena_push_zero(a, n);
        REQUIRE(z == dirty);
        size_t nonzero = 0;
        for (size_t j = 0; j < n; j++)
            nonzero += z[j] != 0;
        CHECK_MSG(nonzero == 0, "%zu of %zu bytes not zero", nonzero, n);
        /* Bytes past the zeroed block keep what was written (push_zero clears its block only). */
        CHECK(z[n] == 0xa5 || n + 64 > 256 * KiB);
        mt_arena_clear(a);
    }
    /* With auto-alignment off and a misaligned start. */
    mt_arena_set_auto_align(a, 0);
    unsigned char *d = mt_arena_push(a, 1000);
    memset(d, 0xff, 1000);
    mt_arena_pop_to(a, 7);
    unsigned char *z = mt_arena_push_zero(a, 500);
    REQUIRE(z == d + 7);
    for (size_t j = 0; j < 500; j++)
        if (z[j]) {
            CHECK_MSG(z[j] == 0, "byte %zu is %#x", j, z[j]);
            break;
        }
    mt_arena_release(a);
}

TEST(plain_push_keeps_reused_content_until_overwritten)
{
    /* Not a requirement of the API, but proof that push_zero's zeroing above is its own
     * doing: a pop below the slack keeps the pages (hysteresis, no system call). */
    mt_arena_t *a = mt_arena_create(16 * MiB);
    REQUIRE(a != NULL);
    unsigned char *p = mt_arena_push(a, 8192);
    memset(p, 0x5a, 8192);
    mt_arena_pop_to(a, 0);
    unsigned char *q = mt_arena_push(a, 8192);
    REQUIRE(q == p);
    CHECK(q[0] == 0x5a && q[8191] == 0x5a);
    mt_arena_release(a);
}

TEST(rss_drops_after_a_big_pop_and_stays_after_a_small_one)
{
    const size_t big = 128 * MiB;
    mt_arena_t *a = mt_arena_create(0); /* the default reservation (64 GiB of address space) */
    REQUIRE(a != NULL);
    size_t base = rss_bytes();
    char *p = mt_arena_push(a, big);
    REQUIRE(p != NULL);
    memset(p, 1, big);
    size_t grown = rss_bytes();
    CHECK_MSG(grown >= base + big - 4 * MiB, "rss %zu -> %zu after touching %zu", base, grown, big);
    /* A pop that leaves less than the slack unused keeps the pages. */
    mt_arena_pop(a, 64 * KiB);
    size_t after_small = rss_bytes();
    CHECK_MSG(after_small + 64 * KiB > grown, "rss %zu -> %zu after a 64 KiB pop", grown, after_small);
    mt_arena_pop_to(a, 0);
    size_t after = rss_bytes();
    CHECK_MSG(after < base + 4 * MiB, "rss %zu (start %zu) after popping %zu", after, base, big);
    /* The memory is usable again, and reads as zero where it was given back. */
    char *q = mt_arena_push(a, big);
    REQUIRE(q == p);
    CHECK(q[big - 1] == 0);
    mt_arena_clear(a);
    CHECK(rss_bytes() < base + 4 * MiB);
    mt_arena_release(a);
}

TEST(exhausting_the_reservation_fails_with_enomem)
{
    const size_t reserve = 1 * MiB;
    mt_arena_t *a = mt_arena_create(reserve);
    REQUIRE(a != NULL);
    /* The whole reservation is usable. */
    char *all = mt_arena_push(a, reserve);
    REQUIRE(all != NULL);
    memset(all, 7, reserve);
    size_t pos = mt_arena_pos(a);
    errno = 0;
    CHECK(mt_arena_push(a, 64 * KiB) == NULL);
    CHECK(errno == ENOMEM);
    CHECK_EQ_U(mt_arena_pos(a), pos); /* a failed push changes nothing */
    mt_arena_clear(a);
    /* Sizes that would wrap the address arithmetic fail too. */
    errno = 0;
    CHECK(mt_arena_push(a, SIZE_MAX) == NULL);
    CHECK(errno == ENOMEM);
    errno = 0;
    CHECK(mt_arena_push_zero(a, SIZE_MAX - 8) == NULL);
    CHECK(errno == ENOMEM);
    /* Many small pushes hit the same limit. */
    size_t pushed = 0;
    while (mt_arena_push(a, 1000))
        pushed += 1000;
    CHECK(errno == ENOMEM);
    CHECK(pushed >= reserve - 16 * 1000 && pushed <= reserve + 4096);
    mt_arena_release(a);
    errno = 0;
    CHECK(mt_arena_create(SIZE_MAX) == NULL);
    CHECK(errno == ENOMEM);
}

TEST(release_unmaps_the_whole_reservation)
{
    mt_arena_t *a = mt_arena_create(8 * MiB);
    REQUIRE(a != NULL);
    char *p = mt_arena_push(a, 100);
    char *q = mt_arena_push(a, 3 * MiB);
    REQUIRE(p && q);
    memset(q, 1, 3 * MiB);
    CHECK(is_mapped(a) && is_mapped(p) && is_mapped(q + 3 * MiB - 1));
    mt_arena_release(a);
    CHECK(!is_mapped(a));
    CHECK(!is_mapped(p));
    CHECK(!is_mapped(q + 3 * MiB - 1));
}

TEST(many_regions_live_at_once)
{
    enum { N = 64 };
    mt_arena_t *r[N];
    for (int i = 0; i < N; i++) {
        r[i] = mt_arena_create(1 * MiB);
        REQUIRE(r[i] != NULL);
        int *v = mt_arena_push(r[i], sizeof(int) * 100);
        for (int j = 0; j < 100; j++)
            v[j] = i * 1000 + j;
    }
    for (int i = 0; i < N; i++) {
        mt_arena_pop_to(r[i], 0);
        int *v = mt_arena_push(r[i], sizeof(int) * 100);
        CHECK(v[99] == i * 1000 + 99);
        mt_arena_release(r[i]);
    }
}

/* ---- invalid operations: reported and fatal ---- */

static void pop_beyond_position(void *arg)
{
    (void)arg;
    mt_arena_t *a = mt_arena_create(1 * MiB);
    mt_arena_push(a, 100);
    mt_arena_pop_to(a, 200);
}

static void pop_more_than_pushed(void *arg)
{
    (void)arg;
    mt_arena_t *a = mt_arena_create(1 * MiB);
    mt_arena_push(a, 100);
    mt_arena_pop(a, 101);
}

static void push_null(void *arg)
{
    (void)arg;
    mt_arena_push(NULL, 16);
}

static void pop_null(void *arg)
{
    (void)arg;
    mt_arena_pop_to(NULL, 0);
}

static void clear_null(void *arg)
{
    (void)arg;
    mt_arena_clear(NULL);
}

static void release_null(void *arg)
{
    (void)arg;
    mt_arena_release(NULL);
}

static void forged_handle(void *arg)
{
    (void)arg;
    static uint64_t fake[32];
    mt_arena_push((mt_arena_t *)fake, 16);
}

TEST(invalid_operations_are_reported_and_abort)
{
    CHECK(expect_death(pop_beyond_position, NULL, SIGABRT, "invalid region operation"));
    CHECK(expect_death(pop_beyond_position, NULL, SIGABRT, "mt_arena_pop_to()"));
    CHECK(expect_death(pop_more_than_pushed, NULL, SIGABRT, "in mt_arena_pop()"));
    CHECK(expect_death(push_null, NULL, SIGABRT, "invalid region operation of 0x0 in mt_arena_push()"));
    CHECK(expect_death(pop_null, NULL, SIGABRT, "invalid region operation"));
    CHECK(expect_death(clear_null, NULL, SIGABRT, "in mt_arena_clear()"));
    CHECK(expect_death(release_null, NULL, SIGABRT, "in mt_arena_release()"));
    CHECK(expect_death(forged_handle, NULL, SIGABRT, "not a region handle"));
}

TEST_MAIN()
