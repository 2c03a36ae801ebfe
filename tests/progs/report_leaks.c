/* Recorded by tests/py/test_report_integration.py: leaks of known sizes at known stacks,
 * so `mtrace-report leaks` and `gate` can be checked to the byte on a real recording.
 *
 * - leak_small_blocks: 4 x malloc(24), pointers dropped        -> leaked, 96 bytes
 * - leak_one_big_block: 1 x malloc(5000), pointer dropped      -> leaked, 5000 bytes
 * - keep_config: 1 x malloc(300) kept in a global               -> still reachable
 * - make_temporaries: 100 x (malloc(64); free)                  -> temporaries
 * Leaked pointers are made in callees whose frames are then overwritten, so no stale copy
 * on the stack makes them look reachable to the leak scan. */
#include <stdlib.h>
#include <string.h>

#define SMALL_LEAKS 4
#define SMALL_SIZE 24
#define BIG_SIZE 5000
#define CONFIG_SIZE 300
#define TEMPORARIES 100
#define TEMP_SIZE 64
#define STACK_SCRUB_BYTES 16384

static char *volatile config;  /* reachable at exit (volatile: a static never read may be dropped) */
static volatile unsigned sink; /* keeps the compiler from dropping the allocations */

__attribute__((noinline)) static void leak_small_blocks(void)
{
    for (int i = 0; i < SMALL_LEAKS; i++) {
        char *p = malloc(SMALL_SIZE);
        p[0] = (char)i;
        sink += (unsigned)p[0];
    }
}

__attribute__((noinline)) static void leak_one_big_block(void)
{
    char *p = malloc(BIG_SIZE);
    memset(p, 1, BIG_SIZE);
    sink += (unsigned)p[BIG_SIZE - 1];
}

__attribute__((noinline)) static void keep_config(void)
{
    config = malloc(CONFIG_SIZE);
    memset(config, 'c', CONFIG_SIZE);
}

__attribute__((noinline)) static void make_temporaries(void)
{
    for (int i = 0; i < TEMPORARIES; i++) {
        char *p = malloc(TEMP_SIZE);
        p[0] = (char)i;
        sink += (unsigned)p[0];
        free(p);
    }
}

/* Overwrites the dead stack below main's frame, where the callees left their pointers. */
__attribute__((noinline)) static void scrub_stack(void)
{
    volatile char pad[STACK_SCRUB_BYTES];
    memset((char *)pad, 0, sizeof pad);
    sink += pad[0];
}

int main(void)
{
    leak_small_blocks();
    leak_one_big_block();
    keep_config();
    make_temporaries();
    scrub_stack();
    return 0;
}
