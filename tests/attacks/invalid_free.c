/* Interior free: free a pointer into the middle of a live block after planting a
 * plausible chunk header just before it (the block's own data, attacker-controlled). The
 * allocator files the interior "chunk"; the next malloc of that size returns memory inside
 * the still-live block. */
#include "attack.h"

int main(int argc, char **argv)
{
    size_t request = attack_request(attack_tier(argc, argv));
    size_t outer = 2 * request + 2 * GLIBC_HEADER;
    char *p = malloc(outer);
    memset(p, 'p', outer);
    char *inner = p + GLIBC_HEADER;
    size_t chunk = request + GLIBC_SIZE_WORD;
    poke(inner, -GLIBC_SIZE_WORD, chunk | GLIBC_PREV_INUSE);
    poke(inner, (ptrdiff_t)chunk - GLIBC_SIZE_WORD, 0x20 | GLIBC_PREV_INUSE); /* next chunk */
    free(launder(inner));
    char *q = malloc(request);
    if (overlaps(q, request, p, outer))
        attack_succeeded("malloc returned %p inside the live block %p", (void *)q, (void *)p);
    free(q);
    free(p);
    attack_failed("the interior free had no effect");
}
