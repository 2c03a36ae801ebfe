/* The allocator's entry points, one per malloc-family function, with the semantics POSIX,
 * C17 and glibc give them (errno, overflow, alignment rules, realloc's failure contract).
 * interpose/ exports them under the public names; nothing else should call the tiers
 * (small, medium, large) directly.
 *
 * malloc and free are inline: the common case is a size-class lookup and a slab fast path.
 * Everything else is out of line in alloc.c. */
#ifndef MT_ALLOCATOR_ALLOC_H
#define MT_ALLOCATOR_ALLOC_H

#include <malloc.h>
#include <stdatomic.h>
#include <stddef.h>

#include "../common/compiler.h"
#include "error.h"
#include "segmap.h"
#include "small.h"
#include "stats.h"

/* Extra work requested process-wide; when any bit is set, interpose routes every call
 * through its slow variant (the fast paths below ignore these). */
enum mt_alloc_mode_bits {
    MT_MODE_PERTURB = 1u << 0, /* M_PERTURB: fill allocations and freed blocks */
    MT_MODE_DEBUG = 1u << 1,   /* MTRACE_DEBUG: the hardened debug allocator */
    MT_MODE_TRACE = 1u << 2,   /* libmtrace.so is recording */
    MT_MODE_ZERO = 1u << 3,    /* MTRACE_ZERO_ON_FREE without the debug layer: clear freed blocks */
    MT_MODE_UNINIT = 1u << 31, /* the allocator has not run its init yet */
};
extern MT_HIDDEN _Atomic uint32_t mt_alloc_mode;

MT_INLINE uint32_t mt_alloc_mode_now(void)
{
    return atomic_load_explicit(&mt_alloc_mode, memory_order_relaxed);
}

void *mt_alloc_malloc_big(size_t size);
void mt_alloc_free_other(void *ptr, uint8_t entry, enum mt_api api);

MT_INLINE void *mt_alloc_malloc(size_t size)
{
    if (MT_LIKELY(size <= MT_SMALL_MAX))
        return mt_small_malloc(mt_size_class(size));
    return mt_alloc_malloc_big(size);
}

/* Free with the API named in error messages (free, realloc's internal free, ...). */
MT_INLINE void mt_alloc_free_as(void *ptr, enum mt_api api)
{
    uint8_t entry = mt_segmap_entry((uintptr_t)ptr);
    if (MT_LIKELY(entry == MT_SEG_SMALL)) {
        mt_small_free(ptr, api);
        return;
    }
    mt_alloc_free_other(ptr, entry, api);
}

MT_INLINE void mt_alloc_free(void *ptr)
{
    mt_alloc_free_as(ptr, MT_API_FREE);
}

void *mt_alloc_calloc(size_t count, size_t size);
void *mt_alloc_realloc(void *ptr, size_t size);
void *mt_alloc_reallocarray(void *ptr, size_t count, size_t size);
int mt_alloc_posix_memalign(void **out, size_t align, size_t size);
void *mt_alloc_aligned_alloc(size_t align, size_t size);
void *mt_alloc_memalign(size_t align, size_t size);
void *mt_alloc_valloc(size_t size);
void *mt_alloc_pvalloc(size_t size);
/* Aligned allocation for any power-of-two alignment; the other aligned entry points
 * validate their arguments and call this. Sets errno on failure. */
void *mt_alloc_aligned(size_t align, size_t size, enum mt_api api);
/* The argument rules of each aligned entry point (posix_memalign, aligned_alloc, memalign,
 * valloc, pvalloc): validates and normalises (align, size) in place. Returns 0, EINVAL or
 * ENOMEM, so other layers (debug mode) apply exactly the same rules. */
int mt_alloc_aligned_args(enum mt_api api, size_t *align, size_t *size);

/* malloc_usable_size: the whole usable size is writable. 0 for NULL. */
size_t mt_alloc_usable_size(const void *ptr);
/* Usable size without reporting anything: 0 when ptr is not a live block of ours. */
size_t mt_alloc_usable_size_quiet(const void *ptr);
/* Usable size, reporting an invalid or freed pointer as `api`; 0 after a report. */
size_t mt_alloc_usable_size_as(const void *ptr, enum mt_api api);

int mt_alloc_trim(size_t pad);
struct mallinfo2 mt_alloc_mallinfo2(void);
struct mallinfo mt_alloc_mallinfo(void);
void mt_alloc_malloc_stats(void);
int mt_alloc_mallopt(int param, int value);

/* Whole-allocator statistics (small + medium + large). */
void mt_alloc_stats(struct mt_zone_stats *out);

/* fork handlers, registered with pthread_atfork at init. */
void mt_alloc_fork_prepare(void);
void mt_alloc_fork_parent(void);
void mt_alloc_fork_child(void);

#endif
