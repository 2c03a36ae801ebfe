/* Slow variants of the exports (slow.h): allocator start-up, M_PERTURB fills,
 * MTRACE_ZERO_ON_FREE clearing of freed and moved blocks without the debug layer, the
 * debug allocator (and its check of the quarantine at exit) and, in libmtrace.so,
 * recording.
 *
 * Two layers: the "checked" functions below are the allocator as the program should see
 * it in the current mode (debug layer, perturb fills, argument rules); the entry points
 * wrap them with recording. The recording order is the invariant of the whole trace: a
 * free is recorded before the allocator may hand the block to another thread, an
 * allocation only after it succeeded. */
#include "slow.h"

#include <errno.h>
#include <string.h>

#include "../allocator/alloc.h"
#include "../allocator/alloc_init.h"
#include "../allocator/debug.h"
#include "../allocator/tunables.h"
#include "error_report.h"
#include "fault.h"
#include "record.h"

MT_TLS const void *mt_interpose_caller;

/* ---- the allocator in the current mode ----------------------------------------------------- */

static bool debug_on(void)
{
    return (mt_alloc_mode_now() & MT_MODE_DEBUG) != 0;
}

static void perturb_alloc(void *p, size_t size)
{
    if (p && (mt_alloc_mode_now() & MT_MODE_PERTURB))
        memset(p, mt_perturb_byte() ^ 0xff, size);
}

/* What a freed block is filled with (MTRACE_ZERO_ON_FREE wins over M_PERTURB), or -1 for
 * nothing. */
static int free_fill_byte(void)
{
    uint32_t mode = mt_alloc_mode_now();
    if (mode & MT_MODE_ZERO)
        return 0;
    if (mode & MT_MODE_PERTURB)
        return mt_perturb_byte();
    return -1;
}

/* A block with a mapping of its own: freeing it unmaps it, and the OS hands out only
 * zeroed pages, so zeroing it first would only cost time. */
static bool is_large(const void *ptr)
{
    return mt_segmap_kind(mt_segmap_entry((uintptr_t)ptr)) == MT_SEG_NONE;
}

static void checked_free(void *ptr, enum mt_api api)
{
    if (debug_on()) {
        mt_debug_free(ptr, api, mt_interpose_caller);
        return;
    }
    int fill = free_fill_byte();
    if (ptr && fill >= 0 && !(fill == 0 && is_large(ptr))) {
        size_t usable = mt_alloc_usable_size_as(ptr, api);
        if (usable == 0)
            return; /* reported (continue mode): do not free what is not a live block */
        memset(ptr, fill, usable);
    }
    mt_alloc_free_as(ptr, api);
}

static void *checked_malloc(size_t size)
{
    if (debug_on())
        return mt_debug_malloc(size, mt_interpose_caller);
    void *p = mt_alloc_malloc(size);
    perturb_alloc(p, size);
    return p;
}

static void *checked_calloc(size_t count, size_t size)
{
    if (debug_on())
        return mt_debug_calloc(count, size, mt_interpose_caller);
    return mt_alloc_calloc(count, size);
}

/* realloc that clears the old block when it moves (MT_MODE_ZERO): the allocator's own
 * realloc would free it uncleared. */
static void *zeroing_realloc(void *ptr, size_t size, enum mt_api api)
{
    if (!ptr || is_large(ptr))
        return mt_alloc_realloc(ptr, size); /* mremap or munmap: no copy is left behind */
    size_t old = mt_alloc_usable_size_as(ptr, api);
    if (old == 0)
        return NULL; /* reported (continue mode) */
    if (size == 0) {
        checked_free(ptr, api);
        return NULL;
    }
    if (size <= old && size > old / 2)
        return ptr; /* as the allocator would: in place, and nothing is freed */
    void *fresh = mt_alloc_malloc(size);
    if (!fresh)
        return NULL;
    memcpy(fresh, ptr, old < size ? old : size);
    checked_free(ptr, api);
    return fresh;
}

static void *checked_realloc(void *ptr, size_t size, enum mt_api api)
{
    if (debug_on())
        return mt_debug_realloc(ptr, size, api, mt_interpose_caller);
    if (mt_alloc_mode_now() & MT_MODE_ZERO)
        return zeroing_realloc(ptr, size, api);
    return mt_alloc_realloc(ptr, size);
}

/* The aligned family: argument rules, then the allocator. Returns 0 or an errno value. */
static int checked_aligned(enum mt_api api, size_t align, size_t size, void **out)
{
    int err = mt_alloc_aligned_args(api, &align, &size);
    if (err)
        return err;
    void *p = debug_on() ? mt_debug_aligned(align, size, api, mt_interpose_caller)
                         : mt_alloc_aligned(align, size, api);
    if (!p)
        return ENOMEM;
    if (!debug_on())
        perturb_alloc(p, size);
    *out = p;
    return 0;
}

static size_t checked_usable_size(void *ptr)
{
    if (debug_on())
        return mt_debug_usable_size(ptr);
    return mt_alloc_usable_size(ptr);
}

