/* Recorded by tests/py/test_tracing_e2e.py: the leak scan's classification in the cases
 * report_leaks.c does not cover, each at its own function and size:
 *
 * - leak_chain: a block (LEAK_HEAD) holding the only pointer to another (LEAK_TAIL), the
 *   first dropped: both leaked (reachable only from a leaked block is leaked)
 * - keep_chain: a global -> CHAIN_1 -> CHAIN_2 -> CHAIN_3: all three reachable
 * - hold_on_stack: a worker thread keeps its block (THREAD_HELD) only in a local variable
 *   and is still blocked when main returns: reachable (thread stacks are roots)
 *
 * Pointers made in callees are scrubbed from main's dead stack before it returns. */
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>

#define LEAK_HEAD 1111
#define LEAK_TAIL 2222
#define CHAIN_1 3331
#define CHAIN_2 3332
#define CHAIN_3 3333
#define THREAD_HELD 4441
#define STACK_SCRUB_BYTES 16384

static void **volatile chain_root; /* the only way to CHAIN_1 */
static volatile unsigned long sink;
static sem_t worker_ready;
static sem_t never_posted;

__attribute__((noinline)) static void leak_chain(void)
{
    void **head = malloc(LEAK_HEAD);
    head[0] = malloc(LEAK_TAIL); /* the only copy: never kept in a global such as a checksum */
}

__attribute__((noinline)) static void keep_chain(void)
{
    void **one = malloc(CHAIN_1);
    void **two = malloc(CHAIN_2);
    one[0] = two;
    two[0] = malloc(CHAIN_3);
    chain_root = one;
}

__attribute__((noinline)) static void *hold_on_stack(void *arg)
{
    (void)arg;
    void *volatile held = malloc(THREAD_HELD);
    memset(held, 0, THREAD_HELD);
    sem_post(&worker_ready);
    while (sem_wait(&never_posted) != 0) /* still blocked here when the process exits */
        ;
    return held;
}

__attribute__((noinline)) static void scrub_stack(void)
{
    volatile char pad[STACK_SCRUB_BYTES];
    memset((char *)pad, 0, sizeof pad);
    sink += pad[0];
}

int main(void)
{
    sem_init(&worker_ready, 0, 0);
    sem_init(&never_posted, 0, 0);
    pthread_t t;
    if (pthread_create(&t, NULL, hold_on_stack, NULL) != 0)
        return 1;
    while (sem_wait(&worker_ready) != 0)
        ;
    leak_chain();
    keep_chain();
    scrub_stack();
    return 0;
}
