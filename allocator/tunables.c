/* mallopt() and the allocator options (see tunables.h). */
#include "tunables.h"

#include <malloc.h>

#include "../common/options.h"
#include "config.h"

struct mt_tunables mt_tunables;

void mt_tunables_init(void)
{
    long long threshold = mt_option_int(MT_OPT_MMAP_THRESHOLD);
    atomic_store(&mt_tunables.mmap_threshold, threshold > 0 ? (size_t)threshold : MT_MMAP_THRESHOLD_DEFAULT);
    atomic_store(&mt_tunables.mmap_threshold_fixed, threshold > 0);
    atomic_store(&mt_tunables.trim_threshold, (size_t)mt_option_int(MT_OPT_TRIM_THRESHOLD));
    atomic_store(&mt_tunables.trim_threshold_fixed, mt_option_is_set(MT_OPT_TRIM_THRESHOLD));
    atomic_store(&mt_tunables.top_pad, (size_t)mt_option_int(MT_OPT_TOP_PAD));
    atomic_store(&mt_tunables.arena_max, (int)mt_option_int(MT_OPT_ARENA_MAX));
    atomic_store(&mt_tunables.perturb, (int)mt_option_int(MT_OPT_PERTURB));
    atomic_store(&mt_tunables.mmap_max, 65536);
}

int mt_tunables_mallopt(int param, int value)
{
    switch (param) {
    case M_TRIM_THRESHOLD:
        if (value < 0)
            return 0;
        atomic_store(&mt_tunables.trim_threshold, (size_t)value);
        atomic_store(&mt_tunables.trim_threshold_fixed, true);
        atomic_store(&mt_tunables.mmap_threshold_fixed, true);
        return 1;
    case M_TOP_PAD:
        if (value < 0)
            return 0;
        atomic_store(&mt_tunables.top_pad, (size_t)value);
        atomic_store(&mt_tunables.mmap_threshold_fixed, true);
        return 1;
    case M_MMAP_THRESHOLD:
        /* glibc refuses thresholds above half its maximum heap, i.e. above 32 MiB. */
        if (value < 0 || (size_t)value > MT_MMAP_THRESHOLD_MAX)
            return 0;
        atomic_store(&mt_tunables.mmap_threshold, (size_t)value);
        atomic_store(&mt_tunables.mmap_threshold_fixed, true);
        return 1;
    case M_MMAP_MAX:
        if (value < 0)
            return 0;
        atomic_store(&mt_tunables.mmap_max, value);
        atomic_store(&mt_tunables.mmap_threshold_fixed, true);
        return 1;
    case M_ARENA_MAX:
        if (value <= 0)
            return 0;
        atomic_store(&mt_tunables.arena_max, value);
        return 1;
    case M_PERTURB:
        atomic_store(&mt_tunables.perturb, value & 0xff);
        return 1;
    case M_MXFAST:
    case M_ARENA_TEST:
    case M_CHECK_ACTION:
        /* Accepted for compatibility; our thread caches and checks are not tuned by them. */
        return 1;
    default:
        return 0;
    }
}

void mt_tunables_note_mapped_free(size_t size)
{
    if (atomic_load_explicit(&mt_tunables.mmap_threshold_fixed, memory_order_relaxed))
        return;
    if (size <= mt_mmap_threshold() || size > MT_MMAP_THRESHOLD_MAX)
        return;
    atomic_store_explicit(&mt_tunables.mmap_threshold, size, memory_order_relaxed);
    if (!atomic_load_explicit(&mt_tunables.trim_threshold_fixed, memory_order_relaxed))
        atomic_store_explicit(&mt_tunables.trim_threshold, 2 * size, memory_order_relaxed);
}
