/* The malloc family's semantics over the three tiers (see alloc.h), and allocator start-up.
 *
 * Tier choice: up to MT_SMALL_MAX, the size-class slabs; up to the mmap threshold, the
 * medium arenas; beyond, a mapping of its own. Aligned requests use a slab class whose
 * every slot is aligned when one exists, then the medium arena's aligned split, then an
 * aligned mapping. */
#include "alloc.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "../common/options.h"
#include "../common/platform.h"
#include "alloc_init.h"
#include "debug.h"
#include "harden.h"
#include "large.h"
#include "medium.h"
#include "tunables.h"

_Atomic uint32_t mt_alloc_mode = MT_MODE_UNINIT;
atomic_int mt_alloc_init_state;

bool mt_alloc_init_slow(void)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&mt_alloc_init_state, &expected, 1)) {
        /* Another thread is initialising (microseconds); nothing in init allocates, so a
         * state of 1 is never our own thread re-entering. */
        while (atomic_load_explicit(&mt_alloc_init_state, memory_order_acquire) == 1)
            mt_os_yield();
        return atomic_load_explicit(&mt_alloc_init_state, memory_order_acquire) == 2;
    }
    mt_options_init(false);
    mt_secrets_init();
    mt_tunables_init();
    if (!mt_segmap_init()) {
        atomic_store_explicit(&mt_alloc_init_state, 0, memory_order_release);
        return false;
    }
    mt_small_init();
    mt_medium_init();
    if (mt_perturb_byte())
        atomic_fetch_or(&mt_alloc_mode, MT_MODE_PERTURB);
    if (mt_debug_init())
        atomic_fetch_or(&mt_alloc_mode, MT_MODE_DEBUG);
    else if (mt_debug_config.zero_on_free)
        atomic_fetch_or(&mt_alloc_mode, MT_MODE_ZERO);
    atomic_store_explicit(&mt_alloc_init_state, 2, memory_order_release);
    atomic_fetch_and(&mt_alloc_mode, ~(uint32_t)MT_MODE_UNINIT);
    /* After the state is ready: pthread_atfork may allocate. Handlers registered first run
     * last before a fork and first after it, which is the order a malloc wants. */
    mt_os_atfork(mt_alloc_fork_prepare, mt_alloc_fork_parent, mt_alloc_fork_child);
    return true;
}

static void *fail_enomem(void)
{
    errno = ENOMEM;
    return NULL;
}

/* Which tier serves `size` when it is not small. */
static bool use_medium(size_t size)
{
    if (size > mt_medium_max_request())
        return false;
    if (atomic_load_explicit(&mt_tunables.mmap_max, memory_order_relaxed) == 0)
        return true;
    return size < mt_mmap_threshold();
}

void *mt_alloc_malloc_big(size_t size)
{
    if (MT_UNLIKELY(size > MT_MAX_REQUEST))
        return fail_enomem();
    void *p = NULL;
    if (use_medium(size)) {
        struct mt_medium_arena *arena = mt_heap_arena();
        if (arena)
            p = mt_medium_malloc(arena, size);
        if (!p && atomic_load_explicit(&mt_tunables.mmap_max, memory_order_relaxed) != 0)
            p = mt_large_malloc(size, MT_ALIGNMENT); /* as glibc: fall back to mmap */
    } else {
        if (!mt_alloc_ensure_init())
            return fail_enomem();
        p = mt_large_malloc(size, MT_ALIGNMENT);
        if (!p && size <= mt_medium_max_request()) {
            struct mt_medium_arena *arena = mt_heap_arena();
            if (arena)
                p = mt_medium_malloc(arena, size);
        }
    }
    return p ? p : fail_enomem();
}

void mt_alloc_free_other(void *ptr, uint8_t entry, enum mt_api api)
{
    if (ptr == NULL)
        return;
    switch (mt_segmap_kind(entry)) {
    case MT_SEG_MEDIUM:
        mt_medium_free(ptr, entry, api);
        return;
    case MT_SEG_NONE:
        mt_large_free(ptr, api);
        return;
    default:
        mt_heap_error_simple(MT_ERR_INVALID_FREE, ptr, 0, api, "unknown segment kind");
        return;
    }
}

size_t mt_alloc_usable_size_as(const void *ptr, enum mt_api api)
{
    if (!ptr)
        return 0;
    uint8_t entry = mt_segmap_entry((uintptr_t)ptr);
    switch (mt_segmap_kind(entry)) {
    case MT_SEG_SMALL:
        return mt_small_usable_size(ptr, api);
    case MT_SEG_MEDIUM:
        return mt_medium_usable_size(ptr, entry, api);
    default:
        return mt_large_usable_size(ptr, api);
    }
}

