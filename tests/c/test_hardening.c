/* Death tests for every hardening check: the always-on ones (small-block slot bitmaps, the
 * segment map, medium chunk checksums, links and top, the large registry and header
 * checksum) and the debug allocator's
 * (canaries, poison and quarantine, guard pages, zero on free).
 *
 * Each bug runs in a forked child that must die of SIGABRT with exactly one report line
 * "mtrace: error: <bug> of 0x... (size N) in <function>()" followed by a backtrace. Debug
 * mode is read from the environment when the allocator initialises, which in this
 * statically linked program has already happened: debug children re-execute this program
 * (/proc/self/exe --scenario NAME) with MTRACE_DEBUG=1 and the scenario's options. */
#include <malloc.h>
#include <pthread.h>
#include <regex.h>
#include <sys/resource.h>

#include "check.h"
#include "mtrace.h"

#include "../../allocator/segmap.h"

/* Small requests and the class they land in (size_class.c: 16-byte steps to 256). */
#define SMALL_REQUEST 64
#define SMALL_CLASS 64
/* Past the adaptive mmap threshold's starting value (128 KiB): a large block. */
#define LARGE_REQUEST ((size_t)200000)
/* A quarantine small enough that a few frees evict a block (debug poison tests). */
#define TINY_QUARANTINE "1K"
/* A quarantine that still holds the few blocks a scenario frees when it looks at them
 * (set explicitly: the scenarios must not depend on the default). */
#define HOLDING_QUARANTINE "MTRACE_QUARANTINE=64K"
#define EVICTING_FREES 64
/* Large frees between the two frees of a block: more than the registry used to remember. */
#define LARGE_FREES_BETWEEN 200
/* Debug mode: enough small blocks allocated and freed to reuse pooled guard mappings many
 * times, and to empty pages (and sweep their records) thousands of times. */
#define GUARD_POOL_CYCLES 300
#define RECORD_CHURN_CYCLES 100000

static void *volatile sink; /* keeps the compiler from reasoning about freed pointers */

/* p, as a pointer the compiler knows nothing about (these tests write out of bounds on
 * purpose). */
static char *opaque(void *p)
{
    sink = p;
    return sink;
}

/* ---- report checks ----------------------------------------------------------------------- */

/* The captured report has a line matching `pattern` (POSIX extended, anchored per line)
 * and a backtrace line. */
static bool report_matches(const char *pattern)
{
    regex_t re;
    if (regcomp(&re, pattern, REG_EXTENDED | REG_NEWLINE | REG_NOSUB) != 0)
        return false;
    bool ok = regexec(&re, expect_death_output, 0, NULL, 0) == 0;
    regfree(&re);
    if (!ok)
        fprintf(stderr, "  no line matches /%s/ in:\n%s\n", pattern, expect_death_output);
    return ok;
}

static bool report_has_backtrace(void)
{
    return strstr(expect_death_output, "\nmtrace:   #0 ") != NULL;
}

static int count_errors(void)
{
    int n = 0;
    for (const char *p = expect_death_output; (p = strstr(p, "mtrace: error: ")); p++)
        n++;
    return n;
}

#define PTR "0x[0-9a-f]+"

/* fn(arg) dies of SIGABRT with one report whose first line matches `line`, and a backtrace. */
#define EXPECT_REPORT(fn, arg, line)                                                           \
    do {                                                                                       \
        CHECK(expect_death(fn, arg, SIGABRT, "mtrace: error: "));                              \
        CHECK(report_matches("^" line));                                                       \
        CHECK(report_has_backtrace());                                                         \
        CHECK_EQ_U(count_errors(), 1);                                                         \
    } while (0)

/* ---- always-on checks: small blocks ---------------------------------------------------------- */

static void small_double_free(void *arg)
{
    (void)arg;
    char *p = malloc(SMALL_REQUEST);
    free(p);
    sink = p;
    free(sink);
}

TEST(small_double_free)
{
    EXPECT_REPORT(small_double_free, NULL, "mtrace: error: double free of " PTR " \\(size 64\\) in free\\(\\)$");
    /* Linked statically, mtrace is part of the program: the program's own frames must not
     * be filtered out of the backtrace as "mtrace's". */
    CHECK(report_matches("^mtrace:   #[0-9]+ +" PTR " in [^ ]*test_hardening\\+0x"));
}

