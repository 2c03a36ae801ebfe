/* The slow variants of the exported functions: taken when mt_alloc_mode has any bit set
 * (allocator not yet initialised, M_PERTURB, MTRACE_DEBUG, tracing). */
#ifndef MT_INTERPOSE_SLOW_H
#define MT_INTERPOSE_SLOW_H

#include <stddef.h>

#include "../common/compiler.h"

/* The code address that called the exported function, set by exports.c before it enters a
 * slow variant: the debug allocator keeps it as the block's allocation or free site. */
extern MT_TLS const void *mt_interpose_caller;

/* `frame`: the exported function's __builtin_frame_address(0) in libmtrace.so (the
 * recorder starts the event's stack there: record.h), NULL elsewhere. */
void *mt_slow_malloc(size_t size, const void *frame);
void mt_slow_free(void *ptr, const void *frame);
void *mt_slow_calloc(size_t count, size_t size, const void *frame);
void *mt_slow_realloc(void *ptr, size_t size, const void *frame);
void *mt_slow_reallocarray(void *ptr, size_t count, size_t size, const void *frame);
int mt_slow_posix_memalign(void **out, size_t align, size_t size, const void *frame);
void *mt_slow_aligned_alloc(size_t align, size_t size, const void *frame);
void *mt_slow_memalign(size_t align, size_t size, const void *frame);
void *mt_slow_valloc(size_t size, const void *frame);
void *mt_slow_pvalloc(size_t size, const void *frame);
size_t mt_slow_usable_size(void *ptr);

#endif
