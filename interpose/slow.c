/* Slow variants of the exports (slow.h): allocator start-up, M_PERTURB fills, and, in
 * libmtrace.so, recording. The recording order is the invariant of the whole trace: a free
 * is recorded before the allocator may hand the block to another thread, an allocation
 * only after it succeeded. */
#include "slow.h"

#include <errno.h>
#include <string.h>

#include "../allocator/alloc.h"
#include "../allocator/alloc_init.h"
#include "../allocator/tunables.h"
#include "../common/platform.h"
#include "record.h"

/* ---- the allocator with perturb applied (what tracing wraps) ---------------------------- */

static void perturb_alloc(void *p, size_t size)
{
    if (p && (mt_alloc_mode_now() & MT_MODE_PERTURB))
        memset(p, mt_perturb_byte() ^ 0xff, size);
}

static void checked_free(void *ptr)
{
    if (ptr && (mt_alloc_mode_now() & MT_MODE_PERTURB)) {
        size_t usable = mt_alloc_usable_size_as(ptr, MT_API_FREE);
        if (usable == 0)
            return; /* reported (continue mode): do not free what is not a live block */
        memset(ptr, mt_perturb_byte(), usable);
    }
    mt_alloc_free(ptr);
}

static void *checked_malloc(size_t size)
{
    void *p = mt_alloc_malloc(size);
    perturb_alloc(p, size);
    return p;
}

static void *checked_aligned(size_t align, size_t size, void *(*fn)(size_t, size_t))
{
    void *p = fn(align, size);
    perturb_alloc(p, size);
    return p;
}

/* ---- entry points ------------------------------------------------------------------------ */

static inline void ensure_init(void)
{
    if (MT_UNLIKELY(mt_alloc_mode_now() & MT_MODE_UNINIT)) {
        mt_alloc_ensure_init();
#ifdef MT_TRACING
        mt_record_start();
#endif
    }
}

void *mt_slow_malloc(size_t size)
{
    ensure_init();
#ifdef MT_TRACING
    if (mt_record_enter()) {
        void *p = checked_malloc(size);
        if (p)
            mt_record_alloc(MT_OP_MALLOC, p, size, 0);
        mt_record_leave();
        return p;
    }
#endif
    return checked_malloc(size);
}

void mt_slow_free(void *ptr)
{
    ensure_init();
#ifdef MT_TRACING
    if (ptr && mt_record_enter()) {
        mt_record_free(ptr);
        checked_free(ptr);
        mt_record_leave();
        return;
    }
#endif
    checked_free(ptr);
}

void *mt_slow_calloc(size_t count, size_t size)
{
    ensure_init();
#ifdef MT_TRACING
    if (mt_record_enter()) {
        void *p = mt_alloc_calloc(count, size);
        if (p)
            mt_record_alloc(MT_OP_CALLOC, p, count * size, 0);
        mt_record_leave();
        return p;
    }
#endif
    return mt_alloc_calloc(count, size);
}

static void *realloc_common(enum mt_op op, void *ptr, size_t size)
{
    (void)op;
#ifdef MT_TRACING
    if (ptr && mt_record_enter()) {
        mt_record_realloc_begin(op, ptr, size);
        void *p = mt_alloc_realloc(ptr, size);
        mt_record_realloc_end(op, ptr, p, size);
        mt_record_leave();
        return p;
    }
    if (!ptr && mt_record_enter()) {
        void *p = checked_malloc(size);
        if (p)
            mt_record_alloc(op, p, size, 0);
        mt_record_leave();
        return p;
    }
#endif
    if (ptr == NULL)
        return checked_malloc(size);
    return mt_alloc_realloc(ptr, size);
}

void *mt_slow_realloc(void *ptr, size_t size)
{
    ensure_init();
    return realloc_common(MT_OP_REALLOC, ptr, size);
}

void *mt_slow_reallocarray(void *ptr, size_t count, size_t size)
{
    ensure_init();
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc_common(MT_OP_REALLOCARRAY, ptr, total);
}

static void *aligned_common(enum mt_op op, size_t align, size_t size, void *(*fn)(size_t, size_t))
{
    ensure_init();
    (void)op;
#ifdef MT_TRACING
    if (mt_record_enter()) {
        void *p = checked_aligned(align, size, fn);
        if (p)
            mt_record_alloc(op, p, size, align);
        mt_record_leave();
        return p;
    }
#endif
    return checked_aligned(align, size, fn);
}

int mt_slow_posix_memalign(void **out, size_t align, size_t size)
{
    ensure_init();
#ifdef MT_TRACING
    if (mt_record_enter()) {
        int rc = mt_alloc_posix_memalign(out, align, size);
        if (rc == 0) {
            perturb_alloc(*out, size);
            mt_record_alloc(MT_OP_POSIX_MEMALIGN, *out, size, align);
        }
        mt_record_leave();
        return rc;
    }
#endif
    int rc = mt_alloc_posix_memalign(out, align, size);
    if (rc == 0)
        perturb_alloc(*out, size);
    return rc;
}

void *mt_slow_aligned_alloc(size_t align, size_t size)
{
    return aligned_common(MT_OP_ALIGNED_ALLOC, align, size, mt_alloc_aligned_alloc);
}

void *mt_slow_memalign(size_t align, size_t size)
{
    return aligned_common(MT_OP_MEMALIGN, align, size, mt_alloc_memalign);
}

static void *valloc_adapter(size_t align, size_t size)
{
    (void)align;
    return mt_alloc_valloc(size);
}

static void *pvalloc_adapter(size_t align, size_t size)
{
    (void)align;
    return mt_alloc_pvalloc(size);
}

void *mt_slow_valloc(size_t size)
{
    return aligned_common(MT_OP_VALLOC, mt_os_page_size(), size, valloc_adapter);
}

void *mt_slow_pvalloc(size_t size)
{
    return aligned_common(MT_OP_PVALLOC, mt_os_page_size(), size, pvalloc_adapter);
}

size_t mt_slow_usable_size(void *ptr)
{
    ensure_init();
    return mt_alloc_usable_size(ptr);
}