static void small_double_free_after_reuse_of_neighbours(void *arg)
{
    (void)arg;
    void *blocks[100];
    for (int i = 0; i < 100; i++)
        blocks[i] = malloc(SMALL_REQUEST);
    free(blocks[50]);
    for (int i = 0; i < 100; i += 2)
        free(blocks[i == 50 ? 51 : i]);
    for (int i = 0; i < 10; i++)
        sink = malloc(SMALL_REQUEST); /* reuses the lowest free slots, below 50 */
    free(blocks[50]);
}

TEST(small_double_free_after_other_frees)
{
    EXPECT_REPORT(small_double_free_after_reuse_of_neighbours, NULL,
                  "mtrace: error: double free of " PTR " \\(size 64\\) in free\\(\\)$");
}

static void *free_in_thread(void *p)
{
    free(p);
    return NULL;
}

static void small_double_free_cross_thread(void *arg)
{
    (void)arg;
    char *p = malloc(SMALL_REQUEST);
    pthread_t t;
    pthread_create(&t, NULL, free_in_thread, p);
    pthread_join(t, NULL);
    sink = p;
    free(sink); /* the owner frees a slot whose remote bit is set */
}

static void small_double_free_remote_twice(void *arg)
{
    (void)arg;
    char *p = malloc(SMALL_REQUEST);
    free(p);
    pthread_t t;
    pthread_create(&t, NULL, free_in_thread, p); /* a remote free of a free slot */
    pthread_join(t, NULL);
}

TEST(small_double_free_cross_thread)
{
    EXPECT_REPORT(small_double_free_cross_thread, NULL,
                  "mtrace: error: double free of " PTR " \\(size 64\\) in free\\(\\)$");
    EXPECT_REPORT(small_double_free_remote_twice, NULL,
                  "mtrace: error: double free of " PTR " \\(size 64\\) in free\\(\\)$");
}

static void small_interior_free(void *arg)
{
    (void)arg;
    char *p = malloc(SMALL_REQUEST);
    sink = p + 16;
    free(sink);
}

TEST(small_interior_free)
{
    EXPECT_REPORT(small_interior_free, NULL,
                  "mtrace: error: invalid free of " PTR " in free\\(\\): points 16 bytes into a block of 64 bytes at " PTR
                  "$");
}

static void small_realloc_freed(void *arg)
{
    (void)arg;
    char *p = malloc(SMALL_REQUEST);
    free(p);
    sink = p;
    sink = realloc(sink, 2 * SMALL_REQUEST);
}

TEST(small_realloc_of_freed_block)
{
    EXPECT_REPORT(small_realloc_freed, NULL,
                  "mtrace: error: realloc of freed block of " PTR " \\(size 64\\) in realloc\\(\\)$");
}

static void small_usable_size_freed(void *arg)
{
    (void)arg;
    char *p = malloc(SMALL_REQUEST);
    free(p);
    sink = p;
    printf("%zu\n", malloc_usable_size(sink));
}

TEST(small_usable_size_of_freed_block)
{
    EXPECT_REPORT(small_usable_size_freed, NULL,
                  "mtrace: error: use of freed block of " PTR " \\(size 64\\) in malloc_usable_size\\(\\)$");
}

/* ---- always-on checks: pointers that are not ours, large blocks ---------------------------- */

static char global_buffer[256] __attribute__((aligned(16)));

static void free_stack(void *arg)
{
    (void)arg;
    char local[64] __attribute__((aligned(16)));
    sink = local;
    free(sink);
}

static void free_global(void *arg)
{
    (void)arg;
    sink = global_buffer + 16;
    free(sink);
}

TEST(invalid_free_of_stack_and_global)
{
    EXPECT_REPORT(free_stack, NULL, "mtrace: error: invalid free of " PTR " in free\\(\\): not allocated by mtrace");
    EXPECT_REPORT(free_global, NULL, "mtrace: error: invalid free of " PTR " in free\\(\\): not allocated by mtrace");
}

static void large_double_free(void *arg)
{
    (void)arg;
    char *p = malloc(LARGE_REQUEST);
    free(p);
    sink = p;
    free(sink);
}

