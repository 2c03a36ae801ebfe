/* Recorded by tests/py/test_report_integration.py: a fragmenting phase (many blocks, every
 * other one freed, so free memory is in holes between live blocks), marked with
 * mt_trace_mark so the timeline shows the phases. */
#include <stdlib.h>
#include <string.h>

#include "mtrace.h"

#define BLOCKS 4000
#define BLOCK_SIZE 2000
#define SMALL_SIZE 48

static void *blocks[BLOCKS];

/* Weak: the program also runs without libmtrace.so, where the mark is simply absent. */
extern void mt_trace_mark(const char *label) __attribute__((weak));

static void mark(const char *label)
{
    if (mt_trace_mark)
        mt_trace_mark(label);
}

int main(void)
{
    mark("fill");
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(BLOCK_SIZE);
        memset(blocks[i], 0, BLOCK_SIZE);
    }
    mark("checkerboard");
    for (int i = 0; i < BLOCKS; i += 2) {
        free(blocks[i]);
        blocks[i] = NULL;
    }
    /* small blocks land in the holes or elsewhere: either way the heap stays sparse */
    for (int i = 0; i < BLOCKS; i += 2)
        blocks[i] = malloc(SMALL_SIZE);
    mark("release");
    for (int i = 0; i < BLOCKS; i++)
        free(blocks[i]);
    return 0;
}
