/* mtrace-run: record a program and its children into trace.db.
 *
 *   mtrace-run [options] -o trace.db -- prog args...
 *
 * Options become MTRACE_* environment variables (common/options.h is the one table: the
 * help text comes from it) that the traced program and the collector both read. The
 * launcher creates the collector's listening socket, opens the first connection itself
 * (so the program's HELLO can never race the collector's start), starts the program with
 * libmtrace.so preloaded and that connection inherited (MTRACE_CONN_FD), and then becomes
 * the collector. It exits with the program's status (128 + signal when it was killed)
 * once the trace is final.
 *
 * Hidden modes: `--collector-fd N -o OUT` is the collector alone on an inherited
 * listening socket (a plain LD_PRELOAD run starts it); `--no-preload` (or MTRACE_LIB set
 * to the empty string) starts the program without libmtrace.so, for tests whose program
 * speaks the wire protocol itself. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../common/options.h"
#include "../../trace/collector/collector.h"
#include "../../trace/collector/host.h"

#define PROG "mtrace-run"
/* Exit statuses of our own failures, as a shell uses them. */
#define EXIT_USAGE 2
#define EXIT_CANNOT_RUN 127

extern char **environ;

static void usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, PROG ": error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see " PROG " --help)\n");
    exit(EXIT_USAGE);
}

/* Command-line flags and the option each sets; `value` NULL: takes an argument. */
struct flag {
    const char *name;
    enum mt_option_id option;
    const char *value;
};

static const struct flag flags[] = {
    {"--depth", MT_OPT_DEPTH, NULL},
    {"--no-follow", MT_OPT_FOLLOW_CHILDREN, "off"},
    {"--follow-children", MT_OPT_FOLLOW_CHILDREN, "on"},
    {"--skip", MT_OPT_SKIP, NULL},
    {"--drop", MT_OPT_DROP, "on"},
    {"--ring-size", MT_OPT_RING_SIZE, NULL},
    {"--ring-max", MT_OPT_RING_MAX, NULL},
    {"--snapshot-ms", MT_OPT_SNAPSHOT_MS, NULL},
    {"--snapshot-bytes", MT_OPT_SNAPSHOT_BYTES, NULL},
    {"--no-leak-scan", MT_OPT_LEAK_SCAN, "off"},
};

static void print_help(void)
{
    printf("usage: " PROG " [options] [-o trace.db] -- program [args...]\n\n"
           "Record every malloc-family call of a program and of the processes it starts into a\n"
           "trace file (SQLite; read it with mtrace-report).\n\n"
           "options:\n"
           "  -o, --output FILE      trace file to write (default trace.db)\n"
           "  --depth N              frames captured per call stack\n"
           "  --no-follow            trace only the first process image, not forked or exec'd\n"
           "                         ones (--follow-children: trace them, the default)\n"
           "  --skip PATTERN         do not trace executables matching PATTERN (repeatable)\n"
           "  --drop                 drop events when a ring is full instead of waiting\n"
           "  --ring-size SIZE       bytes of event records per thread (a power of two)\n"
           "  --ring-max SIZE        a full ring doubles up to this size instead of waiting\n"
           "  --snapshot-ms N        allocator snapshot period in milliseconds\n"
           "  --snapshot-bytes SIZE  also snapshot after this many bytes allocated\n"
           "  --no-leak-scan         do not classify blocks live at exit\n"
           "  -q, --quiet            no summary line\n"
           "  --help, --version\n\n"
           "environment (the options above set the tracing ones):\n");
    for (int id = 0; id < MT_OPT_COUNT; id++) {
        const struct mt_option_desc *d = mt_option_describe((enum mt_option_id)id);
        printf("  %-24s %-10s %s\n", d->name, d->default_text[0] ? d->default_text : "(empty)", d->help);
    }
    printf("  %-24s %-10s %s\n", "MTRACE_LIB", "(auto)", "libmtrace.so to preload (default: beside " PROG ")");
}

