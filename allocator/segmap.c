/* Segment map storage (see segmap.h). */
#include "segmap.h"


_Atomic uint8_t mt_segmap[MT_SEGMAP_ENTRIES] MT_BIG_BSS;

bool mt_segmap_init(void)
{
    return true;
}

void mt_segmap_set(uintptr_t start, size_t size, enum mt_segment_kind kind)
{
    uintptr_t first = start >> MT_SEGMENT_SHIFT;
    uintptr_t count = size >> MT_SEGMENT_SHIFT;
    for (uintptr_t i = 0; i < count; i++) {
        uintptr_t distance = i > MT_SEGMAP_MAX_DISTANCE ? MT_SEGMAP_MAX_DISTANCE : i;
        atomic_store_explicit(&mt_segmap[first + i], (uint8_t)(kind | (distance << 2)), memory_order_release);
    }
}

void mt_segmap_clear(uintptr_t start, size_t size)
{
    uintptr_t first = start >> MT_SEGMENT_SHIFT;
    uintptr_t count = size >> MT_SEGMENT_SHIFT;
    for (uintptr_t i = 0; i < count; i++)
        atomic_store_explicit(&mt_segmap[first + i], MT_SEG_NONE, memory_order_release);
}
