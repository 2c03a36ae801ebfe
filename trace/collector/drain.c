/* Draining a process: its threads' rings merged into one stream by sequence number.
 *
 * Each ring holds one thread's records in increasing seq order, and seqs are dense over
 * the process, so the next record of the stream is always at the head of some ring.
 * Records carry the low 32 bits of their seq; every record still in a ring is within 2^31
 * of next_seq, so rec_seq() recovers the whole number from next_seq. The
 * merge takes it from the ring whose head has seq == next_seq and keeps taking from the
 * same ring while its next record continues the sequence: a thread that allocates in a
 * burst is copied out in one run. When no ring has next_seq, a record is being written
 * right now (its space is reserved, its head not yet published): we wait for it while the
 * process lives, and skip the number once the process is gone (it will never come).
 *
 * Cost: records are copied cell by cell out of shared memory (they may wrap the ring's
 * end); the producer's head is read once per run, not per record, and our tail is
 * published once per batch so the producer's cache line is not bounced per event. */
#include "collector.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"
#include "ring.h"

/* How long a gap in a live process's sequence may block a waiting producer (see
 * gap_abandoned): far beyond any scheduling delay of a thread between taking its number
 * and publishing its record. */
#define GAP_GIVE_UP_NS (2ull * 1000u * 1000u * 1000u)

/* A record's full sequence number (the wire holds its low 32 bits: trace/wire.h). */
static inline uint64_t rec_seq(const struct mt_proc *proc, const struct mt_wire_rec *rec)
{
    return mt_wire_seq(rec->seq, proc->next_seq);
}

static inline bool is_next(const struct mt_proc *proc, const struct mt_wire_rec *rec)
{
    return rec->seq == (uint32_t)proc->next_seq;
}

/* Publish our tail. A producer waiting for space is woken once a quarter of its ring is
 * free again (or at the end of a drain pass, `finished`): waking it per published batch
 * would let it write one batch and sleep again, a context switch per thousand events. */
void mt_ring_publish_tail(struct mt_ring_view *r, bool finished)
{
    if (r->published_tail == r->tail)
        return;
    atomic_store_explicit(&r->hdr->tail, r->tail, memory_order_seq_cst);
    r->published_tail = r->tail;
    /* seq_cst store then load pairs with the producer's "set waiting, re-read tail, wait":
     * either it sees our new tail or we see its flag. */
    if (!atomic_load_explicit(&r->hdr->waiting, memory_order_seq_cst))
        return;
    if (finished || r->tail - r->woken_tail >= (r->mask + 1) / 4) {
        r->woken_tail = r->tail;
        mt_host_futex_wake_shared((void *)&r->hdr->tail);
    }
}

void mt_drain_publish_tails(struct mt_proc *proc)
{
    for (size_t i = 0; i < proc->ring_count; i++)
        mt_ring_publish_tail(&proc->rings[i], true);
}

static void refresh_all(struct mt_proc *proc)
{
    for (size_t i = 0; i < proc->ring_count; i++)
        mt_ring_refresh(&proc->rings[i]);
}

/* Records whose turn has not come, taken out of a ring ahead of it. A signal handler that
 * records while its thread is between reserving ring space and taking its seq leaves the
 * thread's records in the ring out of seq order: the interrupted record (seq S + k) comes
 * first, the handler's (S .. S + k - 1) after it. When no ring's head continues the
 * sequence, the next few records of each ring are searched for it; the records in front
 * of it are held here until their turn. */
#define LOOKAHEAD_RECORDS 32

static void hold_record(struct mt_proc *proc, struct mt_ring_view *r, const struct mt_wire_rec *rec)
{
    static unsigned char buf[MT_RECORD_MAX_CELLS * MT_WIRE_CELL] __attribute__((aligned(64)));
    const struct mt_wire_rec *whole = mt_ring_record_contiguous(r, r->tail, rec, buf);
    size_t bytes = (size_t)(rec->cells ? rec->cells : 1) * MT_WIRE_CELL;
    MT_VEC_RESERVE(proc->held, proc->held_cap, proc->held_count + 1);
    struct mt_held_rec *h = &proc->held[proc->held_count++];
    h->seq = rec_seq(proc, rec);
    h->thread = mt_proc_ring_thread(proc, r);
    h->data = malloc(bytes);
    if (!h->data) {
        proc->held_count--;
        return;
    }
    memcpy(h->data, whole, bytes);
    r->tail += rec->cells ? rec->cells : 1;
}

/* Search each ring's next records for next_seq; hold what is in front of it. */
static bool unstick(struct mt_proc *proc)
{
    for (size_t i = 0; i < proc->ring_count; i++) {
        struct mt_ring_view *r = &proc->rings[i];
        if (!mt_ring_peek(r))
            continue;
        uint64_t at = r->tail;
        unsigned found = 0;
        for (unsigned k = 0; k < LOOKAHEAD_RECORDS && at < r->head; k++) {
            const struct mt_wire_rec *rec = mt_ring_cell(r, at);
            if (rec->kind != MT_REC_PAD && is_next(proc, rec)) {
                found = k;
                break;
            }
            at += rec->cells ? rec->cells : 1;
        }
        if (!found)
            continue;
        for (unsigned k = 0; k < found; k++) {
            const struct mt_wire_rec *rec = mt_ring_peek(r);
            if (rec)
                hold_record(proc, r, rec);
        }
        return true;
    }
    return false;
}

