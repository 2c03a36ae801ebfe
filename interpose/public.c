/* The functions of include/mtrace.h, exported under their public names: introspection,
 * statistics, regions (recorded when tracing) and trace control. */
#include "../include/mtrace.h"

#include "../allocator/alloc.h"
#include "../allocator/alloc_init.h"
#include "../allocator/introspect.h"
#include "../allocator/region.h"
#include "record.h"

MT_API void mt_show_alloc_mem_fd(int fd)
{
    mt_alloc_ensure_init();
    mt_introspect_show_mem(fd);
}

MT_API void mt_show_alloc_mem_ex_fd(int fd)
{
    mt_alloc_ensure_init();
    mt_introspect_show_mem_ex(fd);
}

MT_API void mt_show_alloc_hist_fd(int fd)
{
    mt_alloc_ensure_init();
    mt_introspect_show_hist(fd);
}

MT_API void show_alloc_mem(void)
{
    mt_show_alloc_mem_fd(1);
}

MT_API void show_alloc_mem_ex(void)
{
    mt_show_alloc_mem_ex_fd(1);
}

MT_API void show_alloc_hist(void)
{
    mt_show_alloc_hist_fd(1);
}

MT_API int mt_heap_check(void)
{
    mt_alloc_ensure_init();
    return mt_heap_check_report();
}

MT_API void mt_heap_stats(struct mt_heap_stats *out)
{
    mt_alloc_ensure_init();
    mt_heap_stats_fill(out);
}

/* ---- regions ------------------------------------------------------------------------------ */

#ifdef MT_TRACING
/* The frame of the exported function (or of a static helper inlined into it, or not:
 * the recorder walks our frames from there when its return address is ours). */
#define RECORD_REGION(op, region, ptr, size)                                                   \
    do {                                                                                       \
        if (mt_record_enter()) {                                                               \
            mt_record_region(op, region, ptr, size, __builtin_frame_address(0));               \
            mt_record_leave();                                                                 \
        }                                                                                      \
    } while (0)
#else
#define RECORD_REGION(op, region, ptr, size) ((void)0)
#endif

MT_API mt_arena_t *mt_arena_create(size_t reserve)
{
    return mt_region_create(reserve);
}

static void *push_recorded(mt_arena_t *arena, size_t size, size_t align, bool zero)
{
    void *p = mt_region_push(arena, size, align, zero);
    if (p)
        RECORD_REGION(MT_OP_REGION_PUSH, arena, p, size);
    return p;
}

MT_API void *mt_arena_push(mt_arena_t *arena, size_t size)
{
    return push_recorded(arena, size, 0, false);
}

MT_API void *mt_arena_push_zero(mt_arena_t *arena, size_t size)
{
    return push_recorded(arena, size, 0, true);
}

MT_API void *mt_arena_push_aligned(mt_arena_t *arena, size_t size, size_t align)
{
    return push_recorded(arena, size, align, false);
}

MT_API size_t mt_arena_pos(mt_arena_t *arena)
{
    return mt_region_pos(arena);
}

/* Pops are recorded before the memory is released, like frees. */
MT_API void mt_arena_pop_to(mt_arena_t *arena, size_t pos)
{
    RECORD_REGION(MT_OP_REGION_POP, arena, NULL, pos);
    mt_region_pop_to(arena, pos);
}

MT_API void mt_arena_pop(mt_arena_t *arena, size_t size)
{
#ifdef MT_TRACING
    size_t pos = mt_region_pos(arena);
    RECORD_REGION(MT_OP_REGION_POP, arena, NULL, size > pos ? 0 : pos - size);
#endif
    mt_region_pop(arena, size);
}

MT_API void mt_arena_clear(mt_arena_t *arena)
{
    RECORD_REGION(MT_OP_REGION_POP, arena, NULL, 0);
    mt_region_clear(arena);
}

MT_API void mt_arena_release(mt_arena_t *arena)
{
    RECORD_REGION(MT_OP_REGION_POP, arena, NULL, 0);
    mt_region_release(arena);
}

MT_API void mt_arena_set_auto_align(mt_arena_t *arena, int on)
{
    mt_region_set_auto_align(arena, on != 0);
}

/* ---- trace control: no-ops in libmtalloc.so; libmtrace.so's live in record.c ----------- */

#ifndef MT_TRACING
MT_API void mt_trace_pause(void)
{
}

MT_API void mt_trace_resume(void)
{
}

MT_API void mt_trace_mark(const char *label)
{
    (void)label;
}

MT_API int mt_trace_active(void)
{
    return 0;
}
#endif
