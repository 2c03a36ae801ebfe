/* The one fatal path for bugs of the program that uses the heap (double free, invalid
 * free, corrupted metadata, overflows caught by canaries, writes after free).
 *
 * Prints "mtrace: error: <bug> of <ptr> (size N) in <function>" with write(2), calls the
 * hook that interpose/ installs (backtrace, allocation and free sites, trace record), then
 * aborts, or returns when MTRACE_ON_ERROR=continue so the caller can skip the operation.
 * Never allocates: the heap may be broken. */
#ifndef MT_ALLOCATOR_ERROR_H
#define MT_ALLOCATOR_ERROR_H

#include <stddef.h>

#include "../common/compiler.h"

/* The public function a detection happened in, for the message. */
enum mt_api {
    MT_API_MALLOC,
    MT_API_FREE,
    MT_API_CALLOC,
    MT_API_REALLOC,
    MT_API_REALLOCARRAY,
    MT_API_POSIX_MEMALIGN,
    MT_API_ALIGNED_ALLOC,
    MT_API_MEMALIGN,
    MT_API_VALLOC,
    MT_API_PVALLOC,
    MT_API_USABLE_SIZE,
    MT_API_HEAP_CHECK,
    MT_API_ARENA_PUSH, /* mt_arena_push, _push_zero and _push_aligned */
    MT_API_ARENA_POS,
    MT_API_ARENA_POP_TO,
    MT_API_ARENA_POP,
    MT_API_ARENA_CLEAR,
    MT_API_ARENA_RELEASE,
    MT_API_ARENA_SET_AUTO_ALIGN,
    MT_API_ACCESS, /* a load or store of the program (debug mode's guard pages) */
    MT_API_EXIT,   /* checks run when the program exits (debug mode's quarantine) */
    MT_API_INTERNAL,
};
const char *mt_api_name(enum mt_api api);

enum mt_heap_error_kind {
    MT_ERR_DOUBLE_FREE,       /* "double free" */
    MT_ERR_INVALID_FREE,      /* "invalid free": never returned by us (stack, global, foreign) */
    MT_ERR_INTERIOR_FREE,     /* "invalid free": points inside a block, not at its start */
    MT_ERR_REALLOC_FREED,     /* "realloc of freed block" */
    MT_ERR_FREED_BLOCK,       /* "use of freed block" (malloc_usable_size and the like) */
    MT_ERR_CORRUPT_HEADER,    /* "corrupted block header": checksum or size does not verify */
    MT_ERR_CORRUPT_FREELIST,  /* "corrupted free list": a link does not decode to our heap */
    MT_ERR_CORRUPT_TOP,       /* "corrupted top chunk" */
    MT_ERR_OVERFLOW,          /* "heap buffer overflow": canary after the block changed */
    MT_ERR_WRITE_AFTER_FREE,  /* "write after free": poison of a freed block changed */
    MT_ERR_INVALID_REGION,    /* "invalid region operation" (mt_arena_*) */
    MT_ERR_KIND_COUNT
};

struct mt_heap_error {
    enum mt_heap_error_kind kind;
    const void *ptr;     /* the pointer the program passed, or the corrupted block */
    size_t size;         /* usable size of the block when known, else 0 */
    enum mt_api api;
    const char *detail;  /* optional: what exactly failed ("next chunk's prev_size differs") */
    const void *alloc_site; /* optional: code address that allocated the block (debug mode) */
    const void *free_site;  /* optional: code address that freed it */
};

/* Short name of the bug ("double free"). */
const char *mt_heap_error_name(enum mt_heap_error_kind kind);

/* Called after the first line is printed, before abort: prints the rest of the report
 * (backtrace, the block's allocation and free sites). Runs on the failing thread with the
 * heap possibly broken: it must not allocate from it. */
typedef void (*mt_heap_error_hook_fn)(const struct mt_heap_error *error);
void mt_heap_error_set_hook(mt_heap_error_hook_fn hook);

/* Report and abort; returns only in continue mode. Out of line and cold: detections are
 * never on the fast path's straight line. */
MT_COLD void mt_heap_error(const struct mt_heap_error *error);
MT_COLD void mt_heap_error_simple(enum mt_heap_error_kind kind, const void *ptr, size_t size, enum mt_api api,
                                  const char *detail);

/* Number of errors reported so far in continue mode (tests and the trace summary). */
size_t mt_heap_error_count(void);

#endif
