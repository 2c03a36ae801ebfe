/* Allocator start-up: lazily on the first allocation of the process, whatever thread and
 * whatever stage of program start-up it comes from (ld.so, a constructor, libc itself). */
#ifndef MT_ALLOCATOR_ALLOC_INIT_H
#define MT_ALLOCATOR_ALLOC_INIT_H

#include <stdatomic.h>
#include <stdbool.h>

#include "../common/compiler.h"

extern atomic_int mt_alloc_init_state; /* 0 not started, 1 running, 2 ready */

bool mt_alloc_init_slow(void);

/* Options, keys, the segment map and the arenas are ready after this returns true. */
MT_INLINE bool mt_alloc_ensure_init(void)
{
    if (MT_LIKELY(atomic_load_explicit(&mt_alloc_init_state, memory_order_acquire) == 2))
        return true;
    return mt_alloc_init_slow();
}

#endif