size_t mt_alloc_usable_size(const void *ptr)
{
    return mt_alloc_usable_size_as(ptr, MT_API_USABLE_SIZE);
}

size_t mt_alloc_usable_size_quiet(const void *ptr)
{
    if (!ptr)
        return 0;
    uint8_t entry = mt_segmap_entry((uintptr_t)ptr);
    switch (mt_segmap_kind(entry)) {
    case MT_SEG_SMALL:
        return mt_small_slot_state(ptr) == 1 ? mt_small_page_of(mt_small_segment_of(ptr), ptr)->block_size : 0;
    case MT_SEG_MEDIUM:
        return mt_medium_usable_size(ptr, entry, MT_API_INTERNAL);
    default:
        return mt_large_owns(ptr) ? mt_large_usable_size(ptr, MT_API_INTERNAL) : 0;
    }
}

void *mt_alloc_calloc(size_t count, size_t size)
{
    size_t total;
    if (MT_UNLIKELY(__builtin_mul_overflow(count, size, &total)))
        return fail_enomem();
    if (MT_LIKELY(total <= MT_SMALL_MAX)) {
        void *p = mt_small_malloc(mt_size_class(total));
        if (p)
            memset(p, 0, total);
        return p;
    }
    if (MT_UNLIKELY(total > MT_MAX_REQUEST))
        return fail_enomem();
    if (!use_medium(total)) {
        if (!mt_alloc_ensure_init())
            return fail_enomem();
        void *p = mt_large_malloc(total, MT_ALIGNMENT);
        if (p)
            return p; /* fresh mappings are zero */
    }
    void *p = mt_alloc_malloc_big(total);
    if (p && mt_segmap_kind(mt_segmap_entry((uintptr_t)p)) != MT_SEG_NONE)
        memset(p, 0, total);
    return p;
}

/* Headroom for growth: a block that realloc grows by less than an eighth of its size is
 * given an eighth more than it had, wherever it ends up (in place or moved). A program
 * that appends a little at a time (`s = realloc(s, len + n + 1)`) then copies each byte a
 * bounded number of times (about 8) instead of once per append whenever the block cannot
 * grow in place, and most appends find their room already there, with no lock. A block
 * grown by a large step, or allocated once, gets no headroom. An eighth, not a quarter:
 * on the realloc bench a quarter raised the peak RSS by 7.5 MiB (fragments of free chunks
 * the bigger steps leave behind, 17.5 MiB free in the arena against glibc's 6.5), 14% over
 * glibc's; an eighth takes 4 MiB off that at the same speed (the copies were no longer
 * the cost: 0.18 s either way, 0.65 s without headroom). */
#define REALLOC_HEADROOM_SHIFT 3
/* Shrinking by less than a quarter leaves the block as it is (no lock, no split). */
#define REALLOC_KEEP_SHIFT 2

/* What to ask for when growing a block of old usable bytes to size: size, or old plus
 * the headroom, staying in the tier of `size` (a small request does not become medium,
 * a medium one does not become a mapping of its own). */
static size_t realloc_growth_target(size_t old, size_t size)
{
    size_t want = old + (old >> REALLOC_HEADROOM_SHIFT);
    if (want <= size)
        return size;
    if (size <= MT_SMALL_MAX)
        return want <= MT_SMALL_MAX ? want : MT_SMALL_MAX;
    return use_medium(want) ? want : size;
}

/* Move a block to a new one of `alloc_size` bytes (old_usable bytes valid in the old one,
 * `size` of them wanted by the caller). */
static void *realloc_move(void *ptr, size_t old_usable, size_t size, size_t alloc_size)
{
    void *fresh = mt_alloc_malloc(alloc_size);
    if (!fresh && alloc_size != size)
        fresh = mt_alloc_malloc(size);
    if (!fresh)
        return NULL; /* errno set; the old block stays intact */
    memcpy(fresh, ptr, old_usable < size ? old_usable : size);
    mt_alloc_free_as(ptr, MT_API_REALLOC);
    return fresh;
}

