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

#include <stdbool.h>
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

/* ---- a per-thread cache that skips unwinding when the stack is provably unchanged ----
 *
 * Key: the program's call site into malloc (return address), its stack pointer and frame
 * pointer there (x86-64 only: read from the frame record of the exported function the
 * program called, or found by walking our own frame-pointer chain); the frame pointer is compared only for entries whose unwind could depend on it
 * (some frame whose rbp is still the call site's has it pointing into its own frame, as an
 * rbp-based CFA rule requires), since code built without frame pointers keeps data there. An entry holds the stack id of a full unwind from that key plus, for every frame
 * it went through, the stack slot its return address was read from (CFA - 8) and, when the
 * frame's rbp was restored from memory and the frame may compute its CFA from rbp (rbp
 * points into it), that slot too, with the values seen. A hit re-reads those slots and
 * requires each to hold the same value.
 *
 * Why that is exact: on x86-64 a frame's CFA is computed from its own rsp or rbp (GCC and
 * Clang emit nothing else outside hand-written code and stack realignment), and an
 * rbp-based rule has rbp inside the frame. Frame 0's rsp (and rbp where it can matter)
 * are the key; given frame n's rsp and, if its CFA rule uses it, rbp, frame n+1's return
 * address is read from a slot fixed by frame n's code address, and its rsp (= frame n's
 * CFA) follows, and its rbp where a CFA depends on it (a checked slot, or the same
 * register); an rbp no CFA is computed from (data, in code without frame pointers) changes
 * nothing the unwind produces, so its slot is not checked. By induction, an unwind now would read the
 * same slots and find the same values, so it would produce the same stack; and checking in
 * unwinding order only ever reads a slot such an unwind would read. Frames libunwind cannot
 * describe that way (signal frames, a return address not at CFA-8, rbp kept elsewhere) are
 * never cached. Remaining assumption: no frame computes its CFA from memory or from a
 * register other than rsp/rbp (DRAP realignment, hand-written CFI); such code would have
 * to also move its return address slot while keeping the checked one intact to fool it.
 *
 * Cost: a hit is three loads of the key, one cache line of the entry and one load and
 * compare per checked slot (two entries per set: unwind_cache.h). A key's first miss costs
 * the usual unw_backtrace; its second also steps a cursor (slow: 2 to 10 us) to fill the
 * entry, so only keys that recur pay for it, and at most one miss in 16 does (unwind.c). Only the outermost record of a thread uses
 * its cache (a signal handler's record must not see a half-filled entry). */
struct mt_unwind_key {
    uint64_t ip, sp, fp;
};
struct mt_unwind_cache;
/* An entry being filled, between capture and commit. */
struct mt_unwind_fill {
    void *entry;
};

/* Map a thread's cache (outside any nestable section), or NULL; free it at thread exit. */
struct mt_unwind_cache *mt_unwind_cache_new(void);
void mt_unwind_cache_free(struct mt_unwind_cache *cache);
/* The program's call site into libmtrace.so: the return address in `frame`'s record, when
 * `frame` is the frame of the exported function the program called (its
 * __builtin_frame_address(0)); else (a frame of ours further in, or NULL: our own frames)
 * found by walking our frame-pointer chain from there. Only for callers whose frames are
 * all ours (the event path); false: no key. */
bool mt_unwind_key(struct mt_unwind_key *key, const void *frame);
/* The lookup of a key in the cache: inline, trace/unwind_cache.h. */
/* A miss: mt_unwind_capture, and possibly prepare the key's entry; after interning the
 * frames, mt_unwind_cache_commit makes the entry usable with the id. */
uint32_t mt_unwind_capture_cached(struct mt_unwind_cache *cache, const struct mt_unwind_key *key,
                                  uint64_t *frames, uint32_t depth, struct mt_unwind_fill *fill);
void mt_unwind_cache_commit(struct mt_unwind_fill *fill, uint32_t id, uint32_t generation);

#endif