/* Debug mode: blocks still in quarantine when the program ends were never verified, so a
 * write after free into one freed late (the usual case for a short program) would go
 * unreported. A destructor of the library itself runs after the program's own. */
__attribute__((destructor)) static void verify_quarantine_at_exit(void)
{
    if (debug_on())
        mt_debug_verify_quarantine(MT_API_EXIT);
}

/* ---- entry points ------------------------------------------------------------------------ */

static inline void ensure_init(void)
{
    if (MT_UNLIKELY(mt_alloc_mode_now() & MT_MODE_UNINIT) && mt_alloc_ensure_init()) {
        mt_error_report_install();
        mt_fault_install();
    }
}

void *mt_slow_malloc(size_t size, const void *frame)
{
    (void)frame;
    ensure_init();
#ifdef MT_TRACING
    if (mt_record_enter()) {
        void *p = checked_malloc(size);
        if (p)
            mt_record_alloc(MT_OP_MALLOC, p, size, 0, frame);
        mt_record_leave();
        return p;
    }
#endif
    return checked_malloc(size);
}

void mt_slow_free(void *ptr, const void *frame)
{
    (void)frame;
    ensure_init();
#ifdef MT_TRACING
    if (ptr && mt_record_enter()) {
        mt_record_free(ptr, frame);
        checked_free(ptr, MT_API_FREE);
        mt_record_leave();
        return;
    }
#endif
    checked_free(ptr, MT_API_FREE);
}

void *mt_slow_calloc(size_t count, size_t size, const void *frame)
{
    (void)frame;
    ensure_init();
#ifdef MT_TRACING
    if (mt_record_enter()) {
        void *p = checked_calloc(count, size);
        if (p)
            mt_record_alloc(MT_OP_CALLOC, p, count * size, 0, frame);
        mt_record_leave();
        return p;
    }
#endif
    return checked_calloc(count, size);
}

static void *realloc_common(enum mt_op op, enum mt_api api, void *ptr, size_t size, const void *frame)
{
    (void)op, (void)frame;
#ifdef MT_TRACING
    if (mt_record_enter()) {
        void *p;
        if (ptr) {
            mt_record_realloc_begin(op, ptr, size, frame);
            p = checked_realloc(ptr, size, api);
            mt_record_realloc_end(op, ptr, p, size);
        } else {
            p = checked_malloc(size);
            if (p)
                mt_record_alloc(op, p, size, 0, frame);
        }
        mt_record_leave();
        return p;
    }
#endif
    if (ptr == NULL)
        return checked_malloc(size);
    return checked_realloc(ptr, size, api);
}

void *mt_slow_realloc(void *ptr, size_t size, const void *frame)
{
    ensure_init();
    return realloc_common(MT_OP_REALLOC, MT_API_REALLOC, ptr, size, frame);
}

void *mt_slow_reallocarray(void *ptr, size_t count, size_t size, const void *frame)
{
    ensure_init();
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc_common(MT_OP_REALLOCARRAY, MT_API_REALLOCARRAY, ptr, total, frame);
}

/* The aligned family, recorded: `op` names it in the trace. Returns 0 or an errno value. */
static int aligned_common(enum mt_op op, enum mt_api api, size_t align, size_t size, void **out,
                          const void *frame)
{
    ensure_init();
    (void)op, (void)frame;
#ifdef MT_TRACING
    if (mt_record_enter()) {
        int err = checked_aligned(api, align, size, out);
        if (err == 0)
            mt_record_alloc(op, *out, size, align, frame);
        mt_record_leave();
        return err;
    }
#endif
    return checked_aligned(api, align, size, out);
}

static void *aligned_pointer(enum mt_op op, enum mt_api api, size_t align, size_t size, const void *frame)
{
    void *p = NULL;
    int err = aligned_common(op, api, align, size, &p, frame);
    if (err) {
        errno = err;
        return NULL;
    }
    return p;
}

int mt_slow_posix_memalign(void **out, size_t align, size_t size, const void *frame)
{
    int saved = errno;
    int err = aligned_common(MT_OP_POSIX_MEMALIGN, MT_API_POSIX_MEMALIGN, align, size, out, frame);
    errno = saved; /* posix_memalign reports through its return value only */
    return err;
}

void *mt_slow_aligned_alloc(size_t align, size_t size, const void *frame)
{
    return aligned_pointer(MT_OP_ALIGNED_ALLOC, MT_API_ALIGNED_ALLOC, align, size, frame);
}

void *mt_slow_memalign(size_t align, size_t size, const void *frame)
{
    return aligned_pointer(MT_OP_MEMALIGN, MT_API_MEMALIGN, align, size, frame);
}

void *mt_slow_valloc(size_t size, const void *frame)
{
    return aligned_pointer(MT_OP_VALLOC, MT_API_VALLOC, 0, size, frame);
}

void *mt_slow_pvalloc(size_t size, const void *frame)
{
    return aligned_pointer(MT_OP_PVALLOC, MT_API_PVALLOC, 0, size, frame);
}

size_t mt_slow_usable_size(void *ptr)
{
    ensure_init();
    return checked_usable_size(ptr);
}
