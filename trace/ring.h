/* A thread's event ring, producer side (the layout is trace/wire.h's mt_wire_ring).
 *
 * Owns: creating a ring memfd and its header; reserving cells, writing a record into them
 * (wrapping cell by cell), taking the record's sequence number once its space is secured,
 * and publishing `head` with release; what to do when the ring is full (wait for the
 * collector, or drop and count).
 *
 * Invariants:
 * - Records nest: a signal handler that records while its thread is between reserve and
 *   publish reserves after the interrupted record and never publishes; the outermost
 *   record publishes everything reserved so far when it completes. `head` only grows:
 *   the outermost record stores it while it still counts as in progress (a handler then
 *   is nested and publishes nothing), and a handler that recorded between that store and
 *   the record's end is published by a compare-and-swap to the maximum (ring.c, finish).
 * - Cells [head, next) are being written by this thread; cells below head are complete.
 * - A record is either entirely reserved (then it takes a sequence number and is written)
 *   or dropped before it takes one: sequence numbers stay dense.
 * - A nested record waits for space only while the collector can make room for it: not
 *   when the interrupted record's unpublished cells leave none (it then drops, ring.c).
 * - Only the outermost record grows the ring, before it has reserved anything and with
 *   the thread's signals blocked: every cell of the old ring is then complete, so it is
 *   published whole and closed (the collector drains it, then retires it) before the
 *   thread writes to the new one. Sequence numbers go on across the two rings; the
 *   collector merges by them, as it does across threads. */
#ifndef MT_TRACE_RING_H
#define MT_TRACE_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

struct mt_ring_writer {
    struct mt_wire_ring *ring; /* NULL: none yet */
    uint8_t *cells;            /* first cell */
    uint64_t mask;             /* cells - 1 */
    size_t map_bytes;
    /* Cells reserved so far (a compare-and-swap on this thread's own copy: atomic against
     * a signal handler of the same thread, and never contended by another thread). */
    _Atomic uint64_t next;
    /* The collector's `tail` as last read (a signal handler may store an older value:
     * harmless, it only makes the next reservation read `tail` again). */
    uint64_t tail_seen;
    /* Records in progress on this thread (> 1: nested by a signal handler). */
    uint32_t depth;
    /* The full sequence number of the last record begun here (records carry its low
     * 32 bits): what a heap error's block query names. */
    uint64_t last_seq;
    /* Bytes of cells this thread's ring has beyond the first size it was given (grown). */
    size_t grown;
};

/* Process-wide policy, set by the session (and again in a fork child). */
struct mt_ring_policy {
    struct mt_wire_proc *proc; /* sequence numbers and the dropped counter */
    bool drop;                 /* MTRACE_DROP: drop instead of waiting */
    /* Checked while waiting for space: true once the collector is gone (the writer then
     * drops for the rest of the process rather than hang). */
    bool (*collector_gone)(void);
    /* Growth (MTRACE_RING_MAX): a thread whose ring is full moves to a ring twice as big
     * instead of waiting or dropping, while its ring's cells stay within grow_max bytes and
     * the process's grown rings within grow_budget bytes. `adopt` hands the new ring's
     * memfd to the collector before the thread writes to it (false: it could not, the
     * thread waits as before). NULL adopt or grow_max at most the first size: no growth. */
    size_t grow_max, grow_budget;
    bool (*adopt)(const struct mt_ring_writer *old, const struct mt_ring_writer *fresh, int fd);
};
void mt_ring_set_policy(const struct mt_ring_policy *policy);

/* Make a ring of `bytes` (header included; rounded so the cells are a power of two) for
 * thread `tid` named `name`. Returns the memfd to send to the collector (the caller closes
 * it), or -1. */
int mt_ring_create(struct mt_ring_writer *w, size_t bytes, int32_t tid, const char *name);
/* Unmap the writer's ring (thread exit after `closed`, fork child dropping the parent's). */
void mt_ring_unmap(struct mt_ring_writer *w);
/* The thread is gone: its ring's growth no longer counts against the process's budget. */
void mt_ring_forget_growth(const struct mt_ring_writer *w);
/* Mark the ring closed: the thread is gone; the collector may unmap it once drained. */
void mt_ring_close(struct mt_ring_writer *w);

/* Write one record of `bytes` (>= sizeof(struct mt_wire_rec)); its `cells` field is set
 * here, and its `seq` unless it is MT_REC_PAD. Returns false when the record was dropped
 * (counted in ring and process). */
bool mt_ring_put(struct mt_ring_writer *w, struct mt_wire_rec *rec, size_t bytes);

/* The same in two steps, for a record whose content is known only after its sequence
 * number must be taken (realloc: its number orders the release of the old block, its new
 * pointer is known afterwards). Between begin and end the record is open: this thread
 * publishes nothing. begin returns false when the record was dropped (then no end). The
 * record's size and kind must not change between the two. */
bool mt_ring_begin(struct mt_ring_writer *w, struct mt_wire_rec *rec, size_t bytes, uint64_t *pos);
void mt_ring_end(struct mt_ring_writer *w, uint64_t pos, const struct mt_wire_rec *rec, size_t bytes);

/* mt_ring_put of a one-cell event built in registers: `head` is mt_wire_rec_word's with
 * cells and seq 0 (both are set here), `body0`, `body1` mt_wire_event_words'. The common record's
 * path: reserve, number, four word stores, publish, with no copy through memory. */
bool mt_ring_put_cell(struct mt_ring_writer *w, uint64_t head, uint64_t ts, uint64_t body0, uint64_t body1);

/* Cells a record of `bytes` takes. */
static inline uint32_t mt_ring_cells_for(size_t bytes)
{
    return (uint32_t)((bytes + MT_WIRE_CELL - 1) / MT_WIRE_CELL);
}

/* Largest record a ring of the minimum size accepts: snapshots are the biggest records. */
#define MT_RING_RECORD_MAX 4096u

#endif