/* A double free with many large frees in between is still called a double free. */
static void large_double_free_later(void *arg)
{
    (void)arg;
    char *p = malloc(LARGE_REQUEST);
    free(p);
    for (int i = 0; i < LARGE_FREES_BETWEEN; i++)
        free(malloc(LARGE_REQUEST));
    sink = p;
    free(sink);
}

static void large_realloc_freed(void *arg)
{
    (void)arg;
    char *p = malloc(LARGE_REQUEST);
    free(p);
    sink = p;
    sink = realloc(sink, 2 * LARGE_REQUEST);
}

/* Flip one bit of the large header word at p - arg (the header is the 64 bytes before the
 * block: check, map_base, map_size, usable). */
static void large_corrupt_header(void *arg)
{
    size_t back = (size_t)(uintptr_t)arg;
    char *p = opaque(malloc(LARGE_REQUEST));
    volatile char *header_byte = p - back;
    *header_byte ^= 0x10;
    free(p);
}

static void large_interior_free(void *arg)
{
    (void)arg;
    char *p = malloc(LARGE_REQUEST);
    sink = p + 4096;
    free(sink);
}

TEST(large_block_checks)
{
    EXPECT_REPORT(large_double_free, NULL, "mtrace: error: double free of " PTR " \\(size [0-9]+\\) in free\\(\\)$");
    EXPECT_REPORT(large_double_free_later, NULL,
                  "mtrace: error: double free of " PTR " \\(size [0-9]+\\) in free\\(\\)$");
    EXPECT_REPORT(large_realloc_freed, NULL,
                  "mtrace: error: realloc of freed block of " PTR " \\(size [0-9]+\\) in realloc\\(\\)$");
    /* Each field free() relies on: the checksum, map_base, map_size, usable. */
    static const size_t header_fields[] = {64, 56, 48, 40};
    for (size_t i = 0; i < sizeof header_fields / sizeof header_fields[0]; i++)
        EXPECT_REPORT(large_corrupt_header, (void *)(uintptr_t)header_fields[i],
                      "mtrace: error: corrupted block header of " PTR " in free\\(\\): the header of a large block "
                      "was overwritten$");
    EXPECT_REPORT(large_interior_free, NULL, "mtrace: error: invalid free of " PTR " in free\\(\\)");
}

/* ---- always-on checks: medium chunks ------------------------------------------------------- */

/* A medium request (between the small classes and the mmap threshold). */
#define MEDIUM_REQUEST ((size_t)16376)

static void medium_double_free(void *arg)
{
    (void)arg;
    char *p = malloc(MEDIUM_REQUEST);
    sink = malloc(MEDIUM_REQUEST); /* keeps p off the top chunk */
    free(p);
    sink = p;
    free(sink);
}

static void medium_interior_free(void *arg)
{
    (void)arg;
    char *p = malloc(MEDIUM_REQUEST);
    sink = p + 4096;
    free(sink);
}

/* An overflow out of a into b's header: reported when either block is freed. */
static void medium_overflow_into_next_header(void *arg)
{
    char *a = opaque(malloc(MEDIUM_REQUEST));
    char *b = malloc(MEDIUM_REQUEST);
    sink = malloc(MEDIUM_REQUEST);
    memset(a, 'x', malloc_usable_size(a) + 8);
    free(arg ? (void *)a : (void *)b);
}

/* A write after free over the links of a freed chunk, followed by the malloc that takes it. */
static void medium_poisoned_link(void *arg)
{
    (void)arg;
    char *a = malloc(MEDIUM_REQUEST);
    void *spacer = malloc(MEDIUM_REQUEST);
    char *b = malloc(MEDIUM_REQUEST);
    void *barrier = malloc(MEDIUM_REQUEST);
    free(b);
    free(a);
    sink = a;
    memset(sink, 'L', 16);
    sink = malloc(MEDIUM_REQUEST);
    sink = spacer;
    sink = barrier;
}

/* House of force: the top chunk's header overwritten from the block before it. */
static void medium_top_overwritten(void *arg)
{
    (void)arg;
    char *a = opaque(malloc(MEDIUM_REQUEST));
    memset(a + malloc_usable_size(a), 0xff, 16);
    sink = malloc(MEDIUM_REQUEST);
}

