/* Large blocks: one private mapping each, from the mmap threshold up.
 *
 * A 64-byte header sits just before the user pointer (map start + 64, or further in for
 * alignments above 64) with a keyed checksum. Live blocks are also kept in a registry (an
 * open-addressing hash set under a lock), so free() of a pointer the segment map does not
 * know is answered without touching memory that may not be mapped: registered means ours,
 * anything else is an invalid free. Large frees cost a munmap anyway; the lock is noise. */
#ifndef MT_ALLOCATOR_LARGE_H
#define MT_ALLOCATOR_LARGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define MT_LARGE_HEADER 64

/* A block of at least `size` bytes aligned to `align` (a power of two >= 16); NULL when the
 * OS refuses (errno untouched). The memory is zero. */
void *mt_large_malloc(size_t size, size_t align);
/* True when ptr is the start of a live large block. */
bool mt_large_owns(const void *ptr);
/* Free; a pointer that is not a live large block is reported (double free when it was one
 * recently, invalid free otherwise) naming `api`. */
void mt_large_free(void *ptr, enum mt_api api);
/* Usable size (the whole mapping after the header); 0 after a reported error. */
size_t mt_large_usable_size(const void *ptr, enum mt_api api);
/* Grow or shrink with mremap; NULL when impossible (the block is left intact). */
void *mt_large_realloc(void *ptr, size_t new_size);
/* Blocks freed recently (for telling a double free from an invalid free). */
bool mt_large_recently_freed(const void *ptr, size_t *size_out);

/* The registry's table (user pointers of live large blocks): a leak scan must not count it
 * as a root. */
void mt_large_registry_range(uintptr_t *start, size_t *bytes);
void mt_large_fork_prepare(void);
void mt_large_fork_parent(void);
void mt_large_fork_child(void);

#endif
