/* Threads: concurrent allocation with most blocks freed (or realloc'ed) by a thread other
 * than the one that allocated them, contents verified at every hand-over; then thousands
 * of short-lived threads whose blocks outlive them. The heap must stay consistent
 * (mt_heap_check) and its counts exact once everything is freed. */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>

#include "../../common/hash.h"
#include "check.h"
#include "mtrace.h"

#define THREADS 8
#define OPS_PER_THREAD 60000
#define QUEUE_CAP 1024
#define LOCAL_KEEP 256

struct item {
    unsigned char *ptr;
    size_t size;
    uint64_t key; /* the block's address mixed with a seed, fixed when it was filled */
};

/* A bounded hand-over queue between two threads. */
struct queue {
    pthread_mutex_t lock;
    struct item items[QUEUE_CAP];
    size_t head, count;
};

static struct queue queues[THREADS];
static atomic_int producers_done;
static atomic_long mismatches;
static atomic_long handed_over;

static uint64_t rng_next(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15ull;
    return mt_mix64(*state);
}

/* The byte at offset i of a block: derived from the block's address and a seed, so a block
 * handed to the wrong owner, or overlapping another, does not verify. */
static unsigned char expected_byte(const struct item *it, size_t i)
{
    return (unsigned char)(mt_mix64(it->key ^ (i >> 3)) >> ((i & 7) * 8));
}

/* Big blocks are written and checked at their ends and at a stride: enough to catch a
 * misplaced or overlapping block without spending the test's time in memset. */
#define FULL_CHECK_MAX 2048
#define STRIDE 997

/* The offsets of a block of n bytes that carry the pattern, after offset i. */
static size_t next_offset(size_t i, size_t n)
{
    return (n > FULL_CHECK_MAX && i >= 256 && i + 256 < n) ? i + STRIDE : i + 1;
}

static void pattern_apply(const struct item *it, bool check)
{
    size_t n = it->size;
    for (size_t i = 0; i < n; i = next_offset(i, n)) {
        if (check) {
            if (it->ptr[i] != expected_byte(it, i)) {
                atomic_fetch_add(&mismatches, 1);
                return;
            }
        } else {
            it->ptr[i] = expected_byte(it, i);
        }
    }
}

static size_t random_size(uint64_t *rng)
{
    uint64_t r = rng_next(rng);
    unsigned pick = (unsigned)(r % 1000);
    if (pick < 900)
        return (size_t)(r >> 20) % 512;             /* small classes */
    if (pick < 985)
        return 512 + (size_t)(r >> 20) % 8192;      /* the larger small classes */
    if (pick < 998)
        return 8193 + (size_t)(r >> 20) % 120000;   /* medium */
    return 131072 + (size_t)(r >> 20) % (1 << 20);  /* large */
}

static struct item random_alloc(uint64_t *rng)
{
    struct item it = {NULL, random_size(rng), rng_next(rng)};
    switch (rng_next(rng) % 6) {
    case 0:
        it.ptr = calloc(1, it.size);
        if (it.ptr) {
            for (size_t i = 0; i < it.size; i += (it.size > FULL_CHECK_MAX ? STRIDE : 1))
                if (it.ptr[i] != 0)
                    atomic_fetch_add(&mismatches, 1);
        }
        break;
    case 1: {
        size_t align = (size_t)16 << (rng_next(rng) % 9); /* 16 .. 4096 */
        it.ptr = aligned_alloc(align, it.size);
        if ((uintptr_t)it.ptr & (align - 1))
            atomic_fetch_add(&mismatches, 1);
        break;
    }
    case 2: {
        void *p = NULL;
        size_t align = (size_t)32 << (rng_next(rng) % 6);
        if (posix_memalign(&p, align, it.size) == 0)
            it.ptr = p;
        if ((uintptr_t)it.ptr & (align - 1))
            atomic_fetch_add(&mismatches, 1);
        break;
    }
    default:
        it.ptr = malloc(it.size);
        break;
    }
    if (it.ptr) {
        it.key ^= (uintptr_t)it.ptr;
        pattern_apply(&it, false);
    }
    return it;
}

/* Resize a verified block: its old contents must survive, then it gets a new pattern. */
static struct item resize(struct item it, uint64_t *rng)
{
    size_t new_size = random_size(rng);
    unsigned char *q = realloc(it.ptr, new_size ? new_size : 1);
    if (!q) {
        atomic_fetch_add(&mismatches, 1);
        return it;
    }
    size_t kept = it.size < new_size ? it.size : new_size;
    for (size_t i = 0; i < kept; i = next_offset(i, it.size))
        if (q[i] != expected_byte(&it, i)) {
            atomic_fetch_add(&mismatches, 1);
            break;
        }
    struct item fresh = {q, new_size, rng_next(rng) ^ (uintptr_t)q};
    pattern_apply(&fresh, false);
    return fresh;
}