TEST(medium_chunk_checks)
{
    EXPECT_REPORT(medium_double_free, NULL, "mtrace: error: double free of " PTR " \\(size 16384\\) in free\\(\\)$");
    EXPECT_REPORT(medium_interior_free, NULL,
                  "mtrace: error: invalid free of " PTR " \\(size 16384\\) in free\\(\\): points inside a live block, "
                  "not at its start$");
    /* Freeing a: its own trailer is gone; freeing b: the header before it is. */
    EXPECT_REPORT(medium_overflow_into_next_header, (void *)1,
                  "mtrace: error: corrupted block header of " PTR " \\(size 16384\\) in free\\(\\): the header after "
                  "the block was overwritten");
    EXPECT_REPORT(medium_overflow_into_next_header, NULL,
                  "mtrace: error: corrupted block header of " PTR " in free\\(\\): the 16 bytes before the block were "
                  "overwritten");
    EXPECT_REPORT(medium_poisoned_link, NULL,
                  "mtrace: error: corrupted free list of " PTR " in malloc\\(\\): the links of a free chunk do not "
                  "point back to it");
    EXPECT_REPORT(medium_top_overwritten, NULL,
                  "mtrace: error: corrupted top chunk of " PTR " in malloc\\(\\): the top chunk's header does not "
                  "match the end of its region$");
}

/* ---- debug mode: scenarios run in a re-executed child --------------------------------------- */

struct scenario {
    const char *name;
    void (*run)(void);
    const char *env[4]; /* NAME=value, besides MTRACE_DEBUG=1 */
};

static void debug_canary_overflow(void)
{
    char *p = opaque(malloc(100));
    strcpy(p, "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789");
    free(p); /* strcpy wrote its NUL one byte past the end */
}

static void debug_canary_at_realloc(void)
{
    char *p = opaque(malloc(100));
    memset(p, 'x', 108);
    sink = realloc(p, 200);
}

static void debug_write_after_free_evicted(void)
{
    char *p = malloc(SMALL_REQUEST);
    free(p);
    sink = p;
    ((volatile char *)sink)[3] = 'w';
    for (int i = 0; i < EVICTING_FREES; i++)
        free(malloc(SMALL_REQUEST));
}

static void debug_write_after_free_at_exit(void)
{
    char *p = malloc(SMALL_REQUEST);
    free(p);
    sink = p;
    ((volatile char *)sink)[5] = 'w';
    exit(0);
}

static void debug_guard_overflow(void)
{
    char *p = malloc(LARGE_REQUEST);
    sink = p;
    ((volatile char *)sink)[LARGE_REQUEST] = 'o'; /* the first byte past the end */
}

static void debug_guard_use_after_free(void)
{
    char *p = malloc(LARGE_REQUEST);
    free(p);
    sink = p;
    printf("%d\n", ((volatile char *)sink)[10]);
}

static void debug_double_free(void)
{
    char *p = malloc(SMALL_REQUEST);
    free(p);
    sink = p;
    free(sink);
}

static void debug_realloc_freed(void)
{
    char *p = malloc(SMALL_REQUEST);
    free(p);
    sink = p;
    sink = realloc(sink, 10);
}

/* Every small block guarded (MTRACE_GUARD_SAMPLE=1): mappings are pooled and reused, and a
 * block freed into a reused one still faults when read. */
static void debug_guard_pool_reuse(void)
{
    for (int i = 0; i < GUARD_POOL_CYCLES; i++)
        free(opaque(malloc(100)));
    char *p = malloc(100);
    free(p);
    sink = p;
    printf("%d\n", ((volatile char *)sink)[10]);
}

/* Without quarantine, a malloc/free loop empties pages and sweeps their records over and
 * over; the record of a block that stayed live all along must survive it (else the free
 * below would go unchecked). */
static void debug_records_survive_sweeps(void)
{
    char *keep = opaque(malloc(100));
    for (int i = 0; i < RECORD_CHURN_CYCLES; i++)
        free(opaque(malloc(16 + (size_t)(i % 200))));
    memset(keep, 'x', 101);
    free(keep);
}

/* A double free long after the first: the block has left the quarantine and waits, held
 * by the debug layer, to be handed out again; the second free is still reported. */
