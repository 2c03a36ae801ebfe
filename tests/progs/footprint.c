/* Run by tests/py/test_footprint.py under LD_PRELOAD=libmtalloc.so: a program that only
 * mallocs and frees small blocks (as the `loop` bench does), then prints how much of
 * libmtalloc.so's file is resident, by permission of its mappings (/proc/self/smaps):
 * `text_kib=N rodata_kib=N` (r-x, and r-- which holds the headers, read-only data and
 * relro). interpose/resident.ld lays the library out so that this is a few pages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIZE_STEP 16
#define SIZE_COUNT 16
#define ROUNDS 1000

int main(void)
{
    for (int i = 0; i < ROUNDS * SIZE_COUNT; i++) {
        volatile char *p = malloc((size_t)SIZE_STEP * (1 + i % SIZE_COUNT));
        if (!p)
            return 1;
        p[0] = (char)i;
        free((void *)p);
    }
    FILE *smaps = fopen("/proc/self/smaps", "r");
    if (!smaps)
        return 1;
    char line[512], perms[8] = "";
    int ours = 0;
    long text_kib = 0, rodata_kib = 0;
    while (fgets(line, sizeof line, smaps)) {
        unsigned long lo, hi;
        char path[256] = "";
        long kib;
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %255s", &lo, &hi, perms, path) >= 3) {
            const char *slash = strrchr(path, '/');
            ours = slash && strcmp(slash + 1, "libmtalloc.so") == 0;
        } else if (ours && sscanf(line, "Rss: %ld kB", &kib) == 1) {
            if (strcmp(perms, "r-xp") == 0)
                text_kib += kib;
            else if (strcmp(perms, "r--p") == 0)
                rodata_kib += kib;
        }
    }
    fclose(smaps);
    printf("text_kib=%ld rodata_kib=%ld\n", text_kib, rodata_kib);
    return 0;
}
