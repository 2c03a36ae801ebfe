/* xthread: cross-thread producer/consumer. One thread allocates blocks of 16-512 B,
 * writes into them and passes them through a lock-free single-producer single-consumer
 * ring; a second thread reads and frees them. Every free is therefore remote: it measures
 * how an allocator returns memory to the thread (or arena) that owns it, the pattern of
 * work queues and message passing.
 *
 * The two threads are pinned to two different CPUs when the process may use two: left to
 * the scheduler they sometimes shared one core, taking turns by ring-fulls without any
 * cache line crossing cores, and that run took a quarter of the time of the others, for
 * every allocator; the fastest of five runs then measured the placement, not the
 * allocator. */
#define _GNU_SOURCE
#include "bench.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#define XTHREAD_OPS      5000000ull /* blocks passed at scale 1 */
#define XTHREAD_RING     1024u      /* ring slots, a power of two; deep enough to batch */
#define XTHREAD_MIN_SIZE 16
#define XTHREAD_MAX_SIZE 512
#define CACHE_LINE       64

/* The first two CPUs the process may run on; -1: fewer than two (no pinning). */
static int cpus[2] = {-1, -1};

static void find_two_cpus(void)
{
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) < 2)
        return;
    int found = 0;
    for (int c = 0; c < CPU_SETSIZE && found < 2; c++)
        if (CPU_ISSET(c, &allowed))
            cpus[found++] = c;
}

static void pin_self(int which)
{
    if (cpus[which] < 0)
        return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpus[which], &one);
    pthread_setaffinity_np(pthread_self(), sizeof one, &one);
}

typedef struct {
    _Alignas(CACHE_LINE) _Atomic uint64_t head; /* next slot the producer fills */
    _Alignas(CACHE_LINE) _Atomic uint64_t tail; /* next slot the consumer empties */
    _Alignas(CACHE_LINE) unsigned char *slot[XTHREAD_RING];
    uint64_t ops;
} ring;

/* Written at the start of each block; 8 bytes, so the last byte of the smallest block
 * (16 B) is free for the tail mark. */
typedef struct {
    uint32_t seq, size;
} header;

static void *consumer(void *arg)
{
    ring *r = arg;
    uint64_t sum = 0;
    pin_self(1);
    for (uint64_t t = 0; t < r->ops; t++) {
        /* Spin with a yield: on a loaded machine the producer needs the core. */
        while (atomic_load_explicit(&r->head, memory_order_acquire) == t)
            sched_yield();
        unsigned char *p = r->slot[t % XTHREAD_RING];
        atomic_store_explicit(&r->tail, t + 1, memory_order_release);
        header h;
        memcpy(&h, p, sizeof h);
        sum = bench_mix(sum, h.seq ^ h.size ^ p[h.size - 1]);
        free(p);
    }
    return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv)
{
    static ring r;
    r.ops = bench_ops(XTHREAD_OPS, bench_scale(argc, argv));
    bench_rng rng = { BENCH_SEED };
    pthread_t tid;
    find_two_cpus();
    if (pthread_create(&tid, NULL, consumer, &r) != 0)
        return 1;
    pin_self(0);

    for (uint64_t h = 0; h < r.ops; h++) {
        size_t n = (size_t)bench_range(&rng, XTHREAD_MIN_SIZE, XTHREAD_MAX_SIZE);
        unsigned char *p = malloc(n);
        if (!p)
            return 1;
        header hd = { (uint32_t)h, (uint32_t)n };
        memcpy(p, &hd, sizeof hd);
        p[n - 1] = (unsigned char)(h * 7);
        while (h - atomic_load_explicit(&r.tail, memory_order_acquire) >= XTHREAD_RING)
            sched_yield();
        r.slot[h % XTHREAD_RING] = p;
        atomic_store_explicit(&r.head, h + 1, memory_order_release);
    }
    void *sum;
    pthread_join(tid, &sum);
    bench_print_checksum((uint64_t)(uintptr_t)sum);
    return 0;
}
