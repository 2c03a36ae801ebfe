/* Visiting every zone and live block, for show_alloc_mem, the leak scan and the checker.
 *
 * A walk holds the lock of the structure it visits (medium arenas) or reads the state of
 * other threads' pages with relaxed atomics (small pages): each block it reports was live
 * at the moment it was read, but concurrent threads may allocate and free meanwhile.
 * Visitors must not allocate from the heap being walked. */
#ifndef MT_ALLOCATOR_WALK_H
#define MT_ALLOCATOR_WALK_H

#include <stddef.h>
#include <stdint.h>

enum mt_zone_kind { MT_ZONE_SMALL, MT_ZONE_MEDIUM, MT_ZONE_LARGE };

struct mt_zone_info {
    enum mt_zone_kind kind;
    uintptr_t start;
    size_t size;
    size_t block_size; /* small pages: the size class; otherwise 0 */
};

struct mt_walker {
    /* Either callback may be NULL. Zones are reported before their blocks. */
    void (*zone)(struct mt_walker *walker, const struct mt_zone_info *zone);
    void (*block)(struct mt_walker *walker, const void *ptr, size_t usable_size);
};

/* Every module that owns blocks implements a walk; mt_alloc_walk (introspect.c) calls
 * them all in address-independent order: small, medium, large. */
void mt_small_walk(struct mt_walker *walker);
void mt_medium_walk(struct mt_walker *walker);
void mt_large_walk(struct mt_walker *walker);
void mt_alloc_walk(struct mt_walker *walker);

#endif
