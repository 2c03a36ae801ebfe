/* loop: the tight malloc(n)/free loop. Every operation allocates a block, writes and reads
 * one byte and frees it at once, with n cycling through 16..256 B: the best case of every
 * allocator's fast path (thread cache hit on both sides), so this measures its length in
 * instructions and, for ours, what the always-on checks add to it. */
#include "bench.h"

#define LOOP_OPS        10000000ull /* 10M malloc/free pairs at scale 1 */
#define LOOP_SIZE_STEP  16          /* sizes 16, 32, ... 256: the common small classes */
#define LOOP_SIZE_COUNT 16

int main(int argc, char **argv)
{
    uint64_t ops = bench_ops(LOOP_OPS, bench_scale(argc, argv));
    uint64_t sum = 0;

    for (uint64_t i = 0; i < ops; i++) {
        size_t n = LOOP_SIZE_STEP * (1 + (i % LOOP_SIZE_COUNT));
        unsigned char *p = malloc(n);
        if (!p)
            return 1;
        p[0] = (unsigned char)i;
        BENCH_ESCAPE(p);
        sum += p[0];
        free(p);
    }
    bench_print_checksum(sum);
    return 0;
}