static void debug_late_double_free(void)
{
    char *p = malloc(SMALL_REQUEST);
    free(p);
    for (int i = 0; i < EVICTING_FREES; i++)
        free(malloc(SMALL_REQUEST));
    sink = p;
    free(sink);
}

/* realloc within the block's slot keeps it in place; its canary moves with its end. */
static void debug_canary_after_realloc_in_place(void)
{
    char *p = opaque(malloc(40));
    uintptr_t before = (uintptr_t)p;
    char *q = opaque(realloc(p, 44));
    if ((uintptr_t)q != before)
        exit(3); /* the slot has room: it must not move */
    /* Changed for sure: the canary's bytes are random, so a fixed byte matches one in 255. */
    q[44] = (char)~q[44];
    free(q);
}

/* Not a death: mt_heap_check() sees a small block's broken canary and a quarantined small
 * block's broken poison (the per-slot records are walked), and neither once repaired.
 * Exits 0 when all of that holds. */
static void debug_heap_check_walks_records(void)
{
    char *p = opaque(malloc(100));
    if (mt_heap_check() != 0)
        exit(2);
    char canary = p[100];
    p[100] = (char)(canary ^ 1);
    if (mt_heap_check() == 0)
        exit(1);
    p[100] = canary;
    if (mt_heap_check() != 0)
        exit(3);
    char *q = malloc(SMALL_REQUEST);
    free(q);
    sink = q;
    volatile char *freed = sink;
    char poison = freed[7];
    freed[7] = 'w';
    int seen = mt_heap_check() != 0;
    freed[7] = poison; /* else the check at exit reports it and aborts */
    exit(seen ? 0 : 4);
}

/* Not a death: exits 0 when the freed block reads as zeros, 1 otherwise. */
static void debug_zero_on_free(void)
{
    char *p = malloc(SMALL_REQUEST);
    memset(p, 'z', SMALL_REQUEST);
    free(p);
    sink = p;
    for (int i = 0; i < SMALL_REQUEST; i++)
        if (((volatile char *)sink)[i] != 0)
            exit(1);
    exit(0);
}

/* MTRACE_ZERO_ON_FREE alone: freed blocks and the old place of a moved realloc read as
 * zeros, and the debug layer stays off (no canary: the usable size is the class size). */
static void light_zero_on_free(void)
{
    char *p = malloc(40);
    if (malloc_usable_size(p) != 48)
        exit(2);
    memset(p, 'z', 40);
    char *q = realloc(opaque(p), 4000);
    if (q == p)
        exit(3);
    memset(q, 'y', 4000);
    free(q);
    for (int i = 0; i < 40; i++)
        if (((volatile char *)sink)[i] != 0)
            exit(1);
    sink = q;
    for (int i = 0; i < 4000; i++)
        if (((volatile char *)sink)[i] != 0)
            exit(1);
    exit(0);
}

/* The fill of new blocks: the poison byte, or 0xbe when there is no poison or it is zero. */
#define FILL_POISON 0xdf
#define FILL_NO_POISON 0xbe
/* Rounds of malloc, grow, free: enough that every small class in reach recycles its
 * slots through the quarantine many times. */
#define FILL_ROUNDS 4000
/* Allocations in which a slot that left the quarantine comes back (its class's window and
 * stash hold 24 blocks). */
#define FILL_REUSE_TRIES 200

static bool option_is(const char *name, const char *value)
{
    const char *v = getenv(name);
    return v && strcmp(v, value) == 0;
}

static bool reads_as(const unsigned char *p, size_t n, unsigned char byte)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != byte)
            return false;
    return true;
}

/* Not a death: every new block, and the new bytes of a grown one, read as the fill byte,
 * whatever the slot held before (data, poison, a shorter block's canary) and whatever
 * its size within its class. Exits 0 when all of that holds. */
static void debug_fill_of_new_blocks(void)
{
    unsigned char fill =
        option_is("MTRACE_POISON", "0") || option_is("MTRACE_ZERO_ON_FREE", "1") ? FILL_NO_POISON : FILL_POISON;
    uint32_t rng = 12345;
    for (int i = 0; i < FILL_ROUNDS; i++) {
        rng = rng * 1103515245u + 12345u;
        /* Mostly small sizes, sometimes a medium one. */
        size_t n = 1 + (rng >> 8) % (i % 16 == 15 ? 20000 : 300);
        unsigned char *p = (unsigned char *)opaque(malloc(n));
        if (!reads_as(p, n, fill))
            exit(1);
        memset(p, 'x', n);
        size_t grown = n + 1 + (rng >> 20) % 64;
        p = (unsigned char *)opaque(realloc(p, grown));
        if (!reads_as(p + n, grown - n, fill))
            exit(2);
        memset(p, 'x', grown);
        free(p);
    }
    exit(0);
}

