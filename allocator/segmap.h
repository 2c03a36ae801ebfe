/* The segment map: which 4 MiB segments of the address space belong to the allocator, and
 * as what.
 *
 * One byte per segment over the 47-bit user address space (32 M entries, 32 MiB of address
 * space, touched sparsely: one 4 KiB page of the map covers 16 GiB). free()
 * reads it first, so a pointer that is not ours (stack, global, another allocator's,
 * interior of nothing) is recognised without touching memory that may not be mapped.
 *
 * Entry: low 2 bits kind, high 6 bits the distance in segments from the start of the
 * region the segment belongs to (medium regions span several segments). */
#ifndef MT_ALLOCATOR_SEGMAP_H
#define MT_ALLOCATOR_SEGMAP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/compiler.h"
#include "config.h"

enum mt_segment_kind {
    MT_SEG_NONE = 0,   /* not ours */
    MT_SEG_SMALL = 1,  /* a small-block segment: header at the segment start */
    MT_SEG_MEDIUM = 2, /* part of a medium region: header `distance` segments before */
};

#define MT_SEGMAP_ADDRESS_BITS 47
#define MT_SEGMAP_ENTRIES ((size_t)1 << (MT_SEGMAP_ADDRESS_BITS - MT_SEGMENT_SHIFT))
#define MT_SEGMAP_MAX_DISTANCE 63

/* A static array in .bss: the address is a link-time constant, so a lookup is one load.
 * The kernel maps .bss lazily, so the 32 MiB cost only the pages that are touched. */
extern MT_HIDDEN _Atomic uint8_t mt_segmap[MT_SEGMAP_ENTRIES];

bool mt_segmap_init(void);

MT_INLINE uint8_t mt_segmap_entry(uintptr_t addr)
{
    uintptr_t index = addr >> MT_SEGMENT_SHIFT;
    if (MT_UNLIKELY(index >= MT_SEGMAP_ENTRIES))
        return MT_SEG_NONE;
    return atomic_load_explicit(&mt_segmap[index], memory_order_relaxed);
}

MT_INLINE enum mt_segment_kind mt_segmap_kind(uint8_t entry)
{
    return (enum mt_segment_kind)(entry & 3);
}

/* Start of the region containing addr (for MT_SEG_MEDIUM entries). */
MT_INLINE uintptr_t mt_segmap_region_start(uintptr_t addr, uint8_t entry)
{
    return (addr & ~(uintptr_t)MT_SEGMENT_MASK) - ((uintptr_t)(entry >> 2) << MT_SEGMENT_SHIFT);
}

/* Mark [start, start + size) (segment-aligned) as `kind`; distances count from `start`. */
void mt_segmap_set(uintptr_t start, size_t size, enum mt_segment_kind kind);
void mt_segmap_clear(uintptr_t start, size_t size);

#endif
