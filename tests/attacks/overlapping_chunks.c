/* Overlapping chunks by size corruption: an overflow out of block a enlarges the size word
 * of the next block b so that it also covers the live block c. free(b) files the enlarged
 * chunk; the next malloc of that size returns memory that overlaps c, and whoever owns the
 * new block now rewrites c (for example its pointers). */
#include "attack.h"

int main(int argc, char **argv)
{
    size_t request = attack_request(attack_tier(argc, argv));
    char *a = malloc(request);
    char *b = malloc(request);
    char *c = malloc(request);
    void *barrier = malloc(request);
    memset(c, 'c', request);

    size_t usable = malloc_usable_size(a);
    /* glibc chunk sizes: usable + 8 each; b now spans b and c. */
    size_t chunk = usable + GLIBC_SIZE_WORD;
    poke(a, (ptrdiff_t)usable, (2 * chunk) | GLIBC_PREV_INUSE);

    free(b);
    size_t big = 2 * chunk - GLIBC_SIZE_WORD;
    char *d = malloc(big);
    if (overlaps(d, big, c, request))
        attack_succeeded("malloc(%zu) returned %p, overlapping the live block c at %p", big, (void *)d, (void *)c);
    free(d);
    free(barrier);
    free(c);
    free(a);
    attack_failed("the enlarged size was ignored");
}