/* A bad MTRACE_* value has just been warned about (once, naming the variable and the
 * default kept): take it out of the environment so that every traced process, which reads
 * the same variables, does not print the same warning again. */
static void drop_invalid_options(void)
{
    for (int id = 0; id < MT_OPT_COUNT; id++) {
        const char *name = mt_option_describe((enum mt_option_id)id)->name;
        if (getenv(name) && !mt_option_is_set((enum mt_option_id)id))
            unsetenv(name);
    }
}

/* Check a flag's value against the option table: the program must not start with a
 * value the library would replace by its default behind the user's back. */
static void check_value(const char *flag_name, enum mt_option_id id, const char *value)
{
    const struct mt_option_desc *d = mt_option_describe(id);
    long long v;
    bool ok = true;
    if (d->type == MT_OPT_INT)
        ok = mt_parse_int(value, &v) && v >= d->min && v <= d->max;
    else if (d->type == MT_OPT_SIZE)
        ok = mt_parse_size(value, &v) && v >= d->min && v <= d->max;
    if (!ok) {
        fprintf(stderr, PROG ": error: %s %s: expected %s from %lld to %lld\n", flag_name, value,
                d->type == MT_OPT_INT ? "a whole number" : "a size (K, M, G suffixes allowed)", d->min, d->max);
        exit(EXIT_USAGE);
    }
}

/* The value of `--flag value` or `--flag=value`; advances *i. */
static const char *flag_value(int argc, char **argv, int *i, const char *name)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (a[n] == '=')
        return a + n + 1;
    if (*i + 1 >= argc)
        usage_error("%s needs a value", name);
    return argv[++*i];
}

static bool flag_matches(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return strncmp(arg, name, n) == 0 && (arg[n] == '\0' || arg[n] == '=');
}

/* PATH search as execvp does it; fills `out` or returns the errno to report. */
static int resolve_program(const char *name, char *out, size_t cap)
{
    if (strchr(name, '/')) {
        if (access(name, X_OK) != 0)
            return errno;
        snprintf(out, cap, "%s", name);
        return 0;
    }
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    int result = ENOENT;
    for (const char *p = path;;) {
        size_t n = strcspn(p, ":");
        snprintf(out, cap, "%.*s%s%s", (int)n, p, n ? "/" : "", name);
        if (access(out, X_OK) == 0)
            return 0;
        if (errno == EACCES)
            result = EACCES;
        p += n;
        if (*p != ':')
            break;
        p++;
    }
    return result;
}

/* libmtrace.so: MTRACE_LIB, else beside this binary, else ../lib when installed. NULL
 * when no preload is wanted. */
static const char *find_library(char *buf, size_t cap)
{
    const char *env = getenv("MTRACE_LIB");
    if (env && env[0] && access(env, R_OK) != 0) {
        fprintf(stderr, PROG ": error: MTRACE_LIB=%s: %s\n", env, strerror(errno));
        exit(EXIT_CANNOT_RUN);
    }
    if (env)
        return env[0] ? env : NULL;
    char self[PATH_MAX - 64]; /* room for the suffixes below */
    if (mt_host_self_exe(self, sizeof self)) {
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            snprintf(buf, cap, "%s/libmtrace.so", self);
            if (access(buf, R_OK) == 0)
                return buf;
            snprintf(buf, cap, "%s/../lib/libmtrace.so", self);
            if (access(buf, R_OK) == 0)
                return buf;
        }
    }
    fprintf(stderr, PROG ": error: cannot find libmtrace.so beside " PROG " or in ../lib; set MTRACE_LIB\n");
    exit(EXIT_CANNOT_RUN);
}

static void set_env_int(const char *name, long long v)
{
    char text[32];
    snprintf(text, sizeof text, "%lld", v);
    setenv(name, text, 1);
}

