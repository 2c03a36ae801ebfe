/* TEMPORARY: regions not yet implemented (allocator/region.c replaces this file). */
#include <errno.h>

#include "region.h"

mt_arena_t *mt_region_create(size_t reserve) { (void)reserve; errno = ENOMEM; return NULL; }
void *mt_region_push(mt_arena_t *r, size_t size, size_t align, bool zero) { (void)r; (void)size; (void)align; (void)zero; errno = ENOMEM; return NULL; }
size_t mt_region_pos(const mt_arena_t *r) { (void)r; return 0; }
void mt_region_pop_to(mt_arena_t *r, size_t pos) { (void)r; (void)pos; }
void mt_region_pop(mt_arena_t *r, size_t size) { (void)r; (void)size; }
void mt_region_clear(mt_arena_t *r) { (void)r; }
void mt_region_release(mt_arena_t *r) { (void)r; }
void mt_region_set_auto_align(mt_arena_t *r, bool on) { (void)r; (void)on; }
