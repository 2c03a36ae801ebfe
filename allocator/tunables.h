/* Run-time tunables: mallopt() and the MTRACE_* allocator options, with glibc's adaptive
 * mmap threshold.
 *
 * Read on slow paths only (choosing medium versus mmap, trimming), so plain relaxed
 * atomics suffice: a racing mallopt() takes effect for the next decision. */
#ifndef MT_ALLOCATOR_TUNABLES_H
#define MT_ALLOCATOR_TUNABLES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct mt_tunables {
    _Atomic size_t mmap_threshold;   /* requests >= this get their own mapping */
    _Atomic bool mmap_threshold_fixed; /* set by the user: stop adapting */
    _Atomic size_t trim_threshold;   /* free top memory beyond this goes back to the OS */
    _Atomic bool trim_threshold_fixed;
    _Atomic size_t top_pad;          /* extra bytes committed each time a heap grows */
    _Atomic int arena_max;           /* most medium arenas; 0 = automatic */
    _Atomic int perturb;             /* M_PERTURB byte, 0 = off */
    _Atomic int mmap_max;            /* M_MMAP_MAX: 0 disables separate mappings */
};

extern struct mt_tunables mt_tunables;

void mt_tunables_init(void);

/* mallopt() semantics: 1 on success, 0 for an unknown parameter or bad value. */
int mt_tunables_mallopt(int param, int value);

/* glibc's adaptation: freeing a mapped block of `size` (below the maximum) raises the
 * threshold to it and the trim threshold to twice it, so a program that repeatedly
 * allocates and frees blocks of one large size stops paying for mmap and munmap. */
void mt_tunables_note_mapped_free(size_t size);

static inline size_t mt_mmap_threshold(void)
{
    return atomic_load_explicit(&mt_tunables.mmap_threshold, memory_order_relaxed);
}
static inline size_t mt_trim_threshold(void)
{
    return atomic_load_explicit(&mt_tunables.trim_threshold, memory_order_relaxed);
}
static inline size_t mt_top_pad(void)
{
    return atomic_load_explicit(&mt_tunables.top_pad, memory_order_relaxed);
}
static inline int mt_perturb_byte(void)
{
    return atomic_load_explicit(&mt_tunables.perturb, memory_order_relaxed);
}

#endif
