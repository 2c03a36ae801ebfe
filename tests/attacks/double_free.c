/* Double free: free the same block twice, then see whether the allocator hands it out
 * twice (two live blocks at the same address: the classic way to turn a double free into
 * an arbitrary write).
 *
 *   immediate     free(p); free(p);
 *   delayed       past the thread cache: fill glibc's tcache with 7 other frees, then
 *                 free(p); free(q); free(p) (the "fastbin dup", whose top-of-bin check
 *                 only compares p with q);
 *   cross_thread  a second thread frees p, then the main thread frees it again (glibc's
 *                 tcache key check only scans the freeing thread's own cache). */
#include <pthread.h>

#include "attack.h"

/* glibc's tcache holds 7 blocks per size: the 8th free of a size reaches the arena. */
#define TCACHE_FILL 7
#define DRAIN (TCACHE_FILL + 3)

static size_t request;
static void *victim;
static void *thread_got;
static pthread_barrier_t step;

static void check_duplicates(void **got, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (got[i] && got[i] == got[j])
                attack_succeeded("malloc returned %p twice (allocations %zu and %zu)", got[i], i, j);
}

static void immediate(void)
{
    void *p = malloc(request);
    free(p);
    free(launder(p));
    void *got[2] = {malloc(request), malloc(request)};
    check_duplicates(got, 2);
    free(got[0]);
    free(got[1]);
    attack_failed("the second free had no effect");
}

static void delayed(void)
{
    void *fill[TCACHE_FILL];
    for (int i = 0; i < TCACHE_FILL; i++)
        fill[i] = malloc(request);
    void *p = malloc(request);
    void *q = malloc(request);
    for (int i = 0; i < TCACHE_FILL; i++)
        free(fill[i]);
    free(p);
    free(q);
    free(launder(p));
    void *got[DRAIN];
    for (int i = 0; i < DRAIN; i++)
        got[i] = malloc(request);
    check_duplicates(got, DRAIN);
    for (int i = 0; i < DRAIN; i++)
        free(got[i]);
    attack_failed("the delayed second free had no effect");
}

static void *other_thread(void *arg)
{
    (void)arg;
    free(victim);
    pthread_barrier_wait(&step); /* 1: freed here */
    pthread_barrier_wait(&step); /* 2: main freed it again and allocated */
    thread_got = malloc(request);
    pthread_barrier_wait(&step); /* 3: done */
    pthread_barrier_wait(&step); /* 4: main checked; stay alive until then */
    free(thread_got);
    return NULL;
}

static void cross_thread(void)
{
    pthread_t t;
    pthread_barrier_init(&step, NULL, 2);
    victim = malloc(request);
    if (pthread_create(&t, NULL, other_thread, NULL) != 0)
        exit(ATTACK_USAGE);
    pthread_barrier_wait(&step);
    free(launder(victim));
    void *mine = malloc(request);
    pthread_barrier_wait(&step);
    pthread_barrier_wait(&step);
    if (mine && mine == thread_got)
        attack_succeeded("both threads got %p", mine);
    pthread_barrier_wait(&step);
    pthread_join(t, NULL);
    free(mine);
    attack_failed("the cross-thread double free had no effect");
}

int main(int argc, char **argv)
{
    request = attack_request(attack_tier(argc, argv));
    const char *variant = attack_variant(argc, argv, "immediate");
    if (strcmp(variant, "immediate") == 0)
        immediate();
    else if (strcmp(variant, "delayed") == 0)
        delayed();
    else if (strcmp(variant, "cross_thread") == 0)
        cross_thread();
    return ATTACK_USAGE;
}
