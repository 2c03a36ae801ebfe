/* Recorded by tests/py/test_tracing_e2e.py: malloc from the places a tracer easily misses,
 * each with its own marker size and a known count, so the test checks that every call is
 * in trace.db:
 *
 * - a constructor and a destructor of the program (__attribute__((constructor/destructor)))
 * - a static C++ object's destructor and an atexit handler
 * - a pthread key destructor and a C++ thread_local object's destructor, in a worker
 *   thread (run at its exit) and the thread_local also in the main thread (run by exit)
 * - with argv[1] "signal" only (malloc in a handler is undefined: the debug allocator's
 *   locks deadlock, and tests/py/test_debug_mode.py runs every program without arguments),
 *   a SIGALRM handler (setitimer) firing while the main thread mallocs in a loop (small
 *   blocks, see SIZE_LOOP): the loop
 *   runs until the handler has run SIGNALS_WANTED times, then the signal is blocked and
 *   both counts are printed ("loop N handler M") for the test to compare.
 *
 * Every marker block is freed in the same place it was allocated. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

enum {
    CALLS = 10,              /* malloc + free pairs made at each hook */
    SIZE_CTOR = 30001,
    SIZE_DTOR = 30003,
    SIZE_STATIC_DTOR = 30005,
    SIZE_ATEXIT = 30007,
    SIZE_KEY_DTOR = 30009,
    SIZE_TLS_DTOR = 30011,
    /* Small sizes of two different classes for the loop and the handler: the allocator,
     * like glibc's, is not async-signal-safe (a handler that mallocs a medium block while
     * its thread is inside a medium malloc waits forever for the arena lock it holds);
     * small blocks of different classes touch different pages, and the recorder itself
     * nests (docs/tracer.md, "Reentrancy"), which is what this checks. */
    SIZE_LOOP = 1201,        /* class 1280 */
    SIZE_SIGNAL = 2001,      /* class 2048 */
    SIGNALS_WANTED = 20,     /* handler runs before the loop stops */
    TIMER_US = 500,          /* timer period: often enough to land inside malloc now and then */
};

static volatile unsigned long sink;
static volatile sig_atomic_t handled;

static void pairs(size_t size, int n)
{
    for (int i = 0; i < n; i++) {
        void *p = malloc(size);
        if (!p)
            abort();
        static_cast<volatile char *>(p)[0] = 1;
        sink += reinterpret_cast<unsigned long>(p);
        free(p);
    }
}

__attribute__((constructor)) static void ctor(void) { pairs(SIZE_CTOR, CALLS); }
__attribute__((destructor)) static void dtor(void) { pairs(SIZE_DTOR, CALLS); }
static void at_exit_handler(void) { pairs(SIZE_ATEXIT, CALLS); }

struct StaticObject {
    ~StaticObject() { pairs(SIZE_STATIC_DTOR, CALLS); }
};
static StaticObject static_object;

struct ThreadObject {
    int used = 0;
    ~ThreadObject() { pairs(SIZE_TLS_DTOR, CALLS); }
};
static thread_local ThreadObject thread_object;

static pthread_key_t key;
static void key_destructor(void *value)
{
    pairs(SIZE_KEY_DTOR, CALLS);
    free(value);
}

static void *worker(void *)
{
    thread_object.used = 1;                  /* constructs it: destroyed at thread exit */
    pthread_setspecific(key, malloc(SIZE_KEY_DTOR));
    return nullptr;
}

static void on_alarm(int)
{
    pairs(SIZE_SIGNAL, 1);
    handled = handled + 1;
}

int main(int argc, char **argv)
{
    atexit(at_exit_handler);
    thread_object.used = 1; /* the main thread's copy is destroyed by exit */
    if (pthread_key_create(&key, key_destructor) != 0)
        return 1;
    pthread_t t;
    if (pthread_create(&t, nullptr, worker, nullptr) != 0 || pthread_join(t, nullptr) != 0)
        return 1;

    if (argc < 2 || strcmp(argv[1], "signal") != 0)
        return 0;
    /* Each class's page is made now, not while the other side may be inside malloc
     * (sizes of the same classes that are not markers). */
    pairs(SIZE_LOOP + 1, 1);
    pairs(SIZE_SIGNAL + 1, 1);
    struct sigaction sa = {};
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, nullptr);
    struct itimerval every = {{0, TIMER_US}, {0, TIMER_US}};
    setitimer(ITIMER_REAL, &every, nullptr);
    long loops = 0;
    while (handled < SIGNALS_WANTED) {
        pairs(SIZE_LOOP, 1);
        loops++;
    }
    sigset_t alarm_only;
    sigemptyset(&alarm_only);
    sigaddset(&alarm_only, SIGALRM);
    sigprocmask(SIG_BLOCK, &alarm_only, nullptr); /* no handler runs after the counts are read */
    struct itimerval off = {};
    setitimer(ITIMER_REAL, &off, nullptr);
    printf("loop %ld handler %d\n", loops, static_cast<int>(handled));
    return 0;
}
