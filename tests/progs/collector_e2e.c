/* Recorded for real by tests/py/test_collector_e2e.py (mtrace-run with libmtrace.so): known
 * allocations at known functions in a thread, a fork child and an exec'd image, so the
 * collector's aggregates can be checked on what the producer really sends.
 *
 *   collector_e2e            root: a thread, a fork child, one block left live, then exec
 *   collector_e2e after-exec the exec'd image: 7 x malloc(70) freed, 3 blocks leaked, one
 *                            kept in a global; exits 9 (the leak scan runs at exit; an
 *                            image replaced by exec has no scan)
 *
 * Kept blocks are stored in a volatile global so the compiler keeps the store (a store to
 * a static that is never read may be dropped, and the block would then be leaked). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LEAKS 3
#define LEAK_SIZE 48
#define KEPT_SIZE 100
#define WORKER_BLOCKS 50
#define WORKER_SIZE 24
#define CHILD_BLOCKS 5
#define CHILD_SIZE 56
#define EXEC_BLOCKS 7
#define EXEC_SIZE 70
#define STACK_SCRUB_BYTES 16384

static void *volatile kept;
static volatile unsigned sink;

__attribute__((noinline)) static void leaky_alloc(void)
{
    for (int i = 0; i < LEAKS; i++) {
        char *p = malloc(LEAK_SIZE);
        p[0] = (char)i;
        sink += (unsigned)p[0];
    }
}

__attribute__((noinline)) static void keep_alloc(void)
{
    kept = malloc(KEPT_SIZE);
}

__attribute__((noinline)) static void *worker_alloc(void *arg)
{
    (void)arg;
    for (int i = 0; i < WORKER_BLOCKS; i++) {
        char *p = malloc(WORKER_SIZE);
        p[0] = 1;
        sink += (unsigned)p[0];
        free(p);
    }
    return NULL;
}

__attribute__((noinline)) static void child_alloc(void)
{
    for (int i = 0; i < CHILD_BLOCKS; i++) {
        char *p = malloc(CHILD_SIZE);
        sink += (unsigned)(p != NULL);
        free(p);
    }
}

__attribute__((noinline)) static void exec_alloc(void)
{
    for (int i = 0; i < EXEC_BLOCKS; i++) {
        char *p = malloc(EXEC_SIZE);
        sink += (unsigned)(p != NULL);
        free(p);
    }
}

__attribute__((noinline)) static void scrub_stack(void)
{
    volatile char pad[STACK_SCRUB_BYTES];
    memset((char *)pad, 0, sizeof pad);
    sink += pad[0];
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "after-exec") == 0) {
        exec_alloc();
        leaky_alloc();
        keep_alloc();
        scrub_stack();
        return 9;
    }
    keep_alloc(); /* live when this image is replaced: status unknown */
    pthread_t t;
    pthread_create(&t, NULL, worker_alloc, NULL);
    pthread_join(t, NULL);
    pid_t pid = fork();
    if (pid == 0) {
        child_alloc();
        exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    char *args[] = {argv[0], (char *)"after-exec", NULL};
    execv("/proc/self/exe", args);
    return 1;
}