/* Not a death (MTRACE_ON_ERROR=continue): a slot whose poison was found broken when it
 * left the quarantine is filled whole when handed out again, not trusted to read as
 * poison. Exits 0 when it came back filled. */
static void debug_fill_after_broken_poison(void)
{
    unsigned char *p = malloc(SMALL_REQUEST);
    free(p);
    sink = p;
    ((volatile char *)sink)[3] = 'w';
    /* The report of the check goes nowhere: the test looks at the block. */
    FILE *devnull = fopen("/dev/null", "w");
    if (!devnull || dup2(fileno(devnull), 2) < 0)
        exit(4);
    /* Evicted by frees of another class, so the slot waits in its class's stash. */
    for (int i = 0; i < EVICTING_FREES; i++)
        free(opaque(malloc(4 * SMALL_REQUEST)));
    for (int i = 0; i < FILL_REUSE_TRIES; i++) {
        unsigned char *q = malloc(SMALL_REQUEST);
        if (!reads_as(q, SMALL_REQUEST, FILL_POISON))
            exit(1);
        if (q == p)
            exit(0); /* the others stay allocated: the slot must come back without a free */
    }
    exit(3);
}

/* Guard sampling at random gaps: a program whose sizes cycle with a period dividing
 * MTRACE_GUARD_SAMPLE gets blocks of every size guarded (with a fixed period it got one
 * size only). A guarded block has a mapping of its own, outside the small segments. Exits
 * 0 when most sizes had one (GUARD_CYCLE_ROUNDS * GUARD_CYCLE_SIZES / 16 guarded blocks
 * expected: fewer than half the sizes is a chance far below 1e-9). */
#define GUARD_CYCLE_SIZES 16
#define GUARD_CYCLE_ROUNDS 256
static void debug_guard_sample_every_size(void)
{
    bool guarded[GUARD_CYCLE_SIZES] = {false};
    for (int i = 0; i < GUARD_CYCLE_SIZES * GUARD_CYCLE_ROUNDS; i++) {
        char *p = opaque(malloc(16 * (size_t)(1 + i % GUARD_CYCLE_SIZES)));
        if (mt_segmap_kind(mt_segmap_entry((uintptr_t)p)) != MT_SEG_SMALL)
            guarded[i % GUARD_CYCLE_SIZES] = true;
        free(p);
    }
    int sizes = 0;
    for (int k = 0; k < GUARD_CYCLE_SIZES; k++)
        sizes += guarded[k];
    exit(sizes >= GUARD_CYCLE_SIZES / 2 ? 0 : 1);
}

