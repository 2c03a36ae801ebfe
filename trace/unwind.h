/* Call stack capture for events (libunwind).
 *
 * Owns: unwinding the calling thread's stack into return addresses, dropping the frames
 * that lie inside libmtrace.so itself, so the first stored address is the program's call
 * site (the return address of its call into malloc).
 *
 * Invariants: never calls malloc. libunwind's local unwinder takes memory from its own
 * mmap'd pools; the caching policy is per thread, which libunwind documents as the one
 * safe to use from signal handlers. Should libunwind allocate anyway (a first-time
 * initialisation of some glibc facility), the recorder's recursion guard serves that call
 * unrecorded. */
#ifndef MT_TRACE_UNWIND_H
#define MT_TRACE_UNWIND_H

#include <stdint.h>

/* Once, at start-up, outside malloc: find our own code's address range and set libunwind's
 * caching policy. */
void mt_unwind_init(void);

/* Run libunwind's one-time initialisations for the calling thread (see unwind.c); called by
 * mt_unwind_init and for every new thread, outside any nestable section. */
void mt_unwind_warm_up(void);

/* Capture up to `depth` (<= MT_WIRE_DEPTH_MAX) return addresses of the caller's callers,
 * innermost first, starting at the first frame outside libmtrace.so. Returns the count. */
uint32_t mt_unwind_capture(uint64_t *frames, uint32_t depth);

#endif
