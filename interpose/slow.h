/* The slow variants of the exported functions: taken when mt_alloc_mode has any bit set
 * (allocator not yet initialised, M_PERTURB, MTRACE_DEBUG, tracing). */
#ifndef MT_INTERPOSE_SLOW_H
#define MT_INTERPOSE_SLOW_H

#include <stddef.h>

void *mt_slow_malloc(size_t size);
void mt_slow_free(void *ptr);
void *mt_slow_calloc(size_t count, size_t size);
void *mt_slow_realloc(void *ptr, size_t size);
void *mt_slow_reallocarray(void *ptr, size_t count, size_t size);
int mt_slow_posix_memalign(void **out, size_t align, size_t size);
void *mt_slow_aligned_alloc(size_t align, size_t size);
void *mt_slow_memalign(size_t align, size_t size);
void *mt_slow_valloc(size_t size);
void *mt_slow_pvalloc(size_t size);
size_t mt_slow_usable_size(void *ptr);

#endif