static const struct scenario scenarios[] = {
    {"canary_overflow", debug_canary_overflow, {"MTRACE_GUARD=0"}},
    {"canary_at_realloc", debug_canary_at_realloc, {"MTRACE_GUARD=0"}},
    {"write_after_free_evicted", debug_write_after_free_evicted,
     {"MTRACE_GUARD=0", "MTRACE_QUARANTINE=" TINY_QUARANTINE}},
    {"write_after_free_at_exit", debug_write_after_free_at_exit, {"MTRACE_GUARD=0", HOLDING_QUARANTINE}},
    {"zero_write_after_free", debug_write_after_free_at_exit,
     {"MTRACE_GUARD=0", "MTRACE_ZERO_ON_FREE=1", HOLDING_QUARANTINE}},
    {"guard_overflow", debug_guard_overflow, {NULL}},
    {"guard_use_after_free", debug_guard_use_after_free, {NULL}},
    {"double_free", debug_double_free, {"MTRACE_GUARD=0", HOLDING_QUARANTINE}},
    {"realloc_freed", debug_realloc_freed, {"MTRACE_GUARD=0", HOLDING_QUARANTINE}},
    {"zero_on_free", debug_zero_on_free, {"MTRACE_GUARD=0", "MTRACE_ZERO_ON_FREE=1", HOLDING_QUARANTINE}},
    {"guard_pool_reuse", debug_guard_pool_reuse, {"MTRACE_GUARD_SAMPLE=1", "MTRACE_QUARANTINE=" TINY_QUARANTINE}},
    {"guard_sample_every_size", debug_guard_sample_every_size, {"MTRACE_GUARD_SAMPLE=16"}},
    {"records_survive_sweeps", debug_records_survive_sweeps, {"MTRACE_GUARD=0", "MTRACE_QUARANTINE=0"}},
    {"heap_check_walks_records", debug_heap_check_walks_records, {"MTRACE_GUARD=0", HOLDING_QUARANTINE}},
    {"light_zero_on_free", light_zero_on_free, {"MTRACE_DEBUG=0", "MTRACE_ZERO_ON_FREE=1"}},
    {"late_double_free", debug_late_double_free, {"MTRACE_GUARD=0", "MTRACE_QUARANTINE=" TINY_QUARANTINE}},
    {"canary_after_realloc_in_place", debug_canary_after_realloc_in_place, {"MTRACE_GUARD=0"}},
    {"fill_poison", debug_fill_of_new_blocks, {"MTRACE_GUARD=0", "MTRACE_QUARANTINE=" TINY_QUARANTINE}},
    {"fill_guarded", debug_fill_of_new_blocks, {"MTRACE_GUARD_SAMPLE=7", "MTRACE_QUARANTINE=" TINY_QUARANTINE}},
    {"fill_no_quarantine", debug_fill_of_new_blocks, {"MTRACE_GUARD=0", "MTRACE_QUARANTINE=0"}},
    {"fill_no_poison", debug_fill_of_new_blocks,
     {"MTRACE_GUARD=0", "MTRACE_POISON=0", "MTRACE_QUARANTINE=" TINY_QUARANTINE}},
    {"fill_zero_on_free", debug_fill_of_new_blocks,
     {"MTRACE_GUARD=0", "MTRACE_ZERO_ON_FREE=1", "MTRACE_QUARANTINE=" TINY_QUARANTINE}},
    {"fill_after_broken_poison", debug_fill_after_broken_poison,
     {"MTRACE_GUARD=0", "MTRACE_ON_ERROR=continue", "MTRACE_QUARANTINE=" TINY_QUARANTINE}},
};

static const struct scenario *find_scenario(const char *name)
{
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        if (strcmp(scenarios[i].name, name) == 0)
            return &scenarios[i];
    return NULL;
}

/* expect_death's child: become this program again, in debug mode (unless the scenario's
 * own MTRACE_DEBUG=0 overrides it), running one scenario. */
static void exec_scenario(void *arg)
{
    const struct scenario *s = arg;
    setenv("MTRACE_DEBUG", "1", 1);
    for (int i = 0; i < 4 && s->env[i]; i++)
        putenv((char *)s->env[i]);
    execl("/proc/self/exe", "test_hardening", "--scenario", s->name, (char *)NULL);
    _exit(127);
}

#define EXPECT_DEBUG_REPORT(name, line) EXPECT_REPORT(exec_scenario, (void *)find_scenario(name), line)

TEST(debug_canary_catches_overflow_at_free_and_realloc)
{
    EXPECT_DEBUG_REPORT("canary_overflow",
                        "mtrace: error: heap buffer overflow of " PTR " \\(size 100\\) in free\\(\\): a write 1 byte "
                        "past the end of the block \\(canary at offset 100 changed\\)$");
    CHECK(strstr(expect_death_output, "mtrace:   the block was allocated by ") != NULL);
    EXPECT_DEBUG_REPORT("canary_at_realloc",
                        "mtrace: error: heap buffer overflow of " PTR " \\(size 100\\) in realloc\\(\\): a write 1 byte "
                        "past the end");
}

