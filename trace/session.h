/* The traced process's connection to the collector, and its per-thread recording state.
 *
 * Owns: finding or starting the collector (MTRACE_CONN_FD, MTRACE_SOCKET, or plain
 * LD_PRELOAD mode with MTRACE_OUT: spawn `mtrace-run --collector-fd N -o OUT` detached),
 * HELLO and its verdict, the process area, sending each thread's ring, the connection's
 * lifetime across fork (a new connection opened before the fork, adopted by the child)
 * and exec (the connection is inherited; MTRACE_CONN_FD names it and MTRACE_CONN_PID the
 * process it belongs to), GOODBYE at exit, and the heap error block query.
 *
 * Invariants:
 * - Nothing here runs inside a recorded malloc's common path except mt_session_thread(),
 *   which returns the calling thread's state with a ready ring, creating it the first time
 *   (a non-nestable section: the caller holds the recursion guard).
 * - A fork child never writes the parent's rings or process area (they are shared memory
 *   it inherited): it makes its own, and every thread state of an older generation is
 *   reset on its next use.
 * - MTRACE_CONN_PID guards against a child started without fork handlers (vfork,
 *   posix_spawn, system()) sending its HELLO on its parent's connection: an image whose
 *   pid differs opens a connection of its own. */
#ifndef MT_TRACE_SESSION_H
#define MT_TRACE_SESSION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/compiler.h"
#include "clock.h"
#include "ring.h"
#include "stack_store.h"
#include "unwind.h"
#include "wire.h"

struct mt_thread_state {
    struct mt_ring_writer writer;
    struct mt_stack_cache cache;
    struct mt_unwind_cache *unwind_cache; /* NULL: none (mapping failed) */
    uint32_t generation; /* of the process image the ring belongs to; 0: none yet */
    /* > 0: the recorder is in a section that cannot nest (ring creation, snapshot, exit
     * scan): hooked calls from inside it are served unrecorded. */
    uint32_t busy;
    /* Hooked calls being recorded on this thread (> 1: a signal handler interrupted one). */
    uint32_t calls;
    uint32_t registered; /* its ring is in the registry and its exit destructor is armed */
    uint32_t failed_generation; /* making a ring failed in this generation: do not retry */
    uint64_t bytes_since_check; /* allocated bytes not yet added to the process total */
    struct mt_clock_sampler clock; /* events' timestamps (trace/clock.h) */
};

struct mt_session_config {
    uint32_t page_size;
    uint32_t small_class_count;
    const uint32_t *small_classes;
};

/* Start-up, from libmtrace.so's constructor (not inside malloc). Returns true when this
 * process is traced (the collector accepted it). */
bool mt_session_start(const struct mt_session_config *config);
bool mt_session_traced(void);
/* Whether this process has a connection at all (traced or rejected). */
bool mt_session_connected(void);
/* False in a vfork child (or a posix_spawn child before its exec), which runs on its
 * parent's memory: everything here is the parent's, and must be left alone. */
bool mt_session_is_own_process(void);

/* What every recorded call reads, inline (owned and written by session.c only). */
struct mt_session_hot {
    struct mt_stack_store store;  /* the process area's stack store (valid while traced) */
    _Atomic uint32_t generation;  /* of the process image's recording state */
    uint32_t depth;               /* MTRACE_DEPTH */
};
extern struct mt_session_hot mt_session_hot;
extern MT_TLS struct mt_thread_state mt_session_thread_state;

/* The process area and its stack store (valid while traced). */
struct mt_wire_proc *mt_session_proc(void);
static inline struct mt_stack_store *mt_session_store(void)
{
    return &mt_session_hot.store;
}
static inline uint32_t mt_session_depth(void)
{
    return mt_session_hot.depth;
}

struct mt_thread_state *mt_session_thread_slow(void);
/* The calling thread's state, its ring ready; NULL when no ring can be had (the call is
 * then unrecorded). */
static inline struct mt_thread_state *mt_session_thread(void)
{
    struct mt_thread_state *t = &mt_session_thread_state;
    if (MT_LIKELY(t->generation == atomic_load_explicit(&mt_session_hot.generation, memory_order_relaxed) &&
                  t->writer.ring))
        return t;
    return mt_session_thread_slow();
}
/* The calling thread's state without creating anything (for the recursion guard). */
static inline struct mt_thread_state *mt_session_thread_raw(void)
{
    return &mt_session_thread_state;
}

/* At exit, after the last record: GOODBYE and wait for the collector if it asked to. */
void mt_session_finish(void);

/* Ask the collector where `ptr` was allocated and freed, after it consumed records up to
 * `upto_seq`; writes the answer's text (NUL-terminated) into `text`. Returns its length, 0
 * when the collector knows nothing or did not answer in time. */
uint32_t mt_session_block_query(uint64_t ptr, uint64_t upto_seq, char *text, uint32_t cap);

#endif