void *mt_alloc_realloc(void *ptr, size_t size)
{
    if (ptr == NULL)
        return mt_alloc_malloc(size);
    if (size == 0) {
        /* glibc frees and returns NULL (C17 leaves it implementation-defined). */
        mt_alloc_free_as(ptr, MT_API_REALLOC);
        return NULL;
    }
    if (MT_UNLIKELY(size > MT_MAX_REQUEST))
        return fail_enomem();
    uint8_t entry = mt_segmap_entry((uintptr_t)ptr);
    switch (mt_segmap_kind(entry)) {
    case MT_SEG_SMALL: {
        size_t old = mt_small_usable_size(ptr, MT_API_REALLOC);
        if (old == 0)
            return NULL;
        /* In place while it fits and shrinking would not free at least half. */
        if (size <= old && size > old / 2)
            return ptr;
        return realloc_move(ptr, old, size, size > old ? realloc_growth_target(old, size) : size);
    }
    case MT_SEG_MEDIUM: {
        size_t old = mt_medium_usable_size(ptr, entry, MT_API_REALLOC);
        if (old == 0)
            return NULL;
        if (size <= old) {
            if (size <= MT_SMALL_MAX && size < old / 2)
                return realloc_move(ptr, old, size, size);
            if (size >= old - (old >> REALLOC_KEEP_SHIFT))
                return ptr;
            if (mt_medium_resize_in_place(ptr, entry, size, size))
                return ptr;
            return realloc_move(ptr, old, size, size);
        }
        size_t want = realloc_growth_target(old, size);
        if (mt_medium_resize_in_place(ptr, entry, size, want))
            return ptr;
        return realloc_move(ptr, old, size, want);
    }
    default: {
        size_t old = mt_large_usable_size(ptr, MT_API_REALLOC);
        if (old == 0)
            return NULL;
        if (size <= old && size > old / 2)
            return ptr;
        if (size >= mt_mmap_threshold() || size > mt_medium_max_request()) {
            void *moved = mt_large_realloc(ptr, size);
            if (moved)
                return moved;
        }
        return realloc_move(ptr, old, size, size);
    }
    }
}

void *mt_alloc_reallocarray(void *ptr, size_t count, size_t size)
{
    size_t total;
    if (MT_UNLIKELY(__builtin_mul_overflow(count, size, &total)))
        return fail_enomem();
    return mt_alloc_realloc(ptr, total);
}

void *mt_alloc_aligned(size_t align, size_t size, enum mt_api api)
{
    (void)api;
    if (align <= MT_ALIGNMENT)
        return mt_alloc_malloc(size);
    if (MT_UNLIKELY(size > MT_MAX_REQUEST || align > MT_MAX_REQUEST))
        return fail_enomem();
    unsigned cls = mt_size_class_aligned(size, align);
    if (cls < MT_SMALL_CLASSES)
        return mt_small_malloc(cls);
    void *p = NULL;
    if (use_medium(size + align)) {
        struct mt_medium_arena *arena = mt_heap_arena();
        if (arena)
            p = mt_medium_memalign(arena, align, size);
    }
    if (!p) {
        if (!mt_alloc_ensure_init())
            return fail_enomem();
        p = mt_large_malloc(size, align);
    }
    return p ? p : fail_enomem();
}

int mt_alloc_aligned_args(enum mt_api api, size_t *align, size_t *size)
{
    size_t page = mt_os_page_size();
    switch (api) {
    case MT_API_POSIX_MEMALIGN:
        /* POSIX: a power of two multiple of sizeof(void *). */
        return *align >= sizeof(void *) && mt_is_pow2(*align) ? 0 : EINVAL;
    case MT_API_ALIGNED_ALLOC:
        /* C17 (DR 460): an unsupported alignment yields NULL; the size need not be a
         * multiple of it. */
        return mt_is_pow2(*align) ? 0 : EINVAL;
    case MT_API_MEMALIGN:
        /* glibc: alignments that are not a power of two are rounded up to one; absurd
         * ones fail with EINVAL. */
        if (*align > SIZE_MAX / 2 + 1)
            return EINVAL;
        if (*align && !mt_is_pow2(*align))
            *align = (size_t)1 << mt_log2_ceil(*align);
        return 0;
    case MT_API_VALLOC:
        *align = page;
        return 0;
    case MT_API_PVALLOC:
        *align = page;
        if (*size > SIZE_MAX - page)
            return ENOMEM;
        *size = *size ? mt_align_up(*size, page) : page;
        return 0;
    default:
        return EINVAL;
    }
}

