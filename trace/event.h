/* What the tracer records: the operations, shared by the interposer (which emits them),
 * the collector (which stores them) and docs/trace-format.md (which documents the numbers:
 * they are part of the trace format and never renumbered). */
#ifndef MT_TRACE_EVENT_H
#define MT_TRACE_EVENT_H

enum mt_op {
    MT_OP_MALLOC = 1,
    MT_OP_CALLOC = 2,
    MT_OP_REALLOC = 3,
    MT_OP_REALLOCARRAY = 4,
    MT_OP_POSIX_MEMALIGN = 5,
    MT_OP_ALIGNED_ALLOC = 6,
    MT_OP_MEMALIGN = 7,
    MT_OP_VALLOC = 8,
    MT_OP_PVALLOC = 9,
    MT_OP_FREE = 10,
    MT_OP_REGION_PUSH = 11, /* mt_arena_push*: ptr, size, aux = region */
    MT_OP_REGION_POP = 12,  /* mt_arena_pop*, clear, release: aux = region, size = new position */
    MT_OP_COUNT
};

#endif
