/* Stacks built to fool an unvalidated unwind cache (trace/unwind.h): the same call site
 * into malloc, at the same stack pointer and frame pointer, reached through different
 * callers, different recursion depths and alloca frames of different sizes. Each event
 * allocates a size unique to it and prints the stack it expects (function names, innermost
 * first, up to main); tests/py/test_stack_cache.py checks trace.db's stack of every event
 * against it.
 *
 *   stack_cache_prog EVENTS SEED */
#include <alloca.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define PATH_MAX_LEN 4
#define PAD_STEP 16
#define PAD_CHOICES 3
#define SIZE_BASE 16

enum fn { FN_FA, FN_FB, FN_GA, FN_GB, FN_HA, FN_HB, FN_COUNT };
static const char *const fn_name[FN_COUNT] = {"fa", "fb", "ga", "gb", "ha", "hb"};

struct path {
    int len;
    int fn[PATH_MAX_LEN];
    int pad[PATH_MAX_LEN];
    int leaf_pad;
    size_t size;
    uintptr_t salt; /* what ha and hb keep in rbp: different at every event */
};

static void step(const struct path *p, int at);

/* The one call site into malloc and free, below an alloca of its own: the same stack
 * pointer at the call then comes with different frame pointers (and stale copies of the
 * return addresses of earlier calls lie in the alloca'd bytes). */
static __attribute__((noinline)) void leaf(size_t size, int pad_bytes)
{
    volatile char *pad = alloca((size_t)pad_bytes);
    if (pad_bytes)
        pad[0] = 1;
    void *block = malloc(size);
    __asm__ volatile("" : : "r"(block) : "memory");
    free(block);
    __asm__ volatile("" ::: "memory");
}

/* fa and fb: identical frames (frame-pointer based, alloca of a varying size). */
static __attribute__((noinline)) void fa(const struct path *p, int at)
{
    volatile char *pad = alloca((size_t)p->pad[at]);
    if (p->pad[at])
        pad[0] = 1;
    step(p, at + 1);
    __asm__ volatile("" ::: "memory");
}

static __attribute__((noinline)) void fb(const struct path *p, int at)
{
    volatile char *pad = alloca((size_t)p->pad[at]);
    if (p->pad[at])
        pad[0] = 1;
    step(p, at + 1);
    __asm__ volatile("" ::: "memory");
}

/* ga and gb: identical frames without a frame pointer (CFA from rsp). */
static __attribute__((noinline, optimize("omit-frame-pointer"))) void ga(const struct path *p, int at)
{
    step(p, at + 1);
    __asm__ volatile("" ::: "memory");
}

static __attribute__((noinline, optimize("omit-frame-pointer"))) void gb(const struct path *p, int at)
{
    step(p, at + 1);
    __asm__ volatile("" ::: "memory");
}

/* ha and hb: without a frame pointer, keeping data in rbp across the call as code built
 * without frame pointers does (the unwinder restores that rbp from where they saved it,
 * but no CFA depends on it: the cache must not be keyed on it, nor be fooled by it). */
static __attribute__((noinline, optimize("omit-frame-pointer"))) void ha(const struct path *p, int at)
{
    register uintptr_t data __asm__("rbp") = p->salt;
    __asm__ volatile("" : "+r"(data));
    step(p, at + 1);
    __asm__ volatile("" : : "r"(data) : "memory");
}

static __attribute__((noinline, optimize("omit-frame-pointer"))) void hb(const struct path *p, int at)
{
    register uintptr_t data __asm__("rbp") = p->salt ^ 1;
    __asm__ volatile("" : "+r"(data));
    step(p, at + 1);
    __asm__ volatile("" : : "r"(data) : "memory");
}

static __attribute__((noinline)) void step(const struct path *p, int at)
{
    if (at == p->len) {
        leaf(p->size, p->leaf_pad);
        return;
    }
    switch (p->fn[at]) {
    case FN_FA: fa(p, at); break;
    case FN_FB: fb(p, at); break;
    case FN_GA: ga(p, at); break;
    case FN_GB: gb(p, at); break;
    case FN_HA: ha(p, at); break;
    default: hb(p, at); break;
    }
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
    int events = argc > 1 ? atoi(argv[1]) : 1000;
    uint64_t x = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    static char line[256];
    for (int i = 0; i < events; i++) {
        struct path p;
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        p.len = (int)((x >> 33) % (PATH_MAX_LEN + 1));
        for (int k = 0; k < p.len; k++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            p.fn[k] = (int)((x >> 33) % FN_COUNT);
            p.pad[k] = (int)((x >> 40) % PAD_CHOICES) * PAD_STEP;
        }
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        p.leaf_pad = (int)((x >> 33) % PAD_CHOICES) * PAD_STEP;
        p.size = SIZE_BASE + (size_t)i;
        p.salt = (uintptr_t)x;
        /* Expected, innermost first: leaf, the path reversed (each level is one call from
         * step into a path function, then step again), main. */
        int n = snprintf(line, sizeof line, "%zu leaf step", p.size);
        for (int k = p.len - 1; k >= 0; k--)
            n += snprintf(line + n, sizeof line - (size_t)n, " %s step", fn_name[p.fn[k]]);
        snprintf(line + n, sizeof line - (size_t)n, " main\n");
        step(&p, 0);
        fputs(line, stdout);
    }
    return 0;
}
