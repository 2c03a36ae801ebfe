/* The options table: every MTRACE_* environment variable, in one place.
 *
 * Owns: names, types, defaults, ranges and help text of all options; parsing them once
 * from the environment; warning about bad values. The same table prints
 * `mtrace-run --help`, and tests check that README.md documents every entry.
 *
 * Types: bool accepts 1/0, on/off, yes/no, true/false; "auto" (where the default is auto)
 * defers to another option, resolved by the consumer. Sizes accept a K, M or G suffix
 * (powers of 1024). A bad value prints one warning naming the variable and keeps the
 * default. Reading is malloc-free: the allocator reads options during its own init. */
#ifndef MT_COMMON_OPTIONS_H
#define MT_COMMON_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>

enum mt_option_type { MT_OPT_BOOL, MT_OPT_INT, MT_OPT_SIZE, MT_OPT_STRING, MT_OPT_CHOICE };

/* X(id, ENV_NAME, type, "default", min, max, "help")
 * For MT_OPT_CHOICE the min/max are unused and the choices are listed in `default`'s
 * table below (mt_option_choices). For MT_OPT_BOOL, default "auto" means -1. */
#define MT_OPTIONS(X)                                                                          \
    /* tracing (libmtrace.so, mtrace-run) */                                                   \
    X(OUT, "MTRACE_OUT", MT_OPT_STRING, "trace.db", 0, 0,                                      \
      "trace file to write; with libmtrace.so, setting it turns tracing on")                   \
    X(DEPTH, "MTRACE_DEPTH", MT_OPT_INT, "64", 1, 256,                                         \
      "frames captured per call stack")                                                        \
    X(FOLLOW_CHILDREN, "MTRACE_FOLLOW_CHILDREN", MT_OPT_BOOL, "on", 0, 1,                      \
      "also trace processes forked or exec'd by the program")                                  \
    X(SKIP, "MTRACE_SKIP", MT_OPT_STRING, "", 0, 0,                                            \
      "colon-separated shell patterns of executables not to trace (matched against the "      \
      "path and the base name)")                                                               \
    X(DROP, "MTRACE_DROP", MT_OPT_BOOL, "off", 0, 1,                                           \
      "when a thread's ring is full, drop and count events instead of waiting")                \
    X(RING_SIZE, "MTRACE_RING_SIZE", MT_OPT_SIZE, "4M", 65536, 1073741824,                     \
      "bytes of event records per thread (rounded down to a power of two)")                    \
    X(RING_MAX, "MTRACE_RING_MAX", MT_OPT_SIZE, "64M", 65536, 1073741824,                      \
      "a thread whose ring is full moves to one twice as big, up to this size, instead of "    \
      "waiting for the collector (the process's rings grow by at most 4 times this in all; "   \
      "MTRACE_RING_SIZE or less: never grow)")                                                 \
    X(CLOCK, "MTRACE_CLOCK", MT_OPT_CHOICE, "sampled", 0, 0,                                   \
      "event timestamps: sampled (the TSC read for one event in 8 of a thread and at every "  \
      "kernel tick, the events between take the last reading), tsc (a TSC read per event), " \
      "or coarse (CLOCK_MONOTONIC_COARSE, a few ms)")                                          \
    X(SNAPSHOT_MS, "MTRACE_SNAPSHOT_MS", MT_OPT_INT, "10", 0, 3600000,                         \
      "allocator snapshot period in milliseconds (0: only by volume)")                         \
    X(SNAPSHOT_BYTES, "MTRACE_SNAPSHOT_BYTES", MT_OPT_SIZE, "8M", 0, 1099511627776LL,          \
      "also snapshot after this many bytes allocated (0: only by time); the trace keeps such "  \
      "a snapshot only 4096 events or MTRACE_SNAPSHOT_MS after the previous one it kept")        \
    X(LEAK_SCAN, "MTRACE_LEAK_SCAN", MT_OPT_BOOL, "on", 0, 1,                                  \
      "at exit, classify live blocks as leaked or reachable by scanning memory")               \
    X(SOCKET, "MTRACE_SOCKET", MT_OPT_STRING, "", 0, 0,                                        \
      "internal: the collector's socket, set by mtrace-run for the traced process tree")       \
    /* allocator */                                                                            \
    X(ARENA_MAX, "MTRACE_ARENA_MAX", MT_OPT_INT, "0", 0, 1024,                                 \
      "most arenas for medium blocks (0: four per CPU); as mallopt(M_ARENA_MAX)")              \
    X(MMAP_THRESHOLD, "MTRACE_MMAP_THRESHOLD", MT_OPT_SIZE, "0", 0, 1073741824,                \
      "blocks at least this big get their own mapping (0: adaptive from 128K, as glibc)")     \
    X(TRIM_THRESHOLD, "MTRACE_TRIM_THRESHOLD", MT_OPT_SIZE, "128K", 0, 1099511627776LL,       \
      "free memory at the top of a heap beyond which it is returned to the OS")               \
    X(TOP_PAD, "MTRACE_TOP_PAD", MT_OPT_SIZE, "0", 0, 1073741824,                              \
      "extra bytes requested from the OS each time a heap grows")                             \
    X(HUGE_PAGES, "MTRACE_HUGE_PAGES", MT_OPT_BOOL, "on", 0, 1,                                \
      "transparent huge pages for medium heaps past 4 MiB and full 2 MiB ranges of small pages (off: 4 KiB pages only)") \
    X(PERTURB, "MTRACE_PERTURB", MT_OPT_INT, "0", 0, 255,                                      \
      "fill allocations with ~N and freed blocks with N (as mallopt(M_PERTURB)); 0: off")     \
    /* hardening and debug mode */                                                             \
    X(DEBUG, "MTRACE_DEBUG", MT_OPT_BOOL, "off", 0, 1,                                         \
      "hardened debug allocator: canaries, guard pages, poison, quarantine, randomization")   \
    X(CANARY, "MTRACE_CANARY", MT_OPT_BOOL, "auto", 0, 1,                                      \
      "canary bytes after every block, checked at free (auto: on with MTRACE_DEBUG)")         \
    X(GUARD, "MTRACE_GUARD", MT_OPT_BOOL, "auto", 0, 1,                                        \
      "guard pages after large blocks and sampled small ones (auto: on with MTRACE_DEBUG)")   \
    X(GUARD_SAMPLE, "MTRACE_GUARD_SAMPLE", MT_OPT_INT, "2048", 1, 1000000,                     \
      "with guard pages, one small or medium block in N (random gaps) gets a guarded page")    \
    X(POISON, "MTRACE_POISON", MT_OPT_BOOL, "auto", 0, 1,                                      \
      "poison freed memory and verify it on reuse (auto: on with MTRACE_DEBUG)")              \
    X(ZERO_ON_FREE, "MTRACE_ZERO_ON_FREE", MT_OPT_BOOL, "off", 0, 1,                           \
      "zero freed memory instead of poisoning it")                                            \
    X(QUARANTINE, "MTRACE_QUARANTINE", MT_OPT_SIZE, "auto", 0, 1099511627776LL,                \
      "bytes of freed blocks each thread holds back from reuse (auto: 256K with MTRACE_DEBUG)") \
    X(RANDOMIZE, "MTRACE_RANDOMIZE", MT_OPT_BOOL, "auto", 0, 1,                                \
      "randomize which free slot is used (auto: on with MTRACE_DEBUG)")                       \
    X(FILL, "MTRACE_FILL", MT_OPT_BOOL, "auto", 0, 1,                                          \
      "fill new blocks with a pattern to expose uninitialised reads (auto: MTRACE_DEBUG)")    \
    X(FILL_MAX, "MTRACE_FILL_MAX", MT_OPT_SIZE, "64K", 0, 1099511627776LL,                     \
      "with the fill, fill at most this many leading bytes of a block")                       \
    X(ON_ERROR, "MTRACE_ON_ERROR", MT_OPT_CHOICE, "abort", 0, 0,                               \
      "on a detected heap error: abort, or continue (record it and go on)")

