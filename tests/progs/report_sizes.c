/* Recorded by tests/py/test_report_integration.py: a known mix of requested sizes, each an
 * odd value no C runtime uses, so the trace's `sizes` rows for them are exact:
 * 10 x 777, 20 x 1234, 5 x 4321, 3 x 70001 (all freed). */
#include <stdlib.h>

struct mix { size_t size; int count; };
static const struct mix MIX[] = { { 777, 10 }, { 1234, 20 }, { 4321, 5 }, { 70001, 3 } };
#define MIX_LEN (sizeof MIX / sizeof MIX[0])
#define MAX_BLOCKS 64

__attribute__((noinline)) static void alloc_mix(void **out, int *n)
{
    for (unsigned m = 0; m < MIX_LEN; m++)
        for (int i = 0; i < MIX[m].count; i++) {
            char *p = malloc(MIX[m].size);
            p[0] = 1;
            out[(*n)++] = p;
        }
}

int main(void)
{
    void *blocks[MAX_BLOCKS];
    int n = 0;
    alloc_mix(blocks, &n);
    for (int i = 0; i < n; i++)
        free(blocks[i]);
    return 0;
}
