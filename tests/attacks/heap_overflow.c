/* Heap buffer overflow into the next block: a string copy runs 16 bytes past the end of a
 * into whatever follows it. The attack succeeds when the overflow lands in a neighbouring
 * live block (a victim object's data: its pointers, its flags) and the program frees both
 * blocks without anyone noticing. Catching this needs a canary after every block, checked
 * at free (debug allocators). */
#include "attack.h"

/* What the overflow writes: longer than the canary's zero byte, ending in a NUL. */
#define OVERFLOW_BYTES 16

int main(int argc, char **argv)
{
    size_t request = attack_request(attack_tier(argc, argv));
    char *a = malloc(request);
    char *b = malloc(request);
    memset(b, 'b', request);

    size_t usable = malloc_usable_size(a);
    char payload[OVERFLOW_BYTES];
    memset(payload, 'X', sizeof payload - 1);
    payload[sizeof payload - 1] = '\0';
    char *volatile dst = a + usable;
    memcpy(dst, payload, sizeof payload);

    bool hit = false;
    for (size_t i = 0; i < request; i++)
        hit |= b[i] != 'b';
    free(a);
    free(b);
    if (hit)
        attack_succeeded("the overflow out of %p changed the live block %p and went unnoticed", (void *)a,
                         (void *)b);
    attack_failed("the overflow reached no live block");
}
