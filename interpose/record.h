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
#include <stdatomic.h>

#include "../common/compiler.h"
#include "../trace/clock.h"
#include "../trace/session.h"

/* Hooked calls nested on one thread beyond which the recorder refuses (and counts) them:
 * a signal handler nests one level, a handler interrupted by another signal two; deeper
 * means the recorder is recursing into itself (libunwind allocating, say), which must
 * stop somewhere. */
#define MT_RECORD_MAX_NESTED_CALLS 8

/* Recording is on (the session was accepted, and not finished), and not paused: record.c's. */
extern _Atomic bool mt_record_recording;
extern _Atomic bool mt_record_paused;
/* A call refused by the guard: counted in the process area's `unrecorded`; false. */
bool mt_record_refuse(void);

/* Inline: every hooked call of a traced process passes here. */
static inline bool mt_record_enter(void)
{
    if (MT_UNLIKELY(!atomic_load_explicit(&mt_record_recording, memory_order_relaxed) ||
                    atomic_load_explicit(&mt_record_paused, memory_order_relaxed)))
        return false;
    struct mt_thread_state *t = mt_session_thread_raw();
    if (MT_UNLIKELY(t->busy || t->calls >= MT_RECORD_MAX_NESTED_CALLS))
        return mt_record_refuse();
    t->calls++;
    return true;
}

static inline void mt_record_leave(void)
{
    mt_session_thread_raw()->calls--;
}

/* `frame`: the frame of the exported function the program called
 * (__builtin_frame_address(0) there), where the event's stack starts; NULL: found by
 * walking our own frames (trace/unwind.h). */
void mt_record_alloc(enum mt_op op, const void *ptr, size_t size, size_t align, const void *frame);
void mt_record_free(const void *ptr, const void *frame);
void mt_record_realloc_begin(enum mt_op op, const void *old_ptr, size_t size, const void *frame);
void mt_record_realloc_end(enum mt_op op, const void *old_ptr, const void *new_ptr, size_t size);
void mt_record_region(enum mt_op op, const void *region, const void *ptr, size_t size, const void *frame);
#endif

#endif
