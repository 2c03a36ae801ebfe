/* Shared by every benchmark workload: the scale factor, a seeded PRNG, the checksum
 * output and the resident-set reading.
 *
 * Invariants every workload keeps, so that run.py can compare allocators fairly:
 * - the sequence of calls depends only on the scale and the fixed seed, never on the
 *   addresses returned, so every allocator serves the same requests;
 * - the checksum depends only on the contents written, never on addresses, so it is the
 *   same under every allocator (run.py flags a mismatch as a broken allocator);
 * - stdout holds `checksum=<hex>` and, for some workloads, further `key=value` metrics;
 *   nothing else (profilers print their own lines, which run.py ignores).
 *
 * Workloads link nothing special: the allocator under test is chosen by LD_PRELOAD. */
#ifndef MT_BENCH_H
#define MT_BENCH_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The one seed: every run of a workload makes the same requests. */
#define BENCH_SEED 0x6d74726163650001ull

/* The scale multiplies a workload's operation count (1.0: its full size, chosen so the
 * whole suite takes a few minutes). argv[1] wins over BENCH_SCALE. Working-set sizes do
 * not scale, so peak RSS stays comparable between a quick run and a full one. */
static inline double bench_scale(int argc, char **argv)
{
    const char *s = argc > 1 ? argv[1] : getenv("BENCH_SCALE");
    double scale = s ? strtod(s, NULL) : 1.0;
    if (!(scale > 0.0)) {
        fprintf(stderr, "bench: scale must be a positive number, got '%s'\n", s);
        exit(2);
    }
    return scale;
}

/* base * scale, at least 1. */
static inline uint64_t bench_ops(uint64_t base, double scale)
{
    double n = (double)base * scale;
    return n < 1.0 ? 1 : (uint64_t)n;
}

/* splitmix64: tiny, fast and good enough to pick sizes and slots. */
typedef struct { uint64_t s; } bench_rng;

static inline uint64_t bench_next(bench_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static inline uint64_t bench_range(bench_rng *r, uint64_t lo, uint64_t hi)
{
    return lo + bench_next(r) % (hi - lo + 1);
}

/* Log-uniform in [lo, hi]: as many blocks between 128K and 256K as between 4M and 8M,
 * the way real programs spread large sizes. */
static inline uint64_t bench_log_range(bench_rng *r, uint64_t lo, uint64_t hi)
{
    /* Octave [2^b, 2^(b+1)) for b from lo's to the highest one below hi, so that a
     * power-of-two hi does not get a whole octave clamped onto it. */
    int lo_bits = 63 - __builtin_clzll(lo), hi_bits = 63 - __builtin_clzll(hi - 1);
    if (hi_bits < lo_bits)
        hi_bits = lo_bits;
    int bits = (int)bench_range(r, (uint64_t)lo_bits, (uint64_t)hi_bits);
    uint64_t base = 1ull << bits;
    uint64_t v = base + bench_next(r) % base;
    return v < lo ? lo : v > hi ? hi : v;
}

/* Mixes a value into the running checksum (order-sensitive). */
static inline uint64_t bench_mix(uint64_t sum, uint64_t v)
{
    return (sum ^ v) * 0x100000001b3ull + 0x9e37ull;
}

/* Makes the compiler believe p escapes, so a malloc/free pair it could prove unused is
 * still called (GCC removes `free(malloc(n))` at -O2). */
#define BENCH_ESCAPE(p) __asm__ volatile("" : : "r"(p) : "memory")

static inline void bench_print_checksum(uint64_t sum)
{
    printf("checksum=%016llx\n", (unsigned long long)sum);
}

/* Resident set now, in KiB, from /proc/self/statm (0 if unreadable). Read with open/read
 * into a stack buffer: stdio would allocate, and this is measured right after freeing. */
static inline long bench_rss_kib(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    long size = 0, resident = 0;
    if (sscanf(buf, "%ld %ld", &size, &resident) != 2)
        return 0;
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

#endif
