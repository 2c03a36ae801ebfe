/* realloc: mixed sizes growing through realloc. A set of buffers, half of them strings
 * grown to the exact new length on every append (the naive `s = realloc(s, len + n + 1)`),
 * half vectors that double their capacity; each is appended to at random until it
 * reaches its own limit (log-uniform, 64 B to 256 KiB), then checked, freed and started
 * again. Exercises in-place growth, moves between size classes and the medium and large
 * paths of realloc. */
#include "bench.h"

#include <string.h>

#define REALLOC_OPS       5000000ull /* appends at scale 1 */
#define REALLOC_BUFFERS   1024u      /* live buffers, ~16 MiB on average */
#define REALLOC_MIN_LIMIT 64
#define REALLOC_MAX_LIMIT (256u << 10)
#define REALLOC_MAX_APPEND 64
#define VECTOR_FIRST_CAP  16

typedef struct {
    unsigned char *data;
    size_t len, cap, limit;
    int doubling; /* vector (capacity doubles) or string (exact growth) */
} buffer;

static void buffer_reset(buffer *b, bench_rng *rng)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->limit = (size_t)bench_log_range(rng, REALLOC_MIN_LIMIT, REALLOC_MAX_LIMIT);
    b->doubling = (int)(bench_next(rng) & 1);
}

/* Reads a few bytes spread over the buffer, so its contents count in the checksum. */
static uint64_t buffer_digest(const buffer *b)
{
    if (!b->len)
        return 0;
    return (uint64_t)b->data[0] << 16 | (uint64_t)b->data[b->len / 2] << 8 | b->data[b->len - 1];
}

int main(int argc, char **argv)
{
    uint64_t ops = bench_ops(REALLOC_OPS, bench_scale(argc, argv));
    bench_rng rng = { BENCH_SEED };
    static buffer buf[REALLOC_BUFFERS];
    uint64_t sum = 0;

    for (unsigned k = 0; k < REALLOC_BUFFERS; k++)
        buffer_reset(&buf[k], &rng);
    for (uint64_t i = 0; i < ops; i++) {
        buffer *b = &buf[bench_next(&rng) % REALLOC_BUFFERS];
        size_t n = (size_t)bench_range(&rng, 1, REALLOC_MAX_APPEND);
        size_t need = b->len + n + 1; /* + 1: strings keep their terminator */
        if (need > b->cap) {
            size_t cap = need;
            if (b->doubling) {
                cap = b->cap ? b->cap : VECTOR_FIRST_CAP;
                while (cap < need)
                    cap *= 2;
            }
            unsigned char *p = realloc(b->data, cap);
            if (!p)
                return 1;
            b->data = p;
            b->cap = cap;
        }
        memset(b->data + b->len, 'a' + (int)(i % 26), n);
        b->len += n;
        b->data[b->len] = 0;
        if (b->len >= b->limit) {
            sum = bench_mix(sum, buffer_digest(b));
            free(b->data);
            buffer_reset(b, &rng);
        }
    }
    for (unsigned k = 0; k < REALLOC_BUFFERS; k++) {
        sum = bench_mix(sum, buffer_digest(&buf[k]));
        free(buf[k].data);
    }
    bench_print_checksum(sum);
    return 0;
}
