/* large: large blocks, 128 KiB to 8 MiB (log-uniform). A small working set of slots; each
 * operation frees a slot's block and allocates a new one, then writes one byte in every
 * page of it, as a program filling a buffer would. Measures whether the allocator keeps
 * and reuses large blocks or pays an mmap, page faults and munmap each time, and how much
 * it keeps resident to do so. */
#include "bench.h"

#define LARGE_OPS      4000ull       /* blocks at scale 1 */
#define LARGE_SLOTS    16u           /* live blocks: ~30 MiB on average */
#define LARGE_MIN_SIZE (128u << 10)  /* the usual mmap threshold */
#define LARGE_MAX_SIZE (8u << 20)
#define TOUCH_STRIDE   4096u         /* one write per (4 KiB) page */

int main(int argc, char **argv)
{
    uint64_t ops = bench_ops(LARGE_OPS, bench_scale(argc, argv));
    bench_rng rng = { BENCH_SEED };
    static unsigned char *slot[LARGE_SLOTS];
    static size_t slot_size[LARGE_SLOTS];
    uint64_t sum = 0;

    for (uint64_t i = 0; i < ops; i++) {
        unsigned k = (unsigned)(bench_next(&rng) % LARGE_SLOTS);
        if (slot[k]) {
            /* Bytes the loop below wrote: an unwritten one holds whatever the allocator's
             * reused memory held, which differs between allocators. */
            size_t mid = (slot_size[k] / 2) & ~(size_t)(TOUCH_STRIDE - 1);
            sum = bench_mix(sum, slot[k][mid] + slot[k][slot_size[k] - 1]);
            free(slot[k]);
        }
        size_t n = (size_t)bench_log_range(&rng, LARGE_MIN_SIZE, LARGE_MAX_SIZE);
        unsigned char *p = malloc(n);
        if (!p)
            return 1;
        for (size_t off = 0; off < n; off += TOUCH_STRIDE)
            p[off] = (unsigned char)(i + off / TOUCH_STRIDE);
        p[n - 1] = (unsigned char)i;
        slot[k] = p;
        slot_size[k] = n;
    }
    for (unsigned k = 0; k < LARGE_SLOTS; k++) {
        if (slot[k]) {
            sum = bench_mix(sum, slot[k][0]);
            free(slot[k]);
        }
    }
    bench_print_checksum(sum);
    return 0;
}
