/* Model-based test: a seeded random sequence of malloc, calloc, realloc, memalign and free,
 * each result checked against a model of what must be live: contents intact, usable size
 * at least the request, alignment honoured, no two live blocks overlapping (the intervals
 * [ptr, ptr + usable) sorted and compared), the allocator's live-block count equal to the
 * model's, and mt_heap_check() clean after every phase. Sizes are skewed to reach every
 * tier: small classes, medium blocks and the mmap path. */
#include <malloc.h>
#include <stdlib.h>

#include "../../common/hash.h"
#include "check.h"
#include "mtrace.h"

#define MAX_LIVE 4096
#define OPS_PER_PHASE 12000

struct block {
    unsigned char *ptr;
    size_t size;
    size_t usable;
    uint64_t key;
};

struct model {
    struct block live[MAX_LIVE];
    size_t count;
    uint64_t rng;
    size_t baseline_live; /* blocks the allocator held before the run (stdio and the like) */
    /* How many requests reached each tier. */
    size_t small, medium, large;
    size_t failures; /* checks that failed: stop reporting after a few */
};

static uint64_t next_random(struct model *m)
{
    m->rng += 0x9e3779b97f4a7c15ull;
    return mt_mix64(m->rng);
}

/* Offsets carrying the pattern: everything up to 64 KiB, then the ends and a stride (the
 * point is to catch a misplaced block, not to spend the test's time in memory traffic). */
#define FULL_MAX ((size_t)64 << 10)
#define EDGE 4096
#define STRIDE 4093

static size_t next_offset(size_t i, size_t n)
{
    return (n > FULL_MAX && i >= EDGE && i + EDGE < n) ? i + STRIDE : i + 1;
}

static unsigned char byte_at(uint64_t key, size_t i)
{
    return (unsigned char)(mt_mix64(key ^ (i >> 3)) >> ((i & 7) * 8));
}

static void write_pattern(const struct block *b)
{
    for (size_t i = 0; i < b->size; i = next_offset(i, b->size))
        b->ptr[i] = byte_at(b->key, i);
}

/* First offset below `limit` whose byte differs, or SIZE_MAX. */
static size_t check_pattern(const unsigned char *p, const struct block *b, size_t limit)
{
    for (size_t i = 0; i < limit; i = next_offset(i, b->size))
        if (p[i] != byte_at(b->key, i))
            return i;
    return SIZE_MAX;
}

#define MODEL_CHECK(m, cond, ...)                                                              \
    do {                                                                                       \
        if (!(cond) && (m)->failures++ < 10)                                                   \
            CHECK_MSG(cond, __VA_ARGS__);                                                      \
    } while (0)

static size_t random_size(struct model *m)
{
    uint64_t r = next_random(m);
    unsigned pick = (unsigned)(r % 1000);
    size_t size;
    if (pick < 700)
        size = (size_t)(r >> 24) % 257;                       /* the 16-byte classes */
    else if (pick < 900)
        size = 257 + (size_t)(r >> 24) % (8192 - 256);        /* the geometric classes */
    else if (pick < 985)
        size = 8193 + (size_t)(r >> 24) % (120 << 10);        /* medium */
    else
        size = ((size_t)128 << 10) + (size_t)(r >> 24) % ((size_t)6 << 20); /* mmap path */
    if (size <= 8192)
        m->small++;
    else if (size < ((size_t)128 << 10))
        m->medium++;
    else
        m->large++;
    return size;
}

static void add_block(struct model *m, unsigned char *p, size_t size, bool zeroed, size_t align)
{
    MODEL_CHECK(m, p != NULL, "allocation of %zu bytes failed", size);
    if (!p)
        return;
    struct block b = {p, size, malloc_usable_size(p), next_random(m)};
    MODEL_CHECK(m, b.usable >= size, "usable %zu < requested %zu", b.usable, size);
    MODEL_CHECK(m, ((uintptr_t)p & (align - 1)) == 0, "%p not aligned to %zu", (void *)p, align);
    if (zeroed) {
        size_t bad = SIZE_MAX;
        for (size_t i = 0; i < size && bad == SIZE_MAX; i = next_offset(i, size))
            if (p[i])
                bad = i;
        MODEL_CHECK(m, bad == SIZE_MAX, "calloc'ed block of %zu has byte %zu set", size, bad);
    }
    write_pattern(&b);
    m->live[m->count++] = b;
}

static void remove_block(struct model *m, size_t index)
{
    struct block *b = &m->live[index];
    size_t bad = check_pattern(b->ptr, b, b->size);
    MODEL_CHECK(m, bad == SIZE_MAX, "block %p (%zu bytes) changed at offset %zu", (void *)b->ptr, b->size, bad);
    free(b->ptr);
    m->live[index] = m->live[--m->count];
}

