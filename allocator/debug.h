/* The hardened debug allocator (MTRACE_DEBUG=1 and the finer switches of the options
 * table): a layer over the normal tiers that catches heap bugs as they happen.
 *
 * - canaries: 16 bytes after every block, the first one zero (a runaway string copy stops
 *   there), the rest keyed by a per-process secret and the block address; checked at free,
 *   realloc and by mt_heap_check();
 * - guard pages: large blocks and one small block in MTRACE_GUARD_SAMPLE get a mapping of
 *   their own that ends at an inaccessible page, the block pushed against it, so an
 *   overflow faults at the first byte past the end; freed guarded blocks become
 *   inaccessible entirely, so a use after free faults too;
 * - poison: freed blocks are filled with MT_DEBUG_POISON_BYTE (or zero with
 *   MTRACE_ZERO_ON_FREE) and verified when they leave the quarantine: a write after free
 *   is reported with the offset it touched;
 * - quarantine: freed blocks are held back from reuse (FIFO, bounded in bytes) so a use
 *   after free reads poison instead of someone else's data;
 * - randomization: small blocks come from a random free slot, so heap layouts cannot be
 *   predicted and adjacent-block bugs show up in different places from run to run;
 * - fill: new blocks (not calloc's) are filled with MT_DEBUG_FILL_BYTE, exposing reads of
 *   uninitialised memory.
 * Every block is also known to a table (ptr -> requested size, state, the code addresses
 * that allocated and freed it), so reports say where the block came from even without the
 * tracer, malloc_usable_size returns the requested size (the canary is not the program's
 * to write), and a double free is recognised while the block sits in quarantine.
 *
 * Cost: one table lookup under a striped lock per call plus the fills; target at most 3x
 * glibc's time on the bench workloads. */
#ifndef MT_ALLOCATOR_DEBUG_H
#define MT_ALLOCATOR_DEBUG_H

#include <stdbool.h>
#include <stddef.h>

#include "check.h"
#include "error.h"

#define MT_DEBUG_POISON_BYTE 0xdf /* "dead freed" */
#define MT_DEBUG_FILL_BYTE 0xbe   /* "uninitialised": 0xbebebebe is an implausible value */
#define MT_DEBUG_CANARY_BYTES 16

struct mt_debug_config {
    bool enabled; /* any feature on: the layer is active */
    bool canary;
    bool guard;
    unsigned guard_sample;
    bool poison;
    bool zero_on_free;
    size_t quarantine;
    bool randomize;
    bool fill;
};

extern struct mt_debug_config mt_debug_config;

/* Resolve the options (auto ones follow MTRACE_DEBUG); true when the layer is enabled. */
bool mt_debug_init(void);

/* `site` is the code address that called the public function, kept for reports. */
void *mt_debug_malloc(size_t size, const void *site);
void *mt_debug_calloc(size_t count, size_t size, const void *site);
void *mt_debug_aligned(size_t align, size_t size, enum mt_api api, const void *site);
void *mt_debug_realloc(void *ptr, size_t size, enum mt_api api, const void *site);
void mt_debug_free(void *ptr, enum mt_api api, const void *site);
size_t mt_debug_usable_size(const void *ptr);

/* Verify the canary of every live block and the poison of every quarantined one. */
bool mt_debug_check(struct mt_check *check);

/* The guard page an address falls in, for the fault handler: true and the block it
 * protects (start and requested size, and whether the block was freed) when addr lies in
 * a guard page or a freed guarded block. */
bool mt_debug_guard_lookup(const void *addr, const void **block, size_t *size, bool *freed);

/* The debug layer's own tables (block table stripes, quarantine ring) hold the address of
 * every block: a leak scan must not count them as roots. Calls `visit` for each. */
void mt_debug_metadata_ranges(void (*visit)(void *ctx, uintptr_t start, size_t bytes), void *ctx);
void mt_debug_fork_prepare(void);
void mt_debug_fork_parent(void);
void mt_debug_fork_child(void);

#endif
