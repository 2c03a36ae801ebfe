/* churn: small-object churn. A working set of slots each holding a 16-256 B block; every
 * operation picks a slot at random, frees its block (after reading it back) and allocates
 * a new one of a random size there. Models the bulk of a C/C++ program's heap traffic:
 * many short-lived small objects interleaved with longer-lived ones. */
#include "bench.h"

#include <string.h>

#define CHURN_OPS       20000000ull /* at scale 1: under a second with glibc */
#define CHURN_SLOTS     (1u << 16)  /* 64K live blocks, ~9 MiB: larger than the L2 cache */
#define CHURN_MIN_SIZE  16
#define CHURN_MAX_SIZE  256

int main(int argc, char **argv)
{
    uint64_t ops = bench_ops(CHURN_OPS, bench_scale(argc, argv));
    bench_rng rng = { BENCH_SEED };
    static unsigned char *slot[CHURN_SLOTS];
    static uint16_t slot_size[CHURN_SLOTS];
    uint64_t sum = 0;

    for (uint64_t i = 0; i < ops; i++) {
        uint32_t k = (uint32_t)(bench_next(&rng) % CHURN_SLOTS);
        if (slot[k]) {
            sum = bench_mix(sum, slot[k][0] + slot[k][slot_size[k] - 1]);
            free(slot[k]);
        }
        size_t n = (size_t)bench_range(&rng, CHURN_MIN_SIZE, CHURN_MAX_SIZE);
        unsigned char *p = malloc(n);
        if (!p)
            return 1;
        /* Touch the first and last bytes, as a constructor would. */
        p[0] = (unsigned char)i;
        p[n - 1] = (unsigned char)(i >> 8);
        slot[k] = p;
        slot_size[k] = (uint16_t)n;
    }
    for (uint32_t k = 0; k < CHURN_SLOTS; k++) {
        if (slot[k]) {
            sum = bench_mix(sum, slot[k][0]);
            free(slot[k]);
        }
    }
    bench_print_checksum(sum);
    return 0;
}