/* Apply the held record with next_seq, if there is one. */
static bool apply_held(struct mt_proc *proc)
{
    for (size_t i = 0; i < proc->held_count; i++) {
        struct mt_held_rec h = proc->held[i];
        if (h.seq != proc->next_seq)
            continue;
        proc->held[i] = proc->held[--proc->held_count];
        mt_proc_apply_as(proc, h.thread, (const struct mt_wire_rec *)h.data);
        free(h.data);
        proc->next_seq++;
        return true;
    }
    return false;
}

static uint64_t lowest_held(const struct mt_proc *proc)
{
    uint64_t lowest = UINT64_MAX;
    for (size_t i = 0; i < proc->held_count; i++)
        if (proc->held[i].seq < lowest)
            lowest = proc->held[i].seq;
    return lowest;
}

/* A ring whose thread is gone and whose records are all consumed: unmap it, so a program
 * that starts thousands of short threads does not keep thousands of rings alive. The
 * producer sets `closed` after its last record; re-reading head after seeing it makes
 * sure that record was not missed. */
static void retire_closed_rings(struct mt_proc *proc)
{
    for (size_t i = 0; i < proc->ring_count;) {
        struct mt_ring_view *r = &proc->rings[i];
        bool closed = atomic_load_explicit(&r->hdr->closed, memory_order_acquire);
        mt_ring_refresh(r);
        if (closed && !mt_ring_peek(r)) {
            mt_ring_publish_tail(r, true);
            mt_proc_retire_ring(proc, i);
            continue;
        }
        i++;
    }
}

/* Records whose seq we already passed (a gap given up, or a corrupt producer) can no
 * longer be applied in order: drop them, from the ring heads and the held records. */
static void drop_passed(struct mt_proc *proc)
{
    for (size_t i = 0; i < proc->ring_count; i++) {
        struct mt_ring_view *r = &proc->rings[i];
        const struct mt_wire_rec *rec;
        while ((rec = mt_ring_peek(r)) && rec_seq(proc, rec) < proc->next_seq)
            r->tail += rec->cells ? rec->cells : 1;
    }
    for (size_t i = 0; i < proc->held_count; i++)
        if (proc->held[i].seq < proc->next_seq) {
            free(proc->held[i].data);
            proc->held[i--] = proc->held[--proc->held_count];
        }
}

/* A live process's gap is normally a record being written and fills within
 * microseconds. One that lasts GAP_GIVE_UP_NS while a thread of the process waits for
 * ring space behind it will never fill (a signal handler left its record by longjmp,
 * docs/tracer.md): waiting longer would deadlock the program, so the number is skipped. */
static bool gap_abandoned(struct mt_proc *proc)
{
    uint64_t now = mt_host_monotonic_ns();
    if (proc->stuck_seq != proc->next_seq || !proc->stuck_since_ns) {
        proc->stuck_seq = proc->next_seq;
        proc->stuck_since_ns = now;
        return false;
    }
    if (now - proc->stuck_since_ns < GAP_GIVE_UP_NS)
        return false;
    for (size_t i = 0; i < proc->ring_count; i++)
        if (atomic_load_explicit(&proc->rings[i].hdr->waiting, memory_order_acquire)) {
            proc->stuck_since_ns = 0;
            return true;
        }
    return false;
}

size_t mt_drain_proc(struct mt_proc *proc, size_t budget, bool *drained)
{
    size_t done = 0;
    *drained = false;
    refresh_all(proc);
    bool fresh = true; /* every ring's head was read since the last record was applied */
    while (done < budget) {
        struct mt_ring_view *best = NULL;
        uint64_t lowest = UINT64_MAX;
        for (size_t i = 0; i < proc->ring_count; i++) {
            struct mt_ring_view *r = &proc->rings[i];
            const struct mt_wire_rec *rec = mt_ring_peek(r);
            if (!rec)
                continue;
            if (is_next(proc, rec)) {
                best = r;
                break;
            }
            uint64_t seq = rec_seq(proc, rec);
            if (seq < lowest)
                lowest = seq;
        }
        if (!best && !fresh) {
            refresh_all(proc);
            fresh = true;
            continue;
        }
        if (!best) {
            if (proc->held_count) {
                if (apply_held(proc)) {
                    done++;
                    continue;
                }
                lowest = MT_MIN(lowest, lowest_held(proc));
            }
            if (lowest == UINT64_MAX) {
                if (proc->state != MT_PROC_LIVE)
                    *drained = true;
                break;
            }
            if (lowest < proc->next_seq) {
                drop_passed(proc);
                continue;
            }
            if (unstick(proc))
                continue;
            if (proc->state == MT_PROC_LIVE && !gap_abandoned(proc))
                break; /* a record is being written: wait for it */
            proc->skipped_seqs += lowest - proc->next_seq;
            proc->next_seq = lowest;
            continue;
        }
        /* Take a run from this ring. */
        fresh = false;
        done += mt_proc_apply_run(proc, best, budget - done);
    }
    mt_drain_publish_tails(proc);
    if (done < budget)
        retire_closed_rings(proc);
    return done;
}
