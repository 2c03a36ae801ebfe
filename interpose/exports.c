/* The exported malloc family (hooks.h): the fast path calls the allocator inline; any
 * process-wide mode (not yet initialised, perturb, debug, tracing) diverts to slow.c with
 * one predictable branch on a read-mostly global. */
#include <malloc.h>
#include <stdlib.h>

#include "../allocator/alloc.h"
#include "../allocator/debug.h"
#include "hooks.h"
#include "slow.h"

#define MODE_SET() MT_UNLIKELY(mt_alloc_mode_now() != 0)
/* Debug mode alone (initialised, not recording, no M_PERTURB): the hot functions call the
 * debug layer directly, with the caller as the site. Through slow.c, a malloc/free pair
 * took six calls, a thread-local store of the caller and the init and mode tests again
 * (a tenth of a tight malloc/free loop's time in debug mode). */
#define DEBUG_ONLY(mode) ((mode) == MT_MODE_DEBUG)
/* Entering a slow variant: remember who called us (only on the slow path). */
#define SLOW(call) (mt_interpose_caller = __builtin_return_address(0), call)
#ifdef MT_TRACING
/* This function's own frame: its record holds the program's call site, where the
 * recorder's stack starts (trace/unwind.h's cache key), with no walk of our frames. */
#define FRAME __builtin_frame_address(0)
#else
#define FRAME NULL
#endif

MT_API void *malloc(size_t size)
{
    uint32_t mode = mt_alloc_mode_now();
    if (MT_UNLIKELY(mode != 0)) {
        if (DEBUG_ONLY(mode))
            return mt_debug_entries.malloc(size, __builtin_return_address(0));
        return SLOW(mt_slow_malloc(size, FRAME));
    }
    return mt_alloc_malloc(size);
}

MT_API void free(void *ptr)
{
    uint32_t mode = mt_alloc_mode_now();
    if (MT_UNLIKELY(mode != 0)) {
        if (DEBUG_ONLY(mode))
            mt_debug_entries.free(ptr, MT_API_FREE, __builtin_return_address(0));
        else
            SLOW(mt_slow_free(ptr, FRAME));
        return;
    }
    mt_alloc_free(ptr);
}

MT_API void *calloc(size_t count, size_t size)
{
    uint32_t mode = mt_alloc_mode_now();
    if (MT_UNLIKELY(mode != 0)) {
        if (DEBUG_ONLY(mode))
            return mt_debug_calloc(count, size, __builtin_return_address(0));
        return SLOW(mt_slow_calloc(count, size, FRAME));
    }
    return mt_alloc_calloc(count, size);
}

MT_API void *realloc(void *ptr, size_t size)
{
    if (MODE_SET())
        return SLOW(mt_slow_realloc(ptr, size, FRAME));
    return mt_alloc_realloc(ptr, size);
}

MT_API void *reallocarray(void *ptr, size_t count, size_t size)
{
    if (MODE_SET())
        return SLOW(mt_slow_reallocarray(ptr, count, size, FRAME));
    return mt_alloc_reallocarray(ptr, count, size);
}

MT_API int posix_memalign(void **out, size_t align, size_t size)
{
    if (MODE_SET())
        return SLOW(mt_slow_posix_memalign(out, align, size, FRAME));
    return mt_alloc_posix_memalign(out, align, size);
}

MT_API void *aligned_alloc(size_t align, size_t size)
{
    if (MODE_SET())
        return SLOW(mt_slow_aligned_alloc(align, size, FRAME));
    return mt_alloc_aligned_alloc(align, size);
}

MT_API void *memalign(size_t align, size_t size)
{
    if (MODE_SET())
        return SLOW(mt_slow_memalign(align, size, FRAME));
    return mt_alloc_memalign(align, size);
}

MT_API void *valloc(size_t size)
{
    if (MODE_SET())
        return SLOW(mt_slow_valloc(size, FRAME));
    return mt_alloc_valloc(size);
}

MT_API void *pvalloc(size_t size)
{
    if (MODE_SET())
        return SLOW(mt_slow_pvalloc(size, FRAME));
    return mt_alloc_pvalloc(size);
}

MT_API size_t malloc_usable_size(void *ptr)
{
    if (MODE_SET())
        return SLOW(mt_slow_usable_size(ptr));
    return mt_alloc_usable_size(ptr);
}

MT_API int malloc_trim(size_t pad)
{
    return mt_alloc_trim(pad);
}

MT_API struct mallinfo2 mallinfo2(void)
{
    return mt_alloc_mallinfo2();
}

MT_API struct mallinfo mallinfo(void)
{
    return mt_alloc_mallinfo();
}

MT_API void malloc_stats(void)
{
    mt_alloc_malloc_stats();
}

MT_API int mallopt(int param, int value)
{
    return mt_alloc_mallopt(param, value);
}