static bool queue_push(struct queue *q, struct item it)
{
    pthread_mutex_lock(&q->lock);
    bool ok = q->count < QUEUE_CAP;
    if (ok)
        q->items[(q->head + q->count++) % QUEUE_CAP] = it;
    pthread_mutex_unlock(&q->lock);
    return ok;
}

/* Take everything queued for us; returns how many items. */
static size_t queue_drain(struct queue *q, struct item *out)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->count;
    for (size_t i = 0; i < n; i++)
        out[i] = q->items[(q->head + i) % QUEUE_CAP];
    q->head = (q->head + n) % QUEUE_CAP;
    q->count = 0;
    pthread_mutex_unlock(&q->lock);
    return n;
}

/* Blocks another thread handed us: verify, sometimes realloc (a block of another thread's
 * heap), then free. */
static void consume_inbox(int self, uint64_t *rng, struct item *scratch)
{
    size_t n = queue_drain(&queues[self], scratch);
    for (size_t i = 0; i < n; i++) {
        struct item it = scratch[i];
        pattern_apply(&it, true);
        if (rng_next(rng) % 4 == 0) {
            it = resize(it, rng);
            pattern_apply(&it, true);
        }
        free(it.ptr);
    }
    atomic_fetch_add(&handed_over, (long)n);
}

static void *mixed_worker(void *arg)
{
    int self = (int)(intptr_t)arg;
    uint64_t rng = 0x1234567ull * (uint64_t)(self + 1);
    struct item local[LOCAL_KEEP];
    size_t local_count = 0;
    struct item *scratch = malloc(sizeof(struct item) * QUEUE_CAP);
    for (int op = 0; op < OPS_PER_THREAD; op++) {
        struct item it = random_alloc(&rng);
        if (!it.ptr) {
            atomic_fetch_add(&mismatches, 1);
            continue;
        }
        /* Most blocks go to the next thread; the rest stay, and are freed here later. A full
         * queue is waited out by emptying our own inbox meanwhile, which is what frees our
         * predecessor, so the share handed over does not depend on scheduling. */
        if (rng_next(&rng) % 10 < 8) {
            while (!queue_push(&queues[(self + 1) % THREADS], it))
                consume_inbox(self, &rng, scratch);
            continue;
        }
        if (local_count == LOCAL_KEEP) {
            size_t victim = rng_next(&rng) % LOCAL_KEEP;
            pattern_apply(&local[victim], true);
            if (rng_next(&rng) % 3 == 0) {
                local[victim] = resize(local[victim], &rng);
                pattern_apply(&local[victim], true);
            }
            free(local[victim].ptr);
            local[victim] = local[--local_count];
        }
        local[local_count++] = it;
        if (op % 64 == 0)
            consume_inbox(self, &rng, scratch);
    }
    for (size_t i = 0; i < local_count; i++) {
        pattern_apply(&local[i], true);
        free(local[i].ptr);
    }
    atomic_fetch_add(&producers_done, 1);
    /* Our predecessor may still be sending: drain until every producer is done. */
    while (atomic_load(&producers_done) < THREADS)
        consume_inbox(self, &rng, scratch);
    consume_inbox(self, &rng, scratch);
    free(scratch);
    return NULL;
}

