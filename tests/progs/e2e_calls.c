/* Recorded by tests/py/test_tracing_e2e.py through the real pipeline (mtrace-run ->
 * libmtrace.so -> trace.db): a known number of calls of every malloc-family function, each
 * with a marker size no libc call uses, so the test counts exactly this program's calls
 * among libc's own. Then the process ends the way argv[1] says, to prove that nothing is
 * lost however a process ends.
 *
 *   e2e_calls MODE
 *     return | exit | _exit | abort | segv | sigkill   the calls, then end that way
 *     fork-exec      the calls; a child makes them too and execs `e2e_calls return`
 *     threads        THREADS threads, each THREAD_PAIRS x (malloc; free), no other calls
 *     chain N        the calls, then exec `e2e_calls chain N-1`; `chain 0` returns
 *     tree D         fork two children running `tree D-1` (no exec); each process mallocs
 *                    TREE_BASE + D once and frees it
 *     handoff        the main thread mallocs HANDOFF_BLOCKS blocks of SIZE_HANDOFF, freeing
 *                    the first quarter itself (recording alone: solo sequence numbers),
 *                    then starts a worker and hands it the rest to free: the main thread's
 *                    mallocs reuse addresses the worker freed, across the switch to shared
 *                    sequence numbers (trace/ring.c)
 *     burst N        says "ready", waits for a line on stdin, makes N x (malloc(SIZE_BURST);
 *                    free), says "done" and returns: the test stops the collector
 *                    meanwhile, so the burst completes only if full rings grow instead of
 *                    waiting
 *
 * Marker sizes (one per function, see the table below): the test looks for these exact
 * (op, size) pairs in the decoded events. Every marker block is freed (one free each), but
 * in the exit modes one block is kept in a global (reachable) and one dropped (leaked).
 * Stdio is used only before the calls start or not at all, so no buffer is allocated
 * between the calls by us. */
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CALLS_PER_FUNCTION 100 /* enough to notice an off-by-one, cheap enough for 10 runs */
#define ALIGNMENT 64

/* Marker sizes: odd sizes around 40 KB that glibc's own allocations do not use. */
#define SIZE_MALLOC 40001
#define SIZE_CALLOC_COUNT 3
#define SIZE_CALLOC_EACH 13335 /* 3 x 13335 = 40005 */
#define SIZE_REALLOC_NEW 40007  /* realloc(NULL, n) */
#define SIZE_REALLOC_GROW 40009 /* realloc(p, n) of the block above */
#define SIZE_REALLOCARRAY_COUNT 1
#define SIZE_REALLOCARRAY_EACH 40011
#define SIZE_POSIX_MEMALIGN 40013
#define SIZE_ALIGNED_ALLOC 40064 /* a multiple of the alignment, as C11 asks */
#define SIZE_MEMALIGN 40015
#define SIZE_VALLOC 40017
#define SIZE_PVALLOC 40019
#define SIZE_KEPT 40021   /* kept in a global: reachable at a normal exit */
#define SIZE_LEAKED 40023 /* pointer dropped: leaked at a normal exit */

#define THREADS 8
#define THREAD_PAIRS 125000 /* 8 threads x 125k x (malloc + free) = 2M calls */
#define SIZE_THREAD 40025

#define TREE_BASE 40100 /* tree D mallocs TREE_BASE + D */

#define HANDOFF_BLOCKS 200000
#define HANDOFF_SLOTS 16
#define SIZE_HANDOFF 40027

/* NULL the compiler cannot see: GCC turns realloc(NULL, n) into malloc(n). */
static void *volatile no_block;
static void *volatile kept;          /* keeps SIZE_KEPT reachable */
static volatile unsigned long sink;  /* keeps the compiler from dropping the scrub */

static void touch(void *p)
{
    if (!p)
        abort();
    ((volatile char *)p)[0] = 1; /* no copy of the address in a global: it would be a root */
}

__attribute__((noinline)) static void leak_one(void)
{
    void *p = malloc(SIZE_LEAKED);
    touch(p);
}

/* Overwrites the dead stack below main's frame, where leak_one left its pointer. */
__attribute__((noinline)) static void scrub_stack(void)
{
    volatile char pad[16384];
    memset((char *)pad, 0, sizeof pad);
    sink += pad[0];
}

__attribute__((noinline)) static void make_calls(void)
{
    for (int i = 0; i < CALLS_PER_FUNCTION; i++) {
        void *p = malloc(SIZE_MALLOC);
        touch(p);
        free(p);
        p = calloc(SIZE_CALLOC_COUNT, SIZE_CALLOC_EACH);
        touch(p);
        free(p);
        p = realloc(no_block, SIZE_REALLOC_NEW);
        touch(p);
        p = realloc(p, SIZE_REALLOC_GROW);
        touch(p);
        free(p);
        p = reallocarray(NULL, SIZE_REALLOCARRAY_COUNT, SIZE_REALLOCARRAY_EACH);
        touch(p);
        free(p);
        if (posix_memalign(&p, ALIGNMENT, SIZE_POSIX_MEMALIGN) != 0)
            abort();
        touch(p);
        free(p);
        p = aligned_alloc(ALIGNMENT, SIZE_ALIGNED_ALLOC);
        touch(p);
        free(p);
        p = memalign(ALIGNMENT, SIZE_MEMALIGN);
        touch(p);
        free(p);
        p = valloc(SIZE_VALLOC);
        touch(p);
        free(p);
        p = pvalloc(SIZE_PVALLOC);
        touch(p);
        free(p);
    }
    kept = malloc(SIZE_KEPT);
    touch(kept);
    leak_one();
    scrub_stack();
}

