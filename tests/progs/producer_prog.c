// link: -lunwind
/* A program that makes known malloc-family calls, for tests/py/test_producer.py: run
 * under libmtrace.so with the fake collector, its call counts must come out exact.
 * Usage: producer_prog MODE [args]; every mode prints what the test needs to know. */
#define _GNU_SOURCE
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mtrace.h"

/* Resolved from libmtrace.so when it is preloaded; the program links without it. */
#pragma weak mt_trace_mark
#pragma weak mt_trace_pause
#pragma weak mt_trace_resume
#pragma weak mt_trace_active
#pragma weak mt_arena_create
#pragma weak mt_arena_push
#pragma weak mt_arena_push_zero
#pragma weak mt_arena_pop_to
#pragma weak mt_arena_pos
#pragma weak mt_arena_release

extern char **environ;

/* The size the fake collector counts apart (FAKE_TAG_SIZE's default): libc's own calls
 * never use it, so the counts of this program's calls are exact. */
#define TAG 1234

static int per_thread;

static void *thread_body(void *arg)
{
    (void)arg;
    for (int i = 0; i < per_thread; i++) {
        void *p = malloc(TAG);
        free(p);
    }
    return NULL;
}

/* N malloc/free pairs in each of T threads, plus fixed counts of the rest of the family. */
static int mode_threads(int n, int t)
{
    per_thread = n;
    pthread_t th[64];
    for (int i = 0; i < t; i++)
        pthread_create(&th[i], NULL, thread_body, NULL);
    for (int i = 0; i < t; i++)
        pthread_join(th[i], NULL);
    void *c = calloc(3, 5);
    c = realloc(c, 100000); /* moves */
    void *a = NULL;
    if (posix_memalign(&a, 64, 100) == 0)
        free(a);
    free(aligned_alloc(128, 256));
    free(memalign(32, 33));
    free(valloc(10));
    free(c);
    free(NULL); /* not recorded */
    return 0;
}

static void mallocs(int n)
{
    for (int i = 0; i < n; i++)
        free(malloc(TAG));
}

static int mode_fork(int depth)
{
    mallocs(10);
    if (depth == 0)
        return 0;
    pid_t pid = fork();
    if (pid == 0) {
        mallocs(5);
        int rc = mode_fork(depth - 1);
        exit(rc);
    }
    int status;
    waitpid(pid, &status, 0);
    mallocs(3);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

/* exec itself `depth` times (each image makes 7 pairs), optionally after a fork. */
static int mode_exec(const char *self, int depth, int with_fork)
{
    mallocs(7);
    if (depth == 0)
        return 0;
    char arg[16];
    snprintf(arg, sizeof arg, "%d", depth - 1);
    char *args[] = {(char *)self, (char *)"exec", arg, with_fork ? (char *)"1" : (char *)"0", NULL};
    if (with_fork) {
        pid_t pid = fork();
        if (pid == 0) {
            execv(self, args);
            _exit(127);
        }
        int status;
        waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    }
    execv(self, args);
    return 127;
}

/* A vfork child that calls _exit must not end its parent's trace. */
static int mode_vfork(void)
{
    mallocs(2);
    pid_t pid = vfork();
    if (pid == 0)
        _exit(5);
    int status;
    waitpid(pid, &status, 0);
    mallocs(3);
    return WIFEXITED(status) && WEXITSTATUS(status) == 5 ? 0 : 1;
}

static int mode_spawn(const char *self)
{
    mallocs(4);
    pid_t pid;
    char *args[] = {(char *)self, (char *)"pairs", (char *)"6", NULL};
    if (posix_spawn(&pid, self, NULL, NULL, args, environ) != 0)
        return 1;
    int status;
    waitpid(pid, &status, 0);
    mallocs(4);
    return 0;
}

static int mode_die(const char *how, int n)
{
    mallocs(n);
    void *keep = malloc(100); /* live at death */
    (void)keep;
    fflush(stdout);
    if (strcmp(how, "abort") == 0)
        abort();
    if (strcmp(how, "segv") == 0)
        *(volatile int *)(uintptr_t)8 = 1;
    if (strcmp(how, "kill") == 0)
        raise(SIGKILL);
    if (strcmp(how, "_exit") == 0)
        _exit(3);
    return 0;
}

static volatile sig_atomic_t handler_calls;

static void on_signal(int sig)
{
    (void)sig;
    void *p = malloc(TAG);
    free(p);
    handler_calls++;
}

/* Main mallocs in a loop while a timer interrupts it with handlers that malloc too. */
static int mode_signal(int n)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 50}, {0, 50}};
    setitimer(ITIMER_REAL, &it, NULL);
    for (int i = 0; i < n; i++)
        free(malloc(TAG));
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("handler_calls %d\n", (int)handler_calls);
    return 0;
}

static int mode_unwind(int n)
{
    for (int i = 0; i < n; i++) {
        void *frames[32];
        int k = unw_backtrace(frames, 32);
        char *p = malloc(TAG + (size_t)k * 0);
        free(p);
    }
    return 0;
}

/* Not static: the compiler must keep the stores to it. */
void *volatile reachable_root;

/* Leaks 5 blocks of 333 bytes; a block of 16 (from a global) and one of 222 (only from
 * that block) stay reachable. */