TEST(debug_poison_catches_write_after_free)
{
    EXPECT_DEBUG_REPORT("write_after_free_evicted",
                        "mtrace: error: write after free of " PTR " \\(size 64\\) in free\\(\\): byte 3 of the freed "
                        "block was changed to 0x77$");
    CHECK(strstr(expect_death_output, "mtrace:   and freed by ") != NULL);
    EXPECT_DEBUG_REPORT("write_after_free_at_exit",
                        "mtrace: error: write after free of " PTR " \\(size 64\\) in exit\\(\\): byte 5 of the freed "
                        "block was changed to 0x77$");
    EXPECT_DEBUG_REPORT("zero_write_after_free",
                        "mtrace: error: write after free of " PTR " \\(size 64\\) in exit\\(\\): byte 5 of the freed "
                        "block was changed to 0x77$");
}

TEST(debug_guard_page_catches_large_overflow_and_use_after_free)
{
    EXPECT_DEBUG_REPORT("guard_overflow", "mtrace: error: heap buffer overflow of " PTR
                                          " \\(size 200000\\) in a memory access: 1 byte past the end hit the guard "
                                          "page$");
    EXPECT_DEBUG_REPORT("guard_use_after_free", "mtrace: error: use of freed block of " PTR
                                                " \\(size 200000\\) in a memory access: offset 10 of the freed block "
                                                "was touched$");
    CHECK(strstr(expect_death_output, "mtrace:   the block was allocated by ") != NULL);
    CHECK(strstr(expect_death_output, "mtrace:   and freed by ") != NULL);
}

TEST(debug_quarantine_catches_double_free_and_realloc)
{
    EXPECT_DEBUG_REPORT("double_free", "mtrace: error: double free of " PTR " \\(size 64\\) in free\\(\\)$");
    CHECK(strstr(expect_death_output, "mtrace:   the block was allocated by ") != NULL);
    CHECK(strstr(expect_death_output, "mtrace:   and freed by ") != NULL);
    EXPECT_DEBUG_REPORT("realloc_freed",
                        "mtrace: error: realloc of freed block of " PTR " \\(size 64\\) in realloc\\(\\)$");
}

/* Exit status of a scenario run in a re-executed child. */
static int scenario_status(const char *name)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        exec_scenario((void *)find_scenario(name));
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(debug_zero_on_free_zeroes)
{
    CHECK_EQ_U(scenario_status("zero_on_free"), 0);
    CHECK_EQ_U(scenario_status("light_zero_on_free"), 0);
}

TEST(debug_guard_pool_and_records)
{
    EXPECT_DEBUG_REPORT("guard_pool_reuse", "mtrace: error: use of freed block of " PTR
                                            " \\(size 100\\) in a memory access: offset 10 of the freed block was "
                                            "touched$");
    EXPECT_DEBUG_REPORT("records_survive_sweeps",
                        "mtrace: error: heap buffer overflow of " PTR " \\(size 100\\) in free\\(\\): a write 1 byte "
                        "past the end");
}

TEST(debug_guard_sample_reaches_every_size)
{
    CHECK_EQ_U(scenario_status("guard_sample_every_size"), 0);
}

TEST(debug_late_double_free_and_realloc_in_place)
{
    EXPECT_DEBUG_REPORT("late_double_free", "mtrace: error: double free of " PTR " \\(size 64\\) in free\\(\\)$");
    EXPECT_DEBUG_REPORT("canary_after_realloc_in_place",
                        "mtrace: error: heap buffer overflow of " PTR " \\(size 44\\) in free\\(\\): a write 1 byte "
                        "past the end");
}

TEST(debug_fill_is_the_poison_byte_and_covers_reused_slots)
{
    CHECK_EQ_U(scenario_status("fill_poison"), 0);
    CHECK_EQ_U(scenario_status("fill_guarded"), 0);
    CHECK_EQ_U(scenario_status("fill_no_quarantine"), 0);
    CHECK_EQ_U(scenario_status("fill_no_poison"), 0);
    CHECK_EQ_U(scenario_status("fill_zero_on_free"), 0);
    CHECK_EQ_U(scenario_status("fill_after_broken_poison"), 0);
}

TEST(debug_heap_check_sees_small_blocks)
{
    CHECK_EQ_U(scenario_status("heap_check_walks_records"), 0);
}

int main(int argc, char **argv)
{
    /* Dozens of children abort on purpose: no core files. */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    if (argc == 3 && strcmp(argv[1], "--scenario") == 0) {
        const struct scenario *s = find_scenario(argv[2]);
        if (!s)
            return 2;
        s->run();
        return 0;
    }
    return run_tests();
}
