/* fork() while other threads allocate: the child must never hang on a lock a vanished
 * thread held, must be able to allocate (also from a new thread), free blocks that those
 * threads allocated, and find its heap consistent. A hang fails through alarm() with a
 * message rather than through the test runner's time limit. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#include "check.h"
#include "mtrace.h"

#define WORKERS 4
#define FORKS 60
#define PARKED 64
/* Seconds a child gets to allocate, free and exit: it needs milliseconds; only a deadlock
 * takes this long. */
#define CHILD_TIMEOUT_S 20

enum child_status { CHILD_OK = 0, CHILD_BAD_CONTENT = 3, CHILD_HEAP_CHECK = 4, CHILD_NO_MEMORY = 5 };

static atomic_bool stop_workers;
/* Blocks the workers hand over and never touch again: freed by the main thread in the
 * parent, and by the child after a fork (so it frees memory of threads it does not have). */
static _Atomic(unsigned char *) parked[PARKED];
static atomic_long worker_ops;

static size_t parked_size(const unsigned char *p)
{
    return 16 + ((uintptr_t)p >> 4) % 3000;
}

static unsigned char parked_byte(const unsigned char *p)
{
    return (unsigned char)(((uintptr_t)p >> 4) * 37u + 11u);
}

static bool parked_ok(const unsigned char *p)
{
    size_t n = parked_size(p);
    for (size_t i = 0; i < n; i++)
        if (p[i] != parked_byte(p))
            return false;
    return true;
}

static void *worker(void *arg)
{
    uint64_t x = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    void *mine[32] = {0};
    while (!atomic_load_explicit(&stop_workers, memory_order_relaxed)) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        unsigned slot = (unsigned)(x % 32);
        free(mine[slot]);
        size_t size = (x >> 8) % 100 == 0 ? 20000 + (x >> 20) % 300000 : (x >> 8) % 2000;
        mine[slot] = (x >> 40) % 3 == 0 ? calloc(1, size) : malloc(size);
        if (mine[slot])
            memset(mine[slot], 0x42, size);
        /* Now and then park a block of a size derived from its address (the child checks
         * both without knowing who made it). */
        if ((x >> 32) % 8 == 0) {
            unsigned char *p = malloc(3100); /* > the largest parked_size() */
            memset(p, parked_byte(p), parked_size(p));
            unsigned char *expected = NULL;
            if (!atomic_compare_exchange_strong(&parked[(x >> 16) % PARKED], &expected, p))
                free(p);
        }
        atomic_fetch_add_explicit(&worker_ops, 1, memory_order_relaxed);
    }
    for (unsigned i = 0; i < 32; i++)
        free(mine[i]);
    return NULL;
}

static void *child_thread(void *arg)
{
    (void)arg;
    void *blocks[200];
    for (int i = 0; i < 200; i++) {
        blocks[i] = malloc((size_t)(i * 97) % 9000 + 1);
        if (!blocks[i])
            return (void *)1;
    }
    for (int i = 0; i < 200; i++)
        free(blocks[i]);
    return NULL;
}

/* In the child: allocate on every tier, free what the vanished threads parked, run a new
 * thread, check the heap, exit. */
static int child_main(void)
{
    void *blocks[64];
    for (int i = 0; i < 64; i++) {
        size_t size = i % 16 == 0 ? (size_t)200000 : i % 8 == 0 ? (size_t)30000 : (size_t)i * 40;
        blocks[i] = malloc(size);
        if (!blocks[i])
            return CHILD_NO_MEMORY;
        memset(blocks[i], i, size);
    }
    for (int i = 0; i < PARKED; i++) {
        unsigned char *p = atomic_exchange(&parked[i], NULL);
        if (p && !parked_ok(p))
            return CHILD_BAD_CONTENT;
        free(p);
    }
    pthread_t t;
    void *thread_rc = (void *)1;
    if (pthread_create(&t, NULL, child_thread, NULL) != 0 || pthread_join(t, &thread_rc) != 0 || thread_rc)
        return CHILD_NO_MEMORY;
    for (int i = 0; i < 64; i++)
        free(blocks[i]);
    if (mt_heap_check() != 0)
        return CHILD_HEAP_CHECK;
    return CHILD_OK;
}

static volatile pid_t waiting_for;

static void on_alarm(int sig)
{
    (void)sig;
    char msg[128];
    int n = snprintf(msg, sizeof msg, "test_fork: child %d did not exit within %d s: deadlock after fork\n",
                     (int)waiting_for, CHILD_TIMEOUT_S);
    if (n > 0)
        (void)!write(2, msg, (size_t)n);
    kill(waiting_for, SIGKILL);
    _exit(1);
}

TEST(fork_while_threads_allocate)
{
    signal(SIGALRM, on_alarm);
    pthread_t tids[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        REQUIRE(pthread_create(&tids[i], NULL, worker, (void *)(intptr_t)(i + 1)) == 0);
    int failures = 0;
    for (int f = 0; f < FORKS; f++) {
        /* Let the workers make progress between forks (wait for work, not for time). */
        long start = atomic_load(&worker_ops);
        while (atomic_load(&worker_ops) < start + 200)
            sched_yield();
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0)
            _exit(child_main());
        REQUIRE(pid > 0);
        waiting_for = pid;
        alarm(CHILD_TIMEOUT_S);
        int status = 0;
        pid_t got;
        do
            got = waitpid(pid, &status, 0);
        while (got < 0 && errno == EINTR);
        alarm(0);
        bool ok = got == pid && WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK;
        if (!ok && failures++ < 5)
            CHECK_MSG(ok, "fork %d: child %s %d", f, WIFSIGNALED(status) ? "killed by signal" : "exited with",
                      WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        /* The parent also frees what was parked, as the child did with its copy. */
        for (int i = f % 2; i < PARKED; i += 2) {
            unsigned char *p = atomic_exchange(&parked[i], NULL);
            if (p)
                CHECK(parked_ok(p));
            free(p);
        }
    }
    CHECK_EQ_U(failures, 0);
    atomic_store(&stop_workers, true);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(tids[i], NULL);
    for (int i = 0; i < PARKED; i++)
        free(atomic_exchange(&parked[i], NULL));
    CHECK(mt_heap_check() == 0);
}

TEST_MAIN()
