/* bench-launch: runs one command and writes its wall time, peak RSS and exit status to a
 * file, for run.py.
 *
 *   bench-launch RESULT_FILE [NAME=VALUE]... -- PROG ARGS...
 *
 * Why not measure from Python directly: ru_maxrss of a process counts the memory of the
 * image it replaced at exec, so a child of the Python interpreter reports at least
 * Python's own resident set (~17 MiB), which hides the footprint of small workloads. This
 * launcher is a few hundred KiB, so the command's ru_maxrss (from wait4, covering the
 * command and every descendant it waited for) is the command's own. The NAME=VALUE
 * settings (LD_PRELOAD, MTRACE_OUT) are applied in the child only, so the launcher itself
 * never runs under the allocator being measured.
 *
 * RESULT_FILE receives one line: `wall_ns=N maxrss_kib=N status=N`, status as wait4
 * reports it. The exit code is the command's (128 + signal if it was killed). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE     2
#define EXIT_NO_EXEC   127 /* as the shell reports a command it could not run */
#define SIGNAL_EXIT_BASE 128

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    int sep = 2;
    while (sep < argc && strcmp(argv[sep], "--") != 0)
        sep++;
    if (argc < 2 || sep + 1 >= argc) {
        fprintf(stderr, "usage: bench-launch RESULT_FILE [NAME=VALUE]... -- PROG ARGS...\n");
        return EXIT_USAGE;
    }
    long long start = now_ns();
    pid_t pid = fork();
    if (pid < 0) {
        perror("bench-launch: fork");
        return EXIT_NO_EXEC;
    }
    if (pid == 0) {
        for (int i = 2; i < sep; i++)
            putenv(argv[i]);
        execvp(argv[sep + 1], &argv[sep + 1]);
        fprintf(stderr, "bench-launch: cannot run %s\n", argv[sep + 1]);
        _exit(EXIT_NO_EXEC);
    }
    int status;
    struct rusage usage;
    if (wait4(pid, &status, 0, &usage) < 0) {
        perror("bench-launch: wait4");
        return EXIT_NO_EXEC;
    }
    long long wall = now_ns() - start;
    FILE *out = fopen(argv[1], "w");
    long long user_ns = (long long)usage.ru_utime.tv_sec * 1000000000LL + usage.ru_utime.tv_usec * 1000LL;
    if (!out || fprintf(out, "wall_ns=%lld user_ns=%lld maxrss_kib=%ld status=%d\n", wall, user_ns,
                        usage.ru_maxrss, status) < 0 || fclose(out) != 0) {
        perror("bench-launch: result file");
        return EXIT_NO_EXEC;
    }
    if (WIFSIGNALED(status))
        return SIGNAL_EXIT_BASE + WTERMSIG(status);
    return WEXITSTATUS(status);
}