/* An aligned entry point returning a pointer: validate, then allocate. */
static void *aligned_entry(enum mt_api api, size_t align, size_t size)
{
    int err = mt_alloc_aligned_args(api, &align, &size);
    if (err) {
        errno = err;
        return NULL;
    }
    return mt_alloc_aligned(align, size, api);
}

int mt_alloc_posix_memalign(void **out, size_t align, size_t size)
{
    int err = mt_alloc_aligned_args(MT_API_POSIX_MEMALIGN, &align, &size);
    if (err)
        return err; /* *out untouched */
    int saved = errno;
    void *p = mt_alloc_aligned(align, size, MT_API_POSIX_MEMALIGN);
    errno = saved; /* posix_memalign reports through its return value only */
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

void *mt_alloc_aligned_alloc(size_t align, size_t size)
{
    return aligned_entry(MT_API_ALIGNED_ALLOC, align, size);
}

void *mt_alloc_memalign(size_t align, size_t size)
{
    return aligned_entry(MT_API_MEMALIGN, align, size);
}

void *mt_alloc_valloc(size_t size)
{
    return aligned_entry(MT_API_VALLOC, 0, size);
}

void *mt_alloc_pvalloc(size_t size)
{
    return aligned_entry(MT_API_PVALLOC, 0, size);
}

int mt_alloc_trim(size_t pad)
{
    if (atomic_load_explicit(&mt_alloc_init_state, memory_order_acquire) != 2)
        return 0;
    size_t released = mt_small_trim();
    released += mt_medium_trim(pad);
    return released > 0;
}

void mt_alloc_stats(struct mt_zone_stats *out)
{
    memset(out, 0, sizeof *out);
    struct mt_zone_stats part;
    mt_small_stats(&part);
    mt_zone_stats_add(out, &part);
    mt_medium_stats(&part);
    mt_zone_stats_add(out, &part);
    mt_large_stats(&part);
    mt_zone_stats_add(out, &part);
}

struct mallinfo2 mt_alloc_mallinfo2(void)
{
    struct mallinfo2 mi;
    memset(&mi, 0, sizeof mi);
    struct mt_zone_stats small, medium, large;
    mt_small_stats(&small);
    mt_medium_stats(&medium);
    mt_large_stats(&large);
    mi.arena = small.committed + medium.committed;
    mi.ordblks = medium.free_chunks + small.free_chunks;
    mi.hblks = large.live_blocks;
    mi.hblkhd = large.mapped;
    mi.uordblks = small.in_use + medium.in_use;
    mi.fordblks = small.free_bytes + medium.free_bytes;
    mi.keepcost = medium.releasable;
    return mi;
}

struct mallinfo mt_alloc_mallinfo(void)
{
    struct mallinfo2 m2 = mt_alloc_mallinfo2();
    struct mallinfo mi;
    /* The int fields of the old interface wrap like glibc's do for heaps over 2 GiB. */
    mi.arena = (int)m2.arena;
    mi.ordblks = (int)m2.ordblks;
    mi.smblks = (int)m2.smblks;
    mi.hblks = (int)m2.hblks;
    mi.hblkhd = (int)m2.hblkhd;
    mi.usmblks = (int)m2.usmblks;
    mi.fsmblks = (int)m2.fsmblks;
    mi.uordblks = (int)m2.uordblks;
    mi.fordblks = (int)m2.fordblks;
    mi.keepcost = (int)m2.keepcost;
    return mi;
}

int mt_alloc_mallopt(int param, int value)
{
    mt_alloc_ensure_init();
    int ok = mt_tunables_mallopt(param, value);
    if (ok && param == M_PERTURB) {
        if (value)
            atomic_fetch_or(&mt_alloc_mode, MT_MODE_PERTURB);
        else
            atomic_fetch_and(&mt_alloc_mode, ~(uint32_t)MT_MODE_PERTURB);
    }
    return ok;
}

void mt_alloc_fork_prepare(void)
{
    /* Order: arenas, then the small lock, then large; child and parent release in reverse
     * (the order does not matter for resets, it does for deadlock-free prepare). */
    mt_debug_fork_prepare();
    mt_medium_fork_prepare();
    mt_small_fork_prepare();
    mt_large_fork_prepare();
}

void mt_alloc_fork_parent(void)
{
    mt_large_fork_parent();
    mt_small_fork_parent();
    mt_medium_fork_parent();
    mt_debug_fork_parent();
}

void mt_alloc_fork_child(void)
{
    mt_large_fork_child();
    mt_small_fork_child();
    mt_medium_fork_child();
    mt_debug_fork_child();
}