static char *command_json(char **argv)
{
    struct mt_buf b = {0};
    mt_buf_append(&b, "[", 1);
    for (int i = 0; argv[i]; i++) {
        if (i)
            mt_buf_append(&b, ",", 1);
        mt_buf_json_string(&b, argv[i], strlen(argv[i]));
    }
    mt_buf_append(&b, "]", 1);
    return b.data;
}

static void print_summary(const char *out, const struct mt_collector_result *r)
{
    uint64_t bytes = mt_host_file_size(out);
    double mib = (double)bytes / (1024.0 * 1024.0);
    fprintf(stderr, PROG ": %llu events from %u process%s in %s (%.1f MiB)", (unsigned long long)r->events,
            r->processes, r->processes == 1 ? "" : "es", out, mib);
    /* The program waited for the collector (its rings were full): how often, how long. */
    if (r->ring_waits)
        fprintf(stderr, "; the program waited for the collector %llu time%s (%.3f s)",
                (unsigned long long)r->ring_waits, r->ring_waits == 1 ? "" : "s", (double)r->ring_wait_ns / 1e9);
    /* Rings that grew so the program would not wait: memory it used for the trace. */
    if (r->ring_grows)
        fprintf(stderr, "; event rings grew %llu time%s to keep up (MTRACE_RING_MAX)", (unsigned long long)r->ring_grows,
                r->ring_grows == 1 ? "" : "s");
    fputc('\n', stderr);
    /* MTRACE_RUN_STATS=1: the collector's own cost, for benchmarks. */
    const char *stats = getenv("MTRACE_RUN_STATS");
    if (stats && strcmp(stats, "1") == 0) {
        double user = 0, sys = 0;
        mt_host_self_cpu(&user, &sys);
        fprintf(stderr, PROG ": collector cpu %.3f s user %.3f s sys, %.2f bytes per event\n", user, sys,
                r->events ? (double)bytes / (double)r->events : 0.0);
    }
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    bool quiet = false, no_preload = false;
    int collector_fd = -1;
    char skip[4096] = "";
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (a[0] != '-')
            break;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_help();
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            printf(PROG " (mtrace) %s\n", MTRACE_VERSION);
            return 0;
        }
        if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            quiet = true;
            continue;
        }
        if (strcmp(a, "--no-preload") == 0) {
            no_preload = true;
            continue;
        }
        if (strcmp(a, "-o") == 0 || flag_matches(a, "--output")) {
            out = strcmp(a, "-o") == 0 ? (i + 1 < argc ? argv[++i] : NULL) : flag_value(argc, argv, &i, "--output");
            if (!out || !*out)
                usage_error("%s needs a file name", "-o");
            continue;
        }
        if (flag_matches(a, "--collector-fd")) {
            const char *v = flag_value(argc, argv, &i, "--collector-fd");
            long long fd;
            if (!mt_parse_int(v, &fd) || fd < 0 || fd > INT_MAX)
                usage_error("--collector-fd %s: expected a descriptor number", v);
            collector_fd = (int)fd;
            continue;
        }
        const struct flag *f = NULL;
        for (size_t k = 0; k < MT_ARRAY_LEN(flags); k++)
            if (flag_matches(a, flags[k].name))
                f = &flags[k];
        if (!f)
            usage_error("unknown option '%s'", a);
        const char *name = mt_option_describe(f->option)->name;
        if (f->value) {
            setenv(name, f->value, 1);
        } else {
            const char *v = flag_value(argc, argv, &i, f->name);
            check_value(f->name, f->option, v);
            if (f->option == MT_OPT_SKIP) {
                size_t used = strlen(skip);
                snprintf(skip + used, sizeof skip - used, "%s%s", used ? ":" : "", v);
                setenv(name, skip, 1);
            } else {
                setenv(name, v, 1);
            }
        }
    }
    if (!out)
        out = getenv("MTRACE_OUT") && *getenv("MTRACE_OUT") ? getenv("MTRACE_OUT") : "trace.db";
    /* meta.options records every option as read here: -o is MTRACE_OUT's value. */
    setenv("MTRACE_OUT", out, 1);
    mt_options_reload(false);
    drop_invalid_options();

    struct mt_collector_config config = {.listen_fd = -1, .first_conn_fd = -1, .out_path = out};
    struct mt_collector_result result = {0};

    if (collector_fd >= 0) {
        /* Collector only, for a plain LD_PRELOAD run: the program is already running. */
        mt_host_prepare_listen_fd(collector_fd);
        config.listen_fd = collector_fd;
        if (mt_collector_start(&config) < 0)
            return 1;
        int rc = mt_collector_run(0, &result);
        if (!quiet && rc == 0)
            print_summary(out, &result);
        mt_collector_release();
        return rc < 0 ? 1 : 0;
    }

    if (i >= argc)
        usage_error("%s", "no program given: mtrace-run [options] -o trace.db -- program [args...]");
    char program[PATH_MAX];
    int err = resolve_program(argv[i], program, sizeof program);
    if (err) {
        fprintf(stderr, PROG ": error: cannot run '%s': %s\n", argv[i], strerror(err));
        return EXIT_CANNOT_RUN;
    }
    char lib_buf[PATH_MAX];
    const char *lib = no_preload ? NULL : find_library(lib_buf, sizeof lib_buf);
    char lib_abs[PATH_MAX];
    if (lib && realpath(lib, lib_abs))
        lib = lib_abs;

    char socket_name[108];
    config.listen_fd = mt_host_listen(socket_name, sizeof socket_name);
    if (config.listen_fd < 0) {
        fprintf(stderr, PROG ": error: cannot create the collector socket: %s\n", strerror(errno));
        return 1;
    }
    /* The first connection, opened before the program exists: its HELLO waits in the
     * socket until we read it. */
    int child_end = mt_host_connect(socket_name);
    config.first_conn_fd = child_end >= 0 ? mt_host_accept(config.listen_fd) : -1;
    if (child_end < 0 || config.first_conn_fd < 0) {
        fprintf(stderr, PROG ": error: cannot connect to the collector socket: %s\n", strerror(errno));
        return 1;
    }
    config.command_json = command_json(argv + i);
    if (mt_collector_start(&config) < 0)
        return 1;
    char out_abs[PATH_MAX];
    if (realpath(out, out_abs)) /* exists now: the program may change directory */
        setenv("MTRACE_OUT", out_abs, 1);

    setenv("MTRACE_SOCKET", socket_name, 1);
    set_env_int("MTRACE_CONN_FD", child_end);
    /* The connection is the program's (an outer traced process's owner pid, if we were
     * started by one, would make the program open another connection instead). */
    unsetenv("MTRACE_CONN_PID");
    if (lib) {
        const char *old = getenv("LD_PRELOAD");
        char preload[8192];
        if (old && *old)
            snprintf(preload, sizeof preload, "%s:%s", lib, old);
        else
            snprintf(preload, sizeof preload, "%s", lib);
        setenv("LD_PRELOAD", preload, 1);
    }
    mt_host_child_watch_start();
    pid_t pid = mt_host_spawn(program, argv + i, environ, child_end);
    if (pid < 0) {
        fprintf(stderr, PROG ": error: cannot run '%s': %s\n", argv[i], strerror(errno));
        mt_host_close(child_end);
        mt_collector_run(0, &result);
        return EXIT_CANNOT_RUN;
    }
    mt_host_close(child_end);
    mt_host_forward_signals_to(pid);
    int rc = mt_collector_run(pid, &result);
    int status = 1;
    if (result.root_reaped) {
        int code, sig;
        status = mt_host_status_to_exit_code(result.root_wait_status, &code, &sig);
    }
    if (rc < 0)
        return status ? status : 1;
    if (!quiet)
        print_summary(out, &result);
    return status;
}