enum mt_option_id {
#define MT_OPTION_ENUM(id, name, type, def, lo, hi, help) MT_OPT_##id,
    MT_OPTIONS(MT_OPTION_ENUM)
#undef MT_OPTION_ENUM
    MT_OPT_COUNT
};

struct mt_option_desc {
    const char *name;
    enum mt_option_type type;
    const char *default_text;
    long long min, max;
    const char *help;
};

/* Parse the environment once (idempotent and cheap after the first call). Warnings go to
 * stderr unless `quiet`. Safe to call from inside malloc. */
void mt_options_init(bool quiet);
/* Parse again (mtrace-run after changing its own environment, and tests). */
void mt_options_reload(bool quiet);

long long mt_option_int(enum mt_option_id id);   /* BOOL (-1 auto), INT, SIZE, CHOICE index */
bool mt_option_bool(enum mt_option_id id);       /* BOOL; auto counts as false */
/* A BOOL resolved against another option when it is "auto". */
bool mt_option_bool_or(enum mt_option_id id, bool when_auto);
const char *mt_option_str(enum mt_option_id id); /* STRING, or the CHOICE's name */
bool mt_option_is_set(enum mt_option_id id);     /* given in the environment (validly) */

const struct mt_option_desc *mt_option_describe(enum mt_option_id id);
/* Choices of a CHOICE option, NULL-terminated. */
const char *const *mt_option_choices(enum mt_option_id id);

/* Parsers, exposed for mtrace-run's command line and the tests. Return false on bad
 * input without touching *out. */
bool mt_parse_bool(const char *text, int *out, bool allow_auto);
bool mt_parse_size(const char *text, long long *out);
bool mt_parse_int(const char *text, long long *out);

#endif
