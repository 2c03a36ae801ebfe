/* Size classes of the small blocks.
 *
 * 16-byte steps up to 256 bytes (16 classes: programs allocate mostly small sizes and
 * glibc's granularity is 16 too, so nobody pays more than glibc), then 8 classes per
 * doubling up to 8 KiB (40 classes: at most 12.5% and on average about 6% rounding waste).
 * Every class is a multiple of 16, and the powers of two are classes, which is what lets
 * aligned requests up to 8 KiB be served from slabs (see mt_size_class_aligned). */
#ifndef MT_ALLOCATOR_SIZE_CLASS_H
#define MT_ALLOCATOR_SIZE_CLASS_H

#include <stddef.h>
#include <stdint.h>

#include "../common/compiler.h"
#include "config.h"

#define MT_LINEAR_CLASS_MAX 256 /* sizes up to here use 16-byte steps */
#define MT_CLASSES_PER_DOUBLING 8

extern MT_HIDDEN const uint32_t mt_class_size[MT_SMALL_CLASSES];
/* Class for each size rounded up to 16, for every small size: malloc's size test is then
 * the one against MT_SMALL_MAX it makes anyway, and the class one load (513 bytes; every
 * class boundary is a multiple of 16). Above 1 KiB the table follows the formula
 * 16 + (lg - 8) * 8 + ((size - 1) >> (lg - 3)) - 8 with lg = floor(log2(size - 1)): the
 * position within the power-of-two range, 8 steps per doubling (tests/c/test_size_class.c
 * checks the table against the formula and mt_class_size). */
#define MT_CLASS_LOOKUP_MAX MT_SMALL_MAX
extern MT_HIDDEN const uint8_t mt_class_lookup[MT_CLASS_LOOKUP_MAX / 16 + 1];

/* Class index for a request of `size` bytes, size <= MT_SMALL_MAX. Size 0 is class 0. */
MT_INLINE unsigned mt_size_class(size_t size)
{
    return mt_class_lookup[(size + 15) >> 4];
}

/* Smallest class of at least `size` bytes whose block size is a multiple of `align`
 * (a power of two <= 8 KiB), so every slot of its pages is aligned; or MT_SMALL_CLASSES
 * when the request must go to the medium allocator. */
unsigned mt_size_class_aligned(size_t size, size_t align);

#endif