TEST(cross_thread_hand_over_with_contents_verified)
{
    struct mt_heap_stats before, after;
    mt_heap_stats(&before);
    for (int i = 0; i < THREADS; i++)
        pthread_mutex_init(&queues[i].lock, NULL);
    pthread_t tids[THREADS];
    for (int i = 0; i < THREADS; i++)
        REQUIRE(pthread_create(&tids[i], NULL, mixed_worker, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(tids[i], NULL);
    CHECK_EQ_U(atomic_load(&mismatches), 0);
    /* Four blocks in five changed threads (the share the workers choose). */
    CHECK_MSG(atomic_load(&handed_over) > THREADS * OPS_PER_THREAD * 7 / 10, "only %ld blocks handed over",
              atomic_load(&handed_over));
    for (int i = 0; i < THREADS; i++)
        CHECK_EQ_U(queues[i].count, 0);
    CHECK(mt_heap_check() == 0);
    mt_heap_stats(&after);
    /* Every block is freed; glibc keeps at most one block (the DTV) for each stack in its
     * cache of exited threads' stacks. */
    CHECK_MSG(after.live_blocks <= before.live_blocks + THREADS, "live blocks %zu -> %zu", before.live_blocks,
              after.live_blocks);
}

/* ---- short-lived threads ---- */

#define SHORT_THREADS 2400
#define SHORT_BATCH 16
#define SHORT_BLOCKS 64

struct short_result {
    struct item kept[SHORT_BLOCKS / 2]; /* outlive the thread; freed by the main thread */
};

static void *short_worker(void *arg)
{
    struct short_result *res = arg;
    uint64_t rng = (uintptr_t)arg;
    struct item mine[SHORT_BLOCKS];
    for (int i = 0; i < SHORT_BLOCKS; i++) {
        mine[i] = random_alloc(&rng);
        if (!mine[i].ptr)
            atomic_fetch_add(&mismatches, 1);
    }
    for (int i = 0; i < SHORT_BLOCKS; i++) {
        if (!mine[i].ptr)
            continue;
        pattern_apply(&mine[i], true);
        if (i % 2 == 0)
            free(mine[i].ptr);
        else
            res->kept[i / 2] = mine[i];
    }
    return NULL;
}

TEST(thousands_of_short_lived_threads)
{
    struct mt_heap_stats before, after;
    mt_heap_stats(&before);
    static struct short_result results[SHORT_BATCH];
    uint64_t rng = 99;
    for (int done = 0; done < SHORT_THREADS; done += SHORT_BATCH) {
        pthread_t tids[SHORT_BATCH];
        memset(results, 0, sizeof results);
        for (int i = 0; i < SHORT_BATCH; i++)
            REQUIRE(pthread_create(&tids[i], NULL, short_worker, &results[i]) == 0);
        for (int i = 0; i < SHORT_BATCH; i++)
            pthread_join(tids[i], NULL);
        /* The threads are gone: their blocks are resized or freed here, in memory whose
         * owner has exited. */
        for (int i = 0; i < SHORT_BATCH; i++) {
            for (int k = 0; k < SHORT_BLOCKS / 2; k++) {
                struct item it = results[i].kept[k];
                if (!it.ptr)
                    continue;
                pattern_apply(&it, true);
                if (k % 4 == 0) {
                    it = resize(it, &rng);
                    pattern_apply(&it, true);
                }
                free(it.ptr);
            }
        }
    }
    CHECK_EQ_U(atomic_load(&mismatches), 0);
    CHECK(mt_heap_check() == 0);
    mt_heap_stats(&after);
    CHECK_MSG(after.live_blocks <= before.live_blocks + SHORT_BATCH, "live blocks %zu -> %zu", before.live_blocks,
              after.live_blocks);
    /* Memory of exited threads is reused, not accumulated: 2400 threads fit in far less
     * than one segment each. */
    CHECK_MSG(after.mapped < before.mapped + ((size_t)256 << 20), "mapped %zu -> %zu", before.mapped,
              after.mapped);
}

/* A producer whose blocks another thread frees reuses the slots that come back instead of
 * handing out memory it never used: in rounds of 32 blocks, each freed by the consumer
 * before the next round starts, its blocks stay within the first 64 slots of its page
 * (the first refill's batch) however many rounds run. Each refill used to top up what came
 * back with new slots to a full batch, so the page grew to the blocks in flight plus a
 * batch (76 slots here). Lockstep rounds, so the bound does not depend on the scheduler. */
#define HANDOFF_BATCH 32
#define HANDOFF_ROUNDS 200
#define HANDOFF_SIZE 64 /* a class of its own: nothing else in the test uses it */

struct handoff {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    void *blocks[HANDOFF_BATCH];
    int full; /* blocks[] holds a batch for the consumer */
    int done;
};

static void *handoff_consumer(void *arg)
{
    struct handoff *h = arg;
    pthread_mutex_lock(&h->lock);
    for (;;) {
        while (!h->full && !h->done)
            pthread_cond_wait(&h->cond, &h->lock);
        if (!h->full)
            break;
        for (int i = 0; i < HANDOFF_BATCH; i++)
            free(h->blocks[i]);
        h->full = 0;
        pthread_cond_broadcast(&h->cond);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

static void *handoff_producer(void *arg)
{
    struct handoff *h = arg;
    uintptr_t lowest = UINTPTR_MAX, highest = 0;
    for (int r = 0; r < HANDOFF_ROUNDS; r++) {
        void *batch[HANDOFF_BATCH];
        for (int i = 0; i < HANDOFF_BATCH; i++) {
            batch[i] = malloc(HANDOFF_SIZE);
            memset(batch[i], r, HANDOFF_SIZE);
            uintptr_t a = (uintptr_t)batch[i];
            lowest = a < lowest ? a : lowest;
            highest = a > highest ? a : highest;
        }
        /* Hand the batch over and wait until it is freed. */
        pthread_mutex_lock(&h->lock);
        memcpy(h->blocks, batch, sizeof batch);
        h->full = 1;
        pthread_cond_broadcast(&h->cond);
        while (h->full)
            pthread_cond_wait(&h->cond, &h->lock);
        pthread_mutex_unlock(&h->lock);
    }
    pthread_mutex_lock(&h->lock);
    h->done = 1;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    return (void *)((highest - lowest) / HANDOFF_SIZE);
}

TEST(a_producer_reuses_what_its_consumer_frees_before_new_memory)
{
    struct handoff h = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    pthread_t producer, consumer;
    CHECK(pthread_create(&consumer, NULL, handoff_consumer, &h) == 0);
    CHECK(pthread_create(&producer, NULL, handoff_producer, &h) == 0);
    void *span;
    pthread_join(producer, &span);
    pthread_join(consumer, NULL);
    /* Slots between the lowest and the highest block handed out. */
    CHECK((uintptr_t)span < 2 * HANDOFF_BATCH);
}

TEST_MAIN()
