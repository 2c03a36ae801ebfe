/* Call stacks deduplicated into the process area (trace/wire.h's stack store), with a small
 * per-thread cache in front.
 *
 * Owns: hashing a stack, the lock-free insert into the shared open-addressing table, and
 * the per-thread direct-mapped cache of hash -> id.
 *
 * Invariants:
 * - A stack's frames and its mt_wire_stack entry are complete before the compare-and-swap
 *   that publishes (hash32 << 32 | id) in a slot (release): whoever sees the slot (another
 *   thread, the collector) sees the whole stack. A thread that loses a race for a slot
 *   either finds its stack already there (its reserved id is wasted, which is harmless) or
 *   tries the next slot with the entry it already wrote.
 * - The cache trusts the 64-bit hash (a collision between two distinct stacks of one
 *   process is ~n^2 / 2^64) and is used only by the outermost record of a thread: a
 *   signal handler that interrupts a cache update goes to the shared table instead. */
#ifndef MT_TRACE_STACK_STORE_H
#define MT_TRACE_STACK_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "wire.h"

/* Per-thread cache: direct-mapped by hash; 256 entries cover a program's hot call sites
 * in 4 KiB of TLS-reachable memory. */
#define MT_STACK_CACHE_SIZE 256u

struct mt_stack_cache_entry {
    uint64_t hash; /* 0: empty */
    uint32_t id;
    uint32_t generation; /* of the process area it belongs to (fork child: a new area) */
};

struct mt_stack_cache {
    struct mt_stack_cache_entry entry[MT_STACK_CACHE_SIZE];
};

/* The process area's arrays (from its offsets), set by the session for each new area. */
struct mt_stack_store {
    struct mt_wire_proc *proc;
    _Atomic uint64_t *slots;
    struct mt_wire_stack *stacks;
    uint64_t *frames;
    uint32_t generation; /* bumped for every new area: invalidates the caches */
};

/* Lay out and initialise a fresh process area of `size` bytes (all zero); returns false if
 * `size` is too small. */
bool mt_stack_store_init_area(struct mt_wire_proc *proc, uint64_t size);
/* Bytes the process area needs. */
uint64_t mt_stack_store_area_size(void);
void mt_stack_store_attach(struct mt_stack_store *store, struct mt_wire_proc *proc, uint32_t generation);

uint64_t mt_stack_hash(const uint64_t *frames, uint32_t depth);

/* The id of the stack (inserting it), or 0 when the store is full or depth is 0.
 * `cache` may be NULL (nested records). */
uint32_t mt_stack_store_intern(struct mt_stack_store *store, struct mt_stack_cache *cache,
                               const uint64_t *frames, uint32_t depth);

#endif
