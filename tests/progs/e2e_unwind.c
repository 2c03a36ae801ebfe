// link: -lunwind
/* Recorded by tests/py/test_tracing_e2e.py: a program that uses libunwind itself, as the
 * tracer does inside malloc, must behave the same traced and untraced. Each level of a
 * recursion takes a backtrace with unw_backtrace and mallocs a copy of it; the program
 * prints how many frames each level saw (the same with and without the tracer, since the
 * tracer's frames are never on the program's stack when it unwinds). */
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEVELS 20
#define MAX_FRAMES 64

static int depths[LEVELS];

__attribute__((noinline)) static int descend(int level)
{
    void *frames[MAX_FRAMES];
    int n = unw_backtrace(frames, MAX_FRAMES);
    void **copy = malloc(sizeof(void *) * (size_t)n);
    if (!copy)
        abort();
    memcpy(copy, frames, sizeof(void *) * (size_t)n);
    depths[level] = n;
    int deeper = level + 1 < LEVELS ? descend(level + 1) : 0;
    free(copy);
    return deeper + 1;
}

int main(void)
{
    int levels = descend(0);
    printf("levels %d\n", levels);
    for (int i = 0; i < LEVELS; i++)
        printf("level %d frames %d\n", i, depths[i] - depths[0]);
    return 0;
}
