/* The hardened debug allocator (MTRACE_DEBUG=1 and the finer switches of the options
 * table): a layer over the normal tiers that catches heap bugs as they happen.
 *
 * - canaries: 16 bytes after every block, keyed by a per-process secret and the block
 *   address, all nonzero but the last (so an off-by-one NUL is caught, and a runaway read
 *   of an unterminated string still stops within the canary); checked at free, realloc
 *   and by mt_heap_check();
 * - guard pages: large blocks and one small block in MTRACE_GUARD_SAMPLE (on average, at
 *   random gaps) get a mapping of their own that ends at an inaccessible page, the block
 *   pushed against it, so an overflow faults at the first byte past the end; freed
 *   guarded blocks become inaccessible entirely, so a use after free faults too (the
 *   mappings are reused);
 * - poison: freed blocks are filled with MT_DEBUG_POISON_BYTE (or zero with
 *   MTRACE_ZERO_ON_FREE) and verified when they leave the quarantine and, for those still
 *   in it, at exit: a write after free is reported with the offset it touched;
 * - quarantine: freed blocks are held back from reuse (a FIFO per thread, bounded in bytes
 *   and blocks; big blocks in a shared one) so a use after free reads poison instead of
 *   someone else's data;
 * - randomization: a small block is a random one of the last few the layer took for its
 *   size class, so heap layouts cannot be predicted and adjacent-block bugs show up in
 *   different places from run to run;
 * - fill: new blocks (not calloc's) are filled with the poison byte (MT_DEBUG_FILL_BYTE
 *   when there is no poison or it is zero), up to MTRACE_FILL_MAX bytes, exposing reads
 *   of uninitialised memory; a small slot whose poison was verified when it left the
 *   quarantine already reads as the fill, and only its bytes past its last block's size
 *   are filled.
 * Every block also has a record (requested size, state, the code addresses that allocated
 * and freed it), so reports say where the block came from even without the tracer,
 * malloc_usable_size returns the requested size (the canary is not the program's to
 * write), and a double free is recognised while the block sits in quarantine. Small
 * blocks keep theirs in an array beside their segment, indexed by slot (debug_slots.h);
 * the others in a striped table.
 *
 * Cost: per call, the record found by arithmetic (small blocks) plus the canary, the
 * poison and, at eviction, its check, and the fill (for a small slot reused after its
 * check, only its bytes past its last block's size: two passes over a small block's bytes
 * in its life, not three), without a lock or an atomic read-modify-write on the common
 * path; guarded blocks a system call at allocation and one at free (debug_guard.h). The
 * small-block malloc and free are compiled twice: with plain MTRACE_DEBUG=1 on an AVX2
 * CPU, a copy with the options as constants and 32-byte byte work runs (debug.c).
 * Measured in docs/hardening.md: at most 2.3 times glibc's time on most bench workloads,
 * 2.2 on the small-block churn, 2.8 to 2.9 on the tight malloc/free loop. */
#ifndef MT_ALLOCATOR_DEBUG_H
#define MT_ALLOCATOR_DEBUG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "check.h"
#include "error.h"

#define MT_DEBUG_POISON_BYTE 0xdf /* "dead freed" */
/* The fill of new blocks is the poison byte whenever freed blocks are poisoned with it: a
 * small slot verified to read as poison when it left the quarantine then needs no fill
 * when it is handed out again (a third pass over its bytes saved). 0xdfdfdfdf in a
 * variable thus means uninitialised or freed; the report or the trace tells which. When
 * there is no poison, or it is zero (MTRACE_ZERO_ON_FREE), the fill is this byte
 * instead: 0xbebebebe is an implausible value, and zero would hide the bug. */
#define MT_DEBUG_FILL_BYTE 0xbe
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
    size_t fill_max;     /* bytes of a new block filled at most */
    /* Not two constant words side by side: GCC stores such a pair from a 16-byte constant
     * in debug.c's read-only data, which start-up then faults in (test_footprint.py). */
    uint64_t fill_pattern;   /* fill_byte in every byte */
    uint8_t fill_byte;       /* MT_DEBUG_POISON_BYTE with nonzero poison, else MT_DEBUG_FILL_BYTE */
    uint64_t fill_clean_bit; /* MT_DEBUG_VERIFIED when fill_byte is the poison, else 0 (debug.c) */
};

extern struct mt_debug_config mt_debug_config;

/* Resolve the options (auto ones follow MTRACE_DEBUG); true when the layer is enabled.
 * MTRACE_ZERO_ON_FREE alone does not enable it (see MT_MODE_ZERO). */
bool mt_debug_init(void);

/* `site` is the code address that called the public function, kept for reports. */
void *mt_debug_malloc(size_t size, const void *site);
void *mt_debug_calloc(size_t count, size_t size, const void *site);
void *mt_debug_aligned(size_t align, size_t size, enum mt_api api, const void *site);
void *mt_debug_realloc(void *ptr, size_t size, enum mt_api api, const void *site);
void mt_debug_free(void *ptr, enum mt_api api, const void *site);
size_t mt_debug_usable_size(const void *ptr);

/* mt_debug_malloc and mt_debug_free as the interposer's hot functions call them in debug
 * mode alone: the copy of the hot path mt_debug_init chose (debug.c), reached with one
 * indirect jump instead of a call and a test of the choice. Set by mt_debug_init when it
 * enables the layer, which comes before MT_MODE_DEBUG is set. */
struct mt_debug_entries {
    void *(*malloc)(size_t size, const void *site);
    void (*free)(void *ptr, enum mt_api api, const void *site);
};
extern MT_HIDDEN struct mt_debug_entries mt_debug_entries;

/* Verify the poison of every block still in quarantine (at exit: a write after free into a
 * block freed late would otherwise never be seen). Reports the first broken one as `api`
 * and returns false. */
bool mt_debug_verify_quarantine(enum mt_api api);

/* Verify the canary of every live block and the poison of every quarantined one. */
bool mt_debug_check(struct mt_check *check);

/* What the fault handler learns about a faulting address. */
struct mt_debug_guard_hit {
    const void *block;      /* the guarded block's start */
    size_t size;            /* its requested size */
    bool freed;             /* the block was freed (the fault is a use after free) */
    const void *alloc_site; /* code addresses that allocated and freed it, for the report */
    const void *free_site;
};

/* The guard page an address falls in, for the fault handler: true and the block it
 * protects when addr lies in a guard page or a freed guarded block. */
bool mt_debug_guard_lookup(const void *addr, struct mt_debug_guard_hit *hit);

/* The debug layer's own tables (block table stripes, quarantine ring) hold the address of
 * every block: a leak scan must not count them as roots. Calls `visit` for each. */
void mt_debug_metadata_ranges(void (*visit)(void *ctx, uintptr_t start, size_t bytes), void *ctx);
void mt_debug_fork_prepare(void);
void mt_debug_fork_parent(void);
void mt_debug_fork_child(void);

#endif
