/* Medium blocks: boundary-tag chunks in locked arenas.
 *
 * Serves requests above the small classes (MT_SMALL_MAX) and below the mmap threshold, and
 * aligned requests that the small classes cannot serve. Design (docs/allocator.md):
 *
 * - An arena owns one or more regions of reserved address space (MT_MEDIUM_REGION_SIZE
 *   at first, growing in place to MT_MEDIUM_GROWN_REGION_SIZE), segment-aligned and marked
 *   MT_SEG_MEDIUM in the segment map; a region header at its start names the owning
 *   arena. Memory is committed as the top chunk grows.
 * - Chunks carry a 16-byte header (size with flags, and a keyed checksum, harden.h) and,
 *   when free, a footer with their size, so neighbours coalesce in O(1).
 * - Free chunks sit in small bins (exact sizes, LIFO), an unsorted bin (recent frees, reused
 *   first and sorted lazily) and large bins (size ranges kept sorted for best fit), with a
 *   bitmap of non-empty bins; the top chunk serves what the bins cannot and grows the region.
 * - Free links are encoded (mt_link_encode) and checked when unlinked (fd->bk == self).
 * - Free memory goes back to the OS: the top is trimmed past the trim threshold, and whole
 *   pages inside large free chunks are decommitted in batches once the arena holds more
 *   resident free memory than its budget plus its recent drop in use, so RSS falls after a
 *   big working set is freed (also when the threads that allocated it have exited).
 * - Several arenas (mt_tunables.arena_max, default four per CPU), each with its own lock;
 *   a thread is bound to one at its first medium allocation. A free from another thread
 *   tries the owner's lock and, if it is busy, pushes the chunk on the arena's lock-free
 *   deferred list, drained by the next thread that holds the lock: remote frees do not
 *   wait for the owner.
 * - Integrity checks always on (cheap): header checksum verified at free, realloc, usable
 *   size and coalescing; chunk inside its region; the in-use bit (double free); the next
 *   chunk's prev-in-use bit and the footer of a free neighbour; top size sane.
 */
#ifndef MT_ALLOCATOR_MEDIUM_H
#define MT_ALLOCATOR_MEDIUM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct mt_medium_arena;

/* Once, from allocator init (single-threaded at that point). */
bool mt_medium_init(void);

/* An arena for the calling thread to use from now on (round robin over the arenas, created
 * lazily up to the maximum). Never NULL after init. */
struct mt_medium_arena *mt_medium_arena_pick(void);

/* A block of at least `size` usable bytes, 16-byte aligned; NULL when the OS refuses
 * memory (the caller sets errno). Any size from 1 to the region limit works. */
void *mt_medium_malloc(struct mt_medium_arena *arena, size_t size);

/* As mt_medium_malloc with the start aligned to `align` (a power of two, > 16). */
void *mt_medium_memalign(struct mt_medium_arena *arena, size_t align, size_t size);

/* Free a block; `entry` is its segment-map entry (kind MT_SEG_MEDIUM). A pointer that is
 * not the start of a live medium block is reported through mt_heap_error (double free,
 * interior pointer, corrupted header) naming `api`, and the call returns without freeing. */
void mt_medium_free(void *ptr, uint8_t entry, enum mt_api api);

/* Usable size of a live block, after verifying it as mt_medium_free does; 0 after a
 * reported error. A freed block reports MT_ERR_REALLOC_FREED when api is MT_API_REALLOC,
 * MT_ERR_FREED_BLOCK otherwise. With api MT_API_INTERNAL nothing is reported: the answer
 * is just 0 for anything that is not a live medium block. */
size_t mt_medium_usable_size(const void *ptr, uint8_t entry, enum mt_api api);

/* Resize a live block in place: shrink (splitting off the tail) or grow into a free
 * neighbour or the top, taking up to `want_size` usable bytes when the room is there
 * (realloc's headroom for the next growth; want_size <= new_size asks for new_size). True
 * when the block now has at least `new_size` usable bytes and its first min(old, new)
 * bytes are unchanged; false leaves it untouched. */
bool mt_medium_resize_in_place(void *ptr, uint8_t entry, size_t new_size, size_t want_size);

/* The largest request mt_medium_malloc can serve (a region minus its overheads). */
size_t mt_medium_max_request(void);

/* malloc_trim(pad): give back all free memory beyond `pad` bytes of top in every arena.
 * Returns the number of bytes returned to the OS. */
size_t mt_medium_trim(size_t pad);

/* Drain every arena's deferred free list (before statistics and walks, so they are exact). */
void mt_medium_collect(void);

/* fork(): take every arena lock in the parent before the fork; release them after it in
 * the parent, reset them in the child. */
void mt_medium_fork_prepare(void);
void mt_medium_fork_parent(void);
void mt_medium_fork_child(void);

/* Statistics, histogram, walk and check: declared in stats.h, walk.h and check.h. */

#endif
