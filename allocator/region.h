/* Regions ("arenas" in the public API, include/mtrace.h): scoped bump allocation over one
 * reservation of address space.
 *
 * A region reserves its whole size once (PROT_NONE), commits pages as the position grows
 * past them, and decommits what lies beyond the position when a pop or clear leaves more
 * than MT_REGION_DECOMMIT_SLACK bytes of committed memory unused (hysteresis, so a loop
 * of push/pop across a page boundary does not make a system call each time). The handle
 * lives in the first page of the reservation, so a region costs one mapping. */
#ifndef MT_ALLOCATOR_REGION_H
#define MT_ALLOCATOR_REGION_H

#include <stdbool.h>
#include <stddef.h>

#include "../include/mtrace.h"

/* Committed but unused bytes a region keeps after a pop before decommitting the rest. */
#define MT_REGION_DECOMMIT_SLACK ((size_t)256 << 10)
/* Reservation when the caller passes 0. */
#define MT_REGION_DEFAULT_RESERVE ((size_t)64 << 30)

mt_arena_t *mt_region_create(size_t reserve);
/* align 0: the region's automatic alignment (16, or 1 when auto-alignment is off). NULL
 * with errno ENOMEM when the reservation is exhausted or commit fails. */
void *mt_region_push(mt_arena_t *region, size_t size, size_t align, bool zero);
size_t mt_region_pos(const mt_arena_t *region);
void mt_region_pop_to(mt_arena_t *region, size_t pos);
void mt_region_pop(mt_arena_t *region, size_t size);
void mt_region_clear(mt_arena_t *region);
void mt_region_release(mt_arena_t *region);
void mt_region_set_auto_align(mt_arena_t *region, bool on);

#endif