static void realloc_block(struct model *m, size_t index)
{
    struct block *b = &m->live[index];
    size_t new_size = random_size(m);
    if (new_size == 0)
        new_size = 1; /* realloc(p, 0) frees: covered in test_api */
    unsigned char *q = realloc(b->ptr, new_size);
    MODEL_CHECK(m, q != NULL, "realloc to %zu failed", new_size);
    if (!q)
        return;
    size_t kept = b->size < new_size ? b->size : new_size;
    size_t bad = check_pattern(q, b, kept);
    MODEL_CHECK(m, bad == SIZE_MAX, "realloc %zu -> %zu lost byte %zu", b->size, new_size, bad);
    b->ptr = q;
    b->size = new_size;
    b->usable = malloc_usable_size(q);
    MODEL_CHECK(m, b->usable >= new_size, "usable %zu < %zu after realloc", b->usable, new_size);
    b->key = next_random(m);
    write_pattern(b);
}

static int by_address(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const struct block *)a)->ptr, y = (uintptr_t)((const struct block *)b)->ptr;
    return x < y ? -1 : x > y;
}

/* Every live block intact, no overlap, the allocator's count equal to the model's. */
static void verify_model(struct model *m, const char *phase)
{
    static struct block sorted[MAX_LIVE];
    memcpy(sorted, m->live, m->count * sizeof sorted[0]);
    qsort(sorted, m->count, sizeof sorted[0], by_address);
    for (size_t i = 0; i + 1 < m->count; i++) {
        MODEL_CHECK(m, sorted[i].ptr + sorted[i].usable <= sorted[i + 1].ptr,
                    "%s: %p+%zu overlaps %p", phase, (void *)sorted[i].ptr, sorted[i].usable,
                    (void *)sorted[i + 1].ptr);
    }
    for (size_t i = 0; i < m->count; i++) {
        size_t bad = check_pattern(m->live[i].ptr, &m->live[i], m->live[i].size);
        MODEL_CHECK(m, bad == SIZE_MAX, "%s: block %p changed at %zu", phase, (void *)m->live[i].ptr, bad);
        MODEL_CHECK(m, malloc_usable_size(m->live[i].ptr) == m->live[i].usable, "%s: usable size of %p changed",
                    phase, (void *)m->live[i].ptr);
    }
    struct mt_heap_stats st;
    mt_heap_stats(&st);
    MODEL_CHECK(m, st.live_blocks == m->baseline_live + m->count, "%s: allocator has %zu live blocks, model %zu",
                phase, st.live_blocks, m->baseline_live + m->count);
    MODEL_CHECK(m, mt_heap_check() == 0, "%s: mt_heap_check failed", phase);
}

/* One phase: `alloc_weight` out of 10 operations allocate, the rest free or realloc. */
static void run_phase(struct model *m, unsigned alloc_weight, const char *phase)
{
    for (int op = 0; op < OPS_PER_PHASE; op++) {
        uint64_t r = next_random(m);
        bool allocate = m->count == 0 || (r % 10 < alloc_weight && m->count < MAX_LIVE);
        if (allocate) {
            size_t size = random_size(m);
            switch ((r >> 8) % 4) {
            case 0:
                add_block(m, calloc(1, size), size, true, 16);
                break;
            case 1: {
                size_t align = (size_t)16 << ((r >> 16) % 13); /* 16 B .. 64 KiB */
                add_block(m, memalign(align, size), size, false, align);
                break;
            }
            default:
                add_block(m, malloc(size), size, false, 16);
                break;
            }
        } else {
            size_t index = (size_t)((r >> 8) % m->count);
            if ((r >> 40) % 4 == 0)
                realloc_block(m, index);
            else
                remove_block(m, index);
        }
    }
    verify_model(m, phase);
}

static void run_seed(uint64_t seed)
{
    static struct model m;
    memset(&m, 0, sizeof m);
    m.rng = seed;
    struct mt_heap_stats st;
    mt_heap_stats(&st);
    m.baseline_live = st.live_blocks;
    run_phase(&m, 8, "grow");
    run_phase(&m, 5, "churn");
    run_phase(&m, 2, "shrink");
    run_phase(&m, 6, "regrow");
    while (m.count)
        remove_block(&m, m.count - 1);
    verify_model(&m, "empty");
    /* The sequence did reach every tier. */
    CHECK_MSG(m.small > 10000 && m.medium > 500 && m.large > 100, "seed %llu: small %zu medium %zu large %zu",
              (unsigned long long)seed, m.small, m.medium, m.large);
    CHECK_MSG(m.failures == 0, "seed %llu: %zu failed checks", (unsigned long long)seed, m.failures);
}

TEST(model_seed_1)
{
    run_seed(1);
}

TEST(model_seed_2)
{
    run_seed(0xfeedface);
}

TEST(model_seed_3)
{
    run_seed(20261124);
}

TEST_MAIN()
