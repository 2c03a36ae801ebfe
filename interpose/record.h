/* The interposer's side of tracing (libmtrace.so only): bracketing a hooked call and
 * recording what it did. Implemented in record.c over trace/.
 *
 * Protocol for one hooked call:
 *     if (mt_record_enter()) {          // tracing on and not re-entered from the tracer
 *         ...record frees BEFORE releasing the block...
 *         ...call the allocator...
 *         ...record allocations AFTER they succeeded...
 *         mt_record_leave();
 *     }
 * A realloc is recorded as mt_record_realloc_begin (the old block is released: nobody may
 * see its address reused before this is recorded) and mt_record_realloc_end (the result;
 * NULL means the realloc failed and the old block is live again). */
#ifndef MT_INTERPOSE_RECORD_H
#define MT_INTERPOSE_RECORD_H

#include <stdbool.h>
#include <stddef.h>

#include "../trace/event.h"

#ifdef MT_TRACING
bool mt_record_enter(void);
void mt_record_leave(void);
void mt_record_alloc(enum mt_op op, const void *ptr, size_t size, size_t align);
void mt_record_free(const void *ptr);
void mt_record_realloc_begin(enum mt_op op, const void *old_ptr, size_t size);
void mt_record_realloc_end(enum mt_op op, const void *old_ptr, const void *new_ptr, size_t size);
void mt_record_region(enum mt_op op, const void *region, const void *ptr, size_t size);
#endif

#endif
