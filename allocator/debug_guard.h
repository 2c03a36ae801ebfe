/* The mappings of debug mode's guarded blocks: data pages followed by an inaccessible
 * guard page, made inaccessible whole when the block is freed.
 *
 * Large blocks and one block in MTRACE_GUARD_SAMPLE (on average) are guarded. The sampled ones are
 * mostly small, so their mappings (one or two data pages and the guard) are pooled: the
 * address space is reserved in chunks and reused, a unit costs one mprotect when handed
 * out and one when its block is freed (its pages are kept, so no page fault either),
 * instead of the five system calls of a mapping of its own (mmap, mprotect, mprotect,
 * madvise, munmap). The mappings of large blocks that left the quarantine are kept in a
 * small cache and reused for the next large block they fit, without page faults. */
#ifndef MT_ALLOCATOR_DEBUG_GUARD_H
#define MT_ALLOCATOR_DEBUG_GUARD_H

#include <stddef.h>
#include <stdint.h>

/* A mapping of `data` bytes (a multiple of the page size) of read-write memory, aligned to
 * `align` (a power of two), followed by an inaccessible page; *map_size is the whole
 * mapping's size. NULL when the OS refuses. */
uint8_t *mt_debug_guard_map(size_t data, size_t align, size_t *map_size);

/* The block in it was freed: make the whole mapping inaccessible (the address stays
 * reserved, so a use after free faults; the pages stay, for reuse). */
void mt_debug_guard_retire(uint8_t *base, size_t map_size);

/* The block left the quarantine: the mapping is pooled, cached or unmapped. */
void mt_debug_guard_unmap(uint8_t *base, size_t map_size);

/* The pool's stacks of free units, for mt_debug_metadata_ranges (they list addresses of
 * freed guarded blocks' mappings). */
void mt_debug_guard_ranges(void (*visit)(void *ctx, uintptr_t start, size_t bytes), void *ctx);

void mt_debug_guard_fork_prepare(void);
void mt_debug_guard_fork_parent(void);
void mt_debug_guard_fork_child(void);

#endif
