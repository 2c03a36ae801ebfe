/* A minimal test harness for mtrace's C tests.
 *
 *   TEST(name) { CHECK(x == 1); CHECK_EQ_U(a, b); ... }
 *   int main(void) { return run_tests(); }      // or TEST_MAIN()
 *
 * CHECK failures print file:line and the expression and mark the test failed (the test
 * goes on, so one run shows every broken assertion). expect_death() runs a function in a
 * forked child and asserts it dies of the given signal with a message on stderr: the way
 * to test that the allocator aborts on heap bugs. Uses stdio freely: the tests are normal
 * programs whose malloc happens to be ours. */
#ifndef MT_TESTS_CHECK_H
#define MT_TESTS_CHECK_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void (*test_fn)(void);
struct test_case {
    const char *name;
    test_fn fn;
};

#define MAX_TESTS 512
static struct test_case test_cases[MAX_TESTS];
static int test_count;
static int current_failures;
static int total_checks;

#define TEST(name)                                                                             \
    static void test_##name(void);                                                             \
    __attribute__((constructor)) static void register_##name(void)                            \
    {                                                                                          \
        if (test_count < MAX_TESTS)                                                            \
            test_cases[test_count++] = (struct test_case){#name, test_##name};                 \
    }                                                                                          \
    static void test_##name(void)

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        total_checks++;                                                                        \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);        \
            current_failures++;                                                                \
        }                                                                                      \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                   \
    do {                                                                                       \
        total_checks++;                                                                        \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "  %s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);         \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            current_failures++;                                                                \
        }                                                                                      \
    } while (0)

#define CHECK_EQ_U(a, b)                                                                       \
    do {                                                                                       \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);         \
        total_checks++;                                                                        \
        if (a_ != b_) {                                                                        \
            fprintf(stderr, "  %s:%d: CHECK failed: %s == %s (%llu != %llu)\n", __FILE__,      \
                    __LINE__, #a, #b, a_, b_);                                                 \
            current_failures++;                                                                \
        }                                                                                      \
    } while (0)

/* Stop the current test: used when continuing would crash. `cond` is evaluated once, so
 * REQUIRE(pthread_create(...) == 0) creates one thread. */
#define REQUIRE(cond)                                                                          \
    do {                                                                                       \
        bool required_ = (cond);                                                               \
        total_checks++;                                                                        \
        if (!required_) {                                                                      \
            fprintf(stderr, "  %s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);      \
            current_failures++;                                                                \
            return;                                                                            \
        }                                                                                      \
    } while (0)

/* The stderr of the last expect_death() child, for finer checks of the report. */
__attribute__((unused)) static char expect_death_output[16384];

/* Run fn(arg) in a child; true when it died of `sig` and its stderr contains `needle`
 * (NULL: any output). The child's stderr is captured (expect_death_output), and echoed on
 * mismatch. */
__attribute__((unused)) static bool expect_death(void (*fn)(void *), void *arg, int sig, const char *needle)
{
    int fds[2];
    if (pipe(fds) != 0)
        return false;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    char *out = expect_death_output;
    const size_t out_cap = sizeof expect_death_output;
    size_t used = 0;
    ssize_t n;
    while ((n = read(fds[0], out + used, out_cap - 1 - used)) > 0)
        used += (size_t)n;
    out[used] = '\0';
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    bool ok = WIFSIGNALED(status) && WTERMSIG(status) == sig && (!needle || strstr(out, needle));
    if (!ok) {
        fprintf(stderr, "  expect_death: wanted signal %d and \"%s\"; got %s %d, stderr:\n%s\n", sig,
                needle ? needle : "", WIFSIGNALED(status) ? "signal" : "exit",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), out);
    }
    return ok;
}

/* The process's resident set in bytes (second field of /proc/self/statm, in pages): how
 * the tests see memory given back to the OS. 0 if it cannot be read. */
static inline size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long size = 0, resident = 0;
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

static int run_tests(void)
{
    int failed = 0;
    const char *only = getenv("TEST_ONLY");
    for (int i = 0; i < test_count; i++) {
        if (only && strcmp(only, test_cases[i].name) != 0)
            continue;
        current_failures = 0;
        test_cases[i].fn();
        if (current_failures) {
            failed++;
            fprintf(stderr, "FAIL %s\n", test_cases[i].name);
        } else if (getenv("TEST_VERBOSE")) {
            fprintf(stderr, "ok   %s\n", test_cases[i].name);
        }
    }
    fprintf(stderr, "%d/%d tests passed (%d checks)\n", test_count - failed, test_count, total_checks);
    return failed ? 1 : 0;
}

#define TEST_MAIN()                                                                            \
    int main(void) { return run_tests(); }

#endif