static __attribute__((noinline)) void clobber_stack(void)
{
    /* The scan is conservative: stale copies of the leaked pointers in dead stack frames
     * would keep them alive. Overwrite the stack this program used. */
    char junk[16384];
    explicit_bzero(junk, sizeof junk); /* not elided as a dead store */
}

static __attribute__((noinline)) void make_leaks(void)
{
    void **chain = malloc(16);
    chain[0] = malloc(222);
    chain[1] = NULL;
    reachable_root = chain;
    for (int i = 0; i < 5; i++) {
        void *p = malloc(333); /* leaked: the last pointer is overwritten */
        memset(p, 0, 333);
        p = NULL;
    }
}

static int mode_leak(void)
{
    make_leaks();
    clobber_stack();
    return 0;
}

static int mode_realloc(void)
{
    void *volatile none = NULL;    /* GCC turns realloc(NULL, n) into malloc(n) */
    void *p = realloc(none, 10);   /* 1: a malloc-like realloc */
    p = realloc(p, 5000);          /* 2: moves */
    void *fail = realloc(p, (size_t)1 << 62); /* fails: SKIP, p stays live */
    if (fail)
        return 1;
    p = realloc(p, 0);             /* frees: recorded as free */
    return p != NULL;
}

static int mode_marks(void)
{
    mt_trace_mark("start");
    mallocs(2);
    mt_trace_pause();
    mallocs(100); /* not recorded */
    mt_trace_resume();
    mallocs(3);
    mt_trace_mark("end");
    printf("active %d\n", mt_trace_active());
    return 0;
}

static void call_site_marker(void);
static void call_site_marker(void)
{
    void *p = malloc(77);
    free(p);
}

static int mode_callsite(void)
{
    printf("marker %llu\n", (unsigned long long)(uintptr_t)&call_site_marker);
    call_site_marker();
    return 0;
}

static int mode_double_free(void)
{
    void *p = malloc(50);
    free(p);
    free(p);
    return 0;
}

static int mode_realloc_freed(void)
{
    void *p = malloc(50);
    free(p);
    p = realloc(p, 100);
    return p != NULL;
}

/* Three pushes, a pop and a release: region events 3 and 2. */
static int mode_regions(void)
{
    mt_arena_t *arena = mt_arena_create(1 << 20);
    if (!arena)
        return 2; /* the region could not be reserved: the test sees a failed run */
    mt_arena_push(arena, 100);
    size_t pos = mt_arena_pos(arena);
    mt_arena_push(arena, 200);
    mt_arena_push_zero(arena, 300);
    mt_arena_pop_to(arena, pos);
    mt_arena_release(arena);
    return 0;
}

static int mode_bench(int n);

/* The same loop `depth` calls deep: stack capture costs per frame. */
static __attribute__((noinline)) int bench_at_depth(int n, int depth)
{
    if (depth > 0) {
        int rc = bench_at_depth(n, depth - 1);
        __asm__ volatile("" ::: "memory"); /* not a tail call */
        return rc;
    }
    return mode_bench(n);
}

static int mode_bench(int n)
{
    struct timespec a, b, ca, cb;
    clock_gettime(CLOCK_MONOTONIC, &a);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ca);
    for (int i = 0; i < n; i++) {
        void *p = malloc(32);
        __asm__ volatile("" : : "r"(p) : "memory");
        free(p);
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cb);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
    double cpu = (double)(cb.tv_sec - ca.tv_sec) * 1e9 + (double)(cb.tv_nsec - ca.tv_nsec);
    /* Wall time includes waits for the collector and preemption by other jobs; the
     * thread's CPU time is the producer's own cost. */
    printf("ns_per_event %.1f cpu_ns_per_event %.1f\n", ns / (2.0 * n), cpu / (2.0 * n));
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : "";
    int a = argc > 2 ? atoi(argv[2]) : 0;
    int b = argc > 3 ? atoi(argv[3]) : 0;
    if (strcmp(mode, "threads") == 0)
        return mode_threads(a, b);
    if (strcmp(mode, "pairs") == 0)
        return mallocs(a), 0;
    if (strcmp(mode, "fork") == 0)
        return mode_fork(a);
    if (strcmp(mode, "exec") == 0)
        return mode_exec(argv[0], a, b);
    if (strcmp(mode, "vfork") == 0)
        return mode_vfork();
    if (strcmp(mode, "spawn") == 0)
        return mode_spawn(argv[0]);
    if (strcmp(mode, "die") == 0)
        return mode_die(argv[2], b);
    if (strcmp(mode, "signal") == 0)
        return mode_signal(a);
    if (strcmp(mode, "unwind") == 0)
        return mode_unwind(a);
    if (strcmp(mode, "leak") == 0)
        return mode_leak();
    if (strcmp(mode, "realloc") == 0)
        return mode_realloc();
    if (strcmp(mode, "marks") == 0)
        return mode_marks();
    if (strcmp(mode, "callsite") == 0)
        return mode_callsite();
    if (strcmp(mode, "double_free") == 0)
        return mode_double_free();
    if (strcmp(mode, "regions") == 0)
        return mode_regions();
    if (strcmp(mode, "realloc_freed") == 0)
        return mode_realloc_freed();
    if (strcmp(mode, "bench") == 0)
        return bench_at_depth(a, b);
    if (strcmp(mode, "exitcode") == 0)
        return 42;
    return 2;
}
