/* mtrace — the public interface of libmtalloc.so / libmtrace.so.
 *
 * Link with -lmtalloc (or run under LD_PRELOAD and look the functions up with dlsym).
 * The malloc family itself is declared by <stdlib.h> and <malloc.h>; this header adds what
 * glibc does not have: heap introspection, a consistency checker, statistics, a region
 * ("arena") allocator and trace control. Everything here is safe to call from any thread;
 * nothing here allocates from the heap it reports on. */
#ifndef MTRACE_H
#define MTRACE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Introspection --------------------------------------------------------------------
 * Output goes to standard output (the *_fd variants take a descriptor) and is written with
 * write(2) from a stack buffer, so they work in a signal handler or a debugger. While
 * other threads allocate, the picture is consistent per block but not a global instant. */

/* Zones (slab pages, medium heaps, large mappings) and every live block in them:
 *   SMALL 48 : 0x7f3a1c010000 (page of 64 KiB)
 *   0x7f3a1c010000 - 0x7f3a1c010030 : 48 bytes
 *   ...
 *   Total : 52698 bytes in 312 blocks */
void show_alloc_mem(void);
/* As show_alloc_mem, with a hex and ASCII dump of each block's contents. */
void show_alloc_mem_ex(void);
/* Histogram by size class: blocks live now and allocations made since start. */
void show_alloc_hist(void);
void mt_show_alloc_mem_fd(int fd);
void mt_show_alloc_mem_ex_fd(int fd);
void mt_show_alloc_hist_fd(int fd);

/* Walk every allocator structure and check its invariants. Returns 0 when the heap is
 * consistent; otherwise prints the first broken invariant to stderr and returns -1. */
int mt_heap_check(void);

/* ---- Statistics ------------------------------------------------------------------------ */
struct mt_heap_stats {
    size_t mapped;          /* bytes of address space the allocator holds */
    size_t resident;        /* of which committed (backed or backable by RAM) */
    size_t in_use;          /* usable bytes of live blocks */
    size_t free_bytes;      /* committed bytes not in live blocks (fragmentation lives here) */
    size_t largest_free;    /* largest free extent that can serve a request without the OS */
    size_t live_blocks;     /* number of live blocks */
    size_t total_allocs;    /* successful allocations since start */
    size_t total_frees;     /* frees since start */
};
void mt_heap_stats(struct mt_heap_stats *out);

/* ---- Regions ("arenas"): scoped bump allocation -----------------------------------------
 * A region reserves address space once and commits pages as it grows; popping back (or
 * clearing) returns pages to the OS once more than a threshold of them is unused. Blocks
 * from a region are not freed individually and must not be passed to free(). Regions are
 * not thread-safe: one thread uses a region at a time. */
typedef struct mt_arena mt_arena_t;

/* Reserve `reserve` bytes of address space (0: 64 GiB). NULL with errno ENOMEM on failure. */
mt_arena_t *mt_arena_create(size_t reserve);
/* `size` bytes, aligned to 16 unless auto-alignment is off (then packed at 1). NULL with
 * errno ENOMEM when the reservation is exhausted. */
void *mt_arena_push(mt_arena_t *arena, size_t size);
void *mt_arena_push_zero(mt_arena_t *arena, size_t size);
/* `align` must be a power of two; up to the page size. */
void *mt_arena_push_aligned(mt_arena_t *arena, size_t size, size_t align);
/* Current position: bytes used since the start of the region. */
size_t mt_arena_pos(mt_arena_t *arena);
/* Free everything pushed after position `pos`. */
void mt_arena_pop_to(mt_arena_t *arena, size_t pos);
/* Free the last `size` bytes pushed. */
void mt_arena_pop(mt_arena_t *arena, size_t size);
void mt_arena_clear(mt_arena_t *arena);
/* Return the whole region to the OS; the handle is invalid afterwards. */
void mt_arena_release(mt_arena_t *arena);
/* Auto-alignment on (the default: every push aligned to 16) or off (pushes packed). */
void mt_arena_set_auto_align(mt_arena_t *arena, int on);

/* ---- Trace control (no-ops when not tracing) -------------------------------------------- */
/* Stop and restart recording of this process's calls (all threads). */
void mt_trace_pause(void);
void mt_trace_resume(void);
/* Put a named mark on the timeline ("request 42 done"); shown by mtrace-report timeline. */
void mt_trace_mark(const char *label);
/* 1 when this process is being recorded. */
int mt_trace_active(void);

#ifdef __cplusplus
}
#endif

#endif