static void *thread_calls(void *arg)
{
    (void)arg;
    for (int i = 0; i < THREAD_PAIRS; i++) {
        void *p = malloc(SIZE_THREAD);
        touch(p);
        free(p);
    }
    return NULL;
}

static int run_threads(void)
{
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, thread_calls, NULL) != 0)
            return 1;
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    return 0;
}

/* A bounded queue from the main thread to the worker (mutex and condition variables
 * allocate nothing). NULL ends it. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    void *slot[HANDOFF_SLOTS];
    unsigned head, tail;
} handoff = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0, 0};

static void handoff_push(void *p)
{
    pthread_mutex_lock(&handoff.lock);
    while (handoff.head - handoff.tail == HANDOFF_SLOTS)
        pthread_cond_wait(&handoff.changed, &handoff.lock);
    handoff.slot[handoff.head++ % HANDOFF_SLOTS] = p;
    pthread_cond_broadcast(&handoff.changed);
    pthread_mutex_unlock(&handoff.lock);
}

static void *handoff_worker(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&handoff.lock);
        while (handoff.head == handoff.tail)
            pthread_cond_wait(&handoff.changed, &handoff.lock);
        void *p = handoff.slot[handoff.tail++ % HANDOFF_SLOTS];
        pthread_cond_broadcast(&handoff.changed);
        pthread_mutex_unlock(&handoff.lock);
        if (!p)
            return NULL;
        free(p);
    }
}

static int run_handoff(void)
{
    pthread_t worker;
    for (int i = 0; i < HANDOFF_BLOCKS; i++) {
        void *p = malloc(SIZE_HANDOFF);
        touch(p);
        if (i < HANDOFF_BLOCKS / 4) {
            free(p);
            continue;
        }
        if (i == HANDOFF_BLOCKS / 4 && pthread_create(&worker, NULL, handoff_worker, NULL) != 0)
            return 1;
        handoff_push(p);
    }
    handoff_push(NULL);
    pthread_join(worker, NULL);
    return 0;
}

static int run_tree(int depth)
{
    void *p = malloc(TREE_BASE + (size_t)depth);
    touch(p);
    free(p);
    if (depth == 0)
        return 0;
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        kids[i] = fork();
        if (kids[i] < 0)
            return 1;
        if (kids[i] == 0)
            _exit(run_tree(depth - 1));
    }
    int failed = 0;
    for (int i = 0; i < 2; i++) {
        int status;
        if (waitpid(kids[i], &status, 0) != kids[i] || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }
    return failed;
}

#define SIZE_BURST 40009

static int run_burst(long n)
{
    char line[16];
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 1;
    for (long i = 0; i < n; i++) {
        void *p = malloc(SIZE_BURST);
        __asm__ volatile("" : : "r"(p) : "memory");
        free(p);
    }
    printf("done\n");
    fflush(stdout);
    return 0;
}

static void exec_self(const char *self, const char *mode, const char *arg)
{
    char *argv[] = {(char *)self, (char *)mode, (char *)arg, NULL};
    execv("/proc/self/exe", argv);
    _exit(126);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "return";
    if (!strcmp(mode, "threads"))
        return run_threads();
    if (!strcmp(mode, "tree"))
        return run_tree(argc > 2 ? atoi(argv[2]) : 0);
    if (!strcmp(mode, "handoff"))
        return run_handoff();
    if (!strcmp(mode, "burst"))
        return run_burst(argc > 2 ? atol(argv[2]) : 0);

    make_calls();
    if (!strcmp(mode, "return"))
        return 5;
    if (!strcmp(mode, "exit"))
        exit(6);
    if (!strcmp(mode, "_exit"))
        _exit(7);
    if (!strcmp(mode, "abort"))
        abort();
    if (!strcmp(mode, "segv")) {
        *(volatile int *)(sink & 0) = 1; /* address 0, hidden from the compiler */
        return 1;
    }
    if (!strcmp(mode, "sigkill")) {
        raise(SIGKILL);
        return 1;
    }
    if (!strcmp(mode, "fork-exec")) {
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid == 0) {
            make_calls();
            exec_self(argv[0], "return", NULL);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
            return 1;
        return WEXITSTATUS(status) == 5 ? 0 : 1;
    }
    if (!strcmp(mode, "chain")) {
        int n = argc > 2 ? atoi(argv[2]) : 0;
        if (n == 0)
            return 0;
        char next[16];
        snprintf(next, sizeof next, "%d", n - 1);
        exec_self(argv[0], "chain", next);
    }
    return 2;
}
