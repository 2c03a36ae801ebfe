/* fragment: a fragmenting pattern. Each round allocates many blocks of mixed sizes, frees
 * every other one (leaving holes pinned between live neighbours), allocates bigger blocks
 * that cannot fit in those holes, then frees everything. Peak RSS shows how much the holes
 * cost; the resident set after the last free-all (printed as rss_after_free_kib, read from
 * /proc/self/statm) shows whether the allocator gives memory back to the system. */
#include "bench.h"

#include <string.h>

#define FRAGMENT_ROUNDS   30u      /* rounds at scale 1 */
#define FRAGMENT_SMALL    32768u   /* mixed blocks per round: ~34 MiB */
#define FRAGMENT_SMALL_MIN 16
#define FRAGMENT_SMALL_MAX 2048
#define FRAGMENT_BIG      4096u    /* bigger blocks per round: ~40 MiB */
#define FRAGMENT_BIG_MIN  4096     /* twice the largest hole: never fits in one */
#define FRAGMENT_BIG_MAX  16384

static unsigned char *fill(size_t n, uint64_t tag)
{
    unsigned char *p = malloc(n);
    if (!p)
        exit(1);
    /* Write it all, as a program would: untouched pages would not count in RSS. */
    memset(p, (int)(tag & 0xff), n);
    return p;
}

int main(int argc, char **argv)
{
    uint64_t rounds = bench_ops(FRAGMENT_ROUNDS, bench_scale(argc, argv));
    bench_rng rng = { BENCH_SEED };
    static unsigned char *small[FRAGMENT_SMALL], *big[FRAGMENT_BIG];
    static size_t small_size[FRAGMENT_SMALL];
    uint64_t sum = 0;

    for (uint64_t r = 0; r < rounds; r++) {
        for (unsigned i = 0; i < FRAGMENT_SMALL; i++) {
            small_size[i] = (size_t)bench_range(&rng, FRAGMENT_SMALL_MIN, FRAGMENT_SMALL_MAX);
            small[i] = fill(small_size[i], r + i);
        }
        for (unsigned i = 1; i < FRAGMENT_SMALL; i += 2) {
            sum = bench_mix(sum, small[i][small_size[i] - 1]);
            free(small[i]);
            small[i] = NULL;
        }
        for (unsigned i = 0; i < FRAGMENT_BIG; i++)
            big[i] = fill((size_t)bench_range(&rng, FRAGMENT_BIG_MIN, FRAGMENT_BIG_MAX), r ^ i);
        for (unsigned i = 0; i < FRAGMENT_BIG; i++) {
            sum = bench_mix(sum, big[i][0]);
            free(big[i]);
        }
        for (unsigned i = 0; i < FRAGMENT_SMALL; i += 2) {
            sum = bench_mix(sum, small[i][0]);
            free(small[i]);
        }
    }
    long rss_after_free = bench_rss_kib();
    bench_print_checksum(sum);
    printf("rss_after_free_kib=%ld\n", rss_after_free);
    return 0;
}
