/* aligned: aligned allocations. A working set of slots refilled at random with
 * posix_memalign or aligned_alloc, alignments 32 B to 4 KiB (powers of two), sizes 16 B to
 * 8 KiB. Checks every alignment (a misaligned block fails the run) and measures the
 * aligned path, which many allocators serve by over-allocating and splitting. */
#include "bench.h"

#include <string.h>

#define ALIGNED_OPS       3000000ull /* allocations at scale 1 */
#define ALIGNED_SLOTS     4096u      /* live blocks, ~20 MiB */
#define ALIGNED_MIN_SHIFT 5          /* 32 B: past max_align_t, so really over-aligned */
#define ALIGNED_MAX_SHIFT 12         /* 4 KiB: a page */
#define ALIGNED_MIN_SIZE  16
#define ALIGNED_MAX_SIZE  8192

int main(int argc, char **argv)
{
    uint64_t ops = bench_ops(ALIGNED_OPS, bench_scale(argc, argv));
    bench_rng rng = { BENCH_SEED };
    static unsigned char *slot[ALIGNED_SLOTS];
    static size_t slot_size[ALIGNED_SLOTS];
    uint64_t sum = 0;

    for (uint64_t i = 0; i < ops; i++) {
        unsigned k = (unsigned)(bench_next(&rng) % ALIGNED_SLOTS);
        if (slot[k]) {
            sum = bench_mix(sum, slot[k][0] + slot[k][slot_size[k] - 1]);
            free(slot[k]);
            slot[k] = NULL;
        }
        size_t align = (size_t)1 << bench_range(&rng, ALIGNED_MIN_SHIFT, ALIGNED_MAX_SHIFT);
        size_t n = (size_t)bench_range(&rng, ALIGNED_MIN_SIZE, ALIGNED_MAX_SIZE);
        void *p = NULL;
        if (bench_next(&rng) & 1) {
            if (posix_memalign(&p, align, n) != 0)
                return 1;
        } else {
            /* C11 asks for a size that is a multiple of the alignment. */
            n = (n + align - 1) & ~(align - 1);
            if (!(p = aligned_alloc(align, n)))
                return 1;
        }
        if ((uintptr_t)p & (align - 1)) {
            fprintf(stderr, "aligned: block %p is not aligned to %zu\n", p, align);
            return 1;
        }
        unsigned char *b = p;
        b[0] = (unsigned char)i;
        b[n - 1] = (unsigned char)(i >> 8);
        slot[k] = b;
        slot_size[k] = n;
    }
    for (unsigned k = 0; k < ALIGNED_SLOTS; k++) {
        if (slot[k]) {
            sum = bench_mix(sum, slot[k][0]);
            free(slot[k]);
        }
    }
    bench_print_checksum(sum);
    return 0;
}
