/* realloc of a freed block: the program frees p and later reallocs the stale pointer.
 * If the allocator believes the block is still live it returns it (or resizes it) while
 * the same memory also sits in a free list, so the next malloc hands it out a second time:
 * two live blocks overlap. */
#include "attack.h"

int main(int argc, char **argv)
{
    size_t request = attack_request(attack_tier(argc, argv));
    char *p = malloc(request);
    free(p);
    char *q = realloc(launder(p), request);
    char *r = malloc(request);
    if (overlaps(q, request, r, request))
        attack_succeeded("realloc of the freed block returned %p, and malloc returned %p", (void *)q, (void *)r);
    free(r);
    free(q);
    attack_failed("realloc of a freed block did not create overlapping blocks");
}
