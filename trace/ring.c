/* Producer side of a thread's ring (ring.h). The common path of mt_ring_put is one
 * compare-and-swap on this thread's own counter, an increment of the process's sequence
 * counter, the copy into the cells and one plain store publishing `head` (finish); the
 * one-cell event (mt_ring_put_cell) writes its cell from registers instead of copying. No
 * lock and no system call. The compare-and-swap guards only against this thread's signal
 * handlers (cas_own), and so does the sequence increment while the process has a single
 * ring (take_seq): on x86-64 a single-threaded program's record has no locked instruction.
 * The collector is only waited for when the ring is full. */
#include "ring.h"

#include <stdatomic.h>
#include <string.h>

#include "../common/compiler.h"
#include "../common/lock.h"
#include "../common/platform.h"

/* How long one futex wait for space lasts before the writer checks again whether the
 * collector still exists: short enough that a dead collector costs a traced program a
 * fraction of a second, long enough that a slow collector is not polled busily. */
#define RING_WAIT_SLICE_NS (50u * 1000u * 1000u)

static struct mt_ring_policy policy;
/* Set once the collector is gone: from then on every record is dropped. */
static _Atomic bool collector_lost;
/* Bytes of ring cells the process's threads have beyond their first sizes (growth). */
static _Atomic size_t grown_total;

/* Sequence numbers without a locked instruction while one thread records.
 *
 * A locked fetch_add costs ~15 ns per record, most of it draining the store buffer that
 * holds the previous record's cells. While the process image has made a single ring, only
 * that ring's thread takes numbers, so an increment that is atomic against its own signal
 * handlers (x86-64: xadd without lock) is enough. The second ring (a second thread about
 * to take its first number) switches the process to the locked fetch_add for good:
 *
 *   solo thread:  seq_solo_busy++  ; compiler barrier ; if (!seq_shared) unlocked xadd ; seq_solo_busy--
 *   new thread:   seq_shared = 1 ; membarrier() ; wait until seq_solo_busy == 0
 *
 * membarrier runs a full barrier on the solo thread, so either its load sees seq_shared or
 * the new thread sees its seq_solo_busy (Dekker, with the solo thread's fence paid by the
 * rare side); after the wait no unlocked increment is in flight, and every later one is
 * locked. Without membarrier (old kernel, seccomp) the process uses the locked increment
 * from the start. Every thread makes its ring before its first record, whoever created
 * it (pthread_create or not), so no thread can take a number unnoticed. A fork child is a
 * single thread with a new process area: it starts solo again (mt_ring_set_policy). */
static _Atomic bool seq_shared;
static _Atomic uint32_t seq_solo_busy;
static mt_lock_t rings_lock = MT_LOCK_INIT;
static uint32_t rings_made; /* in this process image, under rings_lock */

void mt_ring_set_policy(const struct mt_ring_policy *p)
{
    policy = *p;
    atomic_store_explicit(&collector_lost, false, memory_order_relaxed);
    atomic_store_explicit(&grown_total, 0, memory_order_relaxed);
    rings_lock = (mt_lock_t)MT_LOCK_INIT;
    rings_made = 0;
    atomic_store_explicit(&seq_solo_busy, 0, memory_order_relaxed);
#if defined(__x86_64__)
    atomic_store_explicit(&seq_shared, !mt_os_membarrier_register(), memory_order_relaxed);
#else
    atomic_store_explicit(&seq_shared, true, memory_order_relaxed);
#endif
}

/* A ring is being made: from the second on, numbers are taken with the locked increment. */
static void seq_ring_added(void)
{
    mt_lock(&rings_lock);
    if (rings_made++ > 0 && !atomic_load_explicit(&seq_shared, memory_order_relaxed)) {
        atomic_store_explicit(&seq_shared, true, memory_order_seq_cst);
        if (!mt_os_membarrier())
            atomic_thread_fence(memory_order_seq_cst); /* registered, so not expected to fail */
        while (atomic_load_explicit(&seq_solo_busy, memory_order_acquire) != 0)
            mt_os_yield();
    }
    mt_unlock(&rings_lock);
}

/* The record's sequence number. */
static inline uint64_t take_seq(void)
{
#if defined(__x86_64__)
    if (MT_LIKELY(!atomic_load_explicit(&seq_shared, memory_order_relaxed))) {
        uint64_t seq = 1;
        /* incl/xaddq/decl without lock: atomic against this thread's signal handlers, which
         * is all a solo thread needs; the asm statements are compiler barriers. */
        __asm__ volatile("incl %0" : "+m"(*(uint32_t *)(void *)&seq_solo_busy) : : "memory");
        bool solo = !atomic_load_explicit(&seq_shared, memory_order_relaxed);
        if (MT_LIKELY(solo))
            __asm__ volatile("xaddq %0, %1"
                             : "+r"(seq), "+m"(*(uint64_t *)(void *)&policy.proc->next_seq)
                             :
                             : "memory");
        __asm__ volatile("decl %0" : "+m"(*(uint32_t *)(void *)&seq_solo_busy) : : "memory");
        if (MT_LIKELY(solo))
            return seq;
    }
#endif
    return atomic_fetch_add_explicit(&policy.proc->next_seq, 1, memory_order_relaxed);
}

/* The largest power of two of cells that fits in `bytes`; the header comes on top. (It
 * used to be taken out of `bytes`, which for the power-of-two sizes everyone asks for
 * halved the ring: a 4M ring held 2 MiB of records.) */
static uint32_t cells_for_size(size_t bytes)
{
    return (uint32_t)1u << mt_log2_floor(bytes / MT_WIRE_CELL);
}

/* Map a new ring into `w` (not yet counted by seq_ring_added); the memfd or -1. */
static int map_ring(struct mt_ring_writer *w, size_t bytes, int32_t tid, const char *name)
{
    if (bytes < MT_RING_RECORD_MAX)
        bytes = MT_RING_RECORD_MAX;
    uint32_t cells = cells_for_size(bytes);
    size_t map_bytes = MT_WIRE_RING_HEADER + (size_t)cells * MT_WIRE_CELL;
    int fd = mt_os_memfd("mtrace-ring", map_bytes);
    if (fd < 0)
        return -1;
    struct mt_wire_ring *ring = mt_os_map_shared(fd, map_bytes);
    if (!ring) {
        mt_os_close(fd);
        return -1;
    }
    ring->magic = MT_WIRE_MAGIC;
    ring->version = MT_WIRE_VERSION;
    ring->cells = cells;
    ring->tid = tid;
    if (name)
        memcpy(ring->name, name, sizeof ring->name - 1);
    w->ring = ring;
    w->cells = (uint8_t *)ring + MT_WIRE_RING_HEADER;
    w->mask = cells - 1;
    w->map_bytes = map_bytes;
    atomic_store_explicit(&w->next, 0, memory_order_relaxed);
    w->tail_seen = 0;
    return fd;
}

int mt_ring_create(struct mt_ring_writer *w, size_t bytes, int32_t tid, const char *name)
{
    int fd = map_ring(w, bytes, tid, name);
    if (fd < 0)
        return -1;
    w->depth = 0;
    w->grown = 0;
    seq_ring_added();
    return fd;
}

void mt_ring_unmap(struct mt_ring_writer *w)
{
    if (w->ring)
        mt_os_unmap(w->ring, w->map_bytes);
    w->ring = NULL;
}

void mt_ring_close(struct mt_ring_writer *w)
{
    if (w->ring)
        atomic_store_explicit(&w->ring->closed, 1, memory_order_release);
}

void mt_ring_forget_growth(const struct mt_ring_writer *w)
{
    if (w->grown)
        atomic_fetch_sub_explicit(&grown_total, w->grown, memory_order_relaxed);
}

static void publish(struct mt_ring_writer *w);

/* The outermost record found the ring full: move the thread to a ring twice as big, so it
 * goes on instead of waiting for the collector, as long as the policy's bounds allow
 * (ring.h). The collector falls behind in bursts (a checkpoint, symbolizing a new module,
 * a preemption) more often than for good, and a bigger ring absorbs a burst that a wait
 * would have made the program pay for; a thread that keeps outrunning it reaches the bound
 * and waits as before. Cost: a memfd, a mapping and a message, rarely; the old ring's
 * memory is the collector's to unmap once drained. */
static MT_NOINLINE bool grow(struct mt_ring_writer *w)
{
    size_t have = (size_t)(w->mask + 1) * MT_WIRE_CELL;
    size_t want = have * 2;
    if (!policy.adopt || want > policy.grow_max)
        return false;
    size_t extra = want - have;
    if (atomic_fetch_add_explicit(&grown_total, extra, memory_order_relaxed) + extra > policy.grow_budget) {
        atomic_fetch_sub_explicit(&grown_total, extra, memory_order_relaxed);
        return false;
    }
    /* From here until the writer points at the new ring, a signal handler's record would
     * see it half switched: the thread's signals wait. */
    mt_os_sigmask_t saved;
    mt_os_signals_block_all(&saved);
    struct mt_ring_writer fresh;
    memset(&fresh, 0, sizeof fresh);
    int fd = map_ring(&fresh, want, w->ring->tid, w->ring->name);
    bool adopted = fd >= 0 && policy.adopt(w, &fresh, fd);
    if (fd >= 0)
        mt_os_close(fd);
    if (adopted) {
        /* Handlers that recorded before the signals were blocked left complete records
         * reserved: publish them, then close the ring (the collector retires it once it
         * has consumed it all) and write to the new one from its first cell. */
        publish(w);
        atomic_store_explicit(&w->ring->closed, 1, memory_order_release);
        mt_os_unmap(w->ring, w->map_bytes);
        w->ring = fresh.ring;
        w->cells = fresh.cells;
        w->mask = fresh.mask;
        w->map_bytes = fresh.map_bytes;
        atomic_store_explicit(&w->next, 0, memory_order_relaxed);
        w->tail_seen = 0;
        w->grown += extra;
        if (policy.proc)
            atomic_fetch_add_explicit(&policy.proc->ring_grows, 1, memory_order_relaxed);
    } else {
        if (fresh.ring)
            mt_os_unmap(fresh.ring, fresh.map_bytes);
        atomic_fetch_sub_explicit(&grown_total, extra, memory_order_relaxed);
    }
    mt_os_signals_restore(&saved);
    return adopted;
}

static void count_drop(struct mt_ring_writer *w)
{
    atomic_fetch_add_explicit(&w->ring->dropped, 1, memory_order_relaxed);
    if (policy.proc)
        atomic_fetch_add_explicit(&policy.proc->dropped, 1, memory_order_relaxed);
}

/* The ring is full for `want` cells at `pos`: sleep until the collector consumed enough.
 * False when waiting is not an option (drop mode, collector gone, or a nested record that
 * could never fit).
 *
 * A nested record (a signal handler's call interrupting this thread's own record) waits
 * too: the collector can consume every cell this thread has published, which are all
 * before the interrupted record's reservation, and the interrupted record's missing
 * sequence number does not stop it from getting there (it stops at that number, after the
 * older records). So the wait ends unless the interrupted record's unpublished cells leave
 * no room at all, which is decided now: dropping (and counting) beats a deadlock. Before
 * this, a handler's call that found the ring full was dropped, which lost events whenever
 * the collector fell behind a thread that took signals. */
static bool wait_for_space(struct mt_ring_writer *w, uint64_t pos, uint32_t want, bool outermost)
{
    if (policy.drop || atomic_load_explicit(&collector_lost, memory_order_relaxed))
        return false;
    struct mt_wire_ring *ring = w->ring;
    if (!outermost && pos + want - atomic_load_explicit(&ring->head, memory_order_relaxed) > w->mask + 1)
        return false;
    /* An interrupted wait of this thread's outer record goes on after ours: leave the flag
     * as it found it, or the collector would stop waking it. */
    uint32_t was_waiting = atomic_load_explicit(&ring->waiting, memory_order_relaxed);
    /* The futex word is the low half of `tail` (x86-64 and aarch64 are little-endian). */
    _Atomic uint32_t *tail_word = (_Atomic uint32_t *)(void *)&ring->tail;
    uint64_t waited_since = 0;
    bool ok = true;
    for (;;) {
        atomic_store_explicit(&ring->waiting, 1, memory_order_seq_cst);
        uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_seq_cst);
        if (pos + want - tail <= w->mask + 1)
            break;
        if (!waited_since)
            waited_since = mt_os_monotonic_ns();
        mt_os_futex_wait_shared(tail_word, (uint32_t)tail, RING_WAIT_SLICE_NS);
        if (atomic_load_explicit(&ring->tail, memory_order_acquire) == tail && policy.collector_gone &&
            policy.collector_gone()) {
            atomic_store_explicit(&collector_lost, true, memory_order_relaxed);
            ok = false;
            break;
        }
    }
    atomic_store_explicit(&ring->waiting, was_waiting, memory_order_relaxed);
    /* Counted only when the thread really slept: "the program never waits on the
     * collector" is measured by this staying 0. */
    if (waited_since && policy.proc) {
        atomic_fetch_add_explicit(&policy.proc->ring_waits, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&policy.proc->ring_wait_ns, mt_os_monotonic_ns() - waited_since,
                                  memory_order_relaxed);
    }
    return ok;
}

/* Compare-and-swap that is atomic against this thread's own signal handlers only, which is
 * all `next` and `head` need (one writer thread; the collector only reads `head`). On
 * x86-64 a cmpxchg without the lock prefix: one instruction, so a signal lands before or
 * after it, and a store to `head` is still seen after the cells written before it (x86
 * stores are not reordered with older stores). Saves the locked instruction's ~20 cycles
 * twice per record. */
MT_INLINE bool cas_own(_Atomic uint64_t *word, uint64_t *expected, uint64_t desired)
{
#if defined(__x86_64__)
    uint64_t seen = *expected;
    bool swapped;
    atomic_signal_fence(memory_order_seq_cst);
    __asm__ volatile("cmpxchgq %3, %1"
                     : "+a"(seen), "+m"(*(uint64_t *)(void *)word), "=@ccz"(swapped)
                     : "r"(desired)
                     : "memory");
    atomic_signal_fence(memory_order_seq_cst);
    *expected = seen;
    return swapped;
#else
    return atomic_compare_exchange_weak_explicit(word, expected, desired, memory_order_release,
                                                 memory_order_relaxed);
#endif
}

/* Secure `want` cells; returns their first position, or false (dropped). */
static bool reserve(struct mt_ring_writer *w, uint32_t want, uint64_t *pos_out)
{
    bool outermost = w->depth == 1;
    uint64_t pos = atomic_load_explicit(&w->next, memory_order_relaxed);
    for (;;) {
        if (MT_UNLIKELY(atomic_load_explicit(&collector_lost, memory_order_relaxed)))
            return false;
        /* The collector's `tail` line is read only when the last value seen says the ring
         * may be full: tail only grows, so an old value errs on the side of "full". */
        if (MT_UNLIKELY(pos + want - w->tail_seen > w->mask + 1))
            w->tail_seen = atomic_load_explicit(&w->ring->tail, memory_order_acquire);
        if (MT_UNLIKELY(pos + want - w->tail_seen > w->mask + 1)) {
            if (!(outermost && grow(w)) && !wait_for_space(w, pos, want, outermost))
                return false;
            pos = atomic_load_explicit(&w->next, memory_order_relaxed);
            continue;
        }
        /* Only a signal handler of this very thread can move `next` meanwhile. */
        if (cas_own(&w->next, &pos, pos + want))
            break;
    }
    *pos_out = pos;
    return true;
}

/* Cells ahead of the one being written whose line is fetched for writing now: the ring is
 * megabytes, so the next cell's line was evicted (or last read by the collector on another
 * core); fetched a few records early, its miss overlaps this record's work instead of
 * stalling the copy. */
#define PREFETCH_CELLS_AHEAD 8

MT_INLINE void prefetch_ahead(struct mt_ring_writer *w, uint64_t pos)
{
    const uint8_t *ahead = w->cells + ((pos + PREFETCH_CELLS_AHEAD) & w->mask) * MT_WIRE_CELL;
#if defined(__x86_64__)
    /* prefetchw (a no-op on CPUs without it): fetch the line for ownership. */
    __asm__ volatile("prefetchw %0" : : "m"(*ahead));
#else
    __builtin_prefetch(ahead, 1, 3);
#endif
}

static void copy_cells(struct mt_ring_writer *w, uint64_t pos, const void *src, size_t bytes)
{
    prefetch_ahead(w, pos);
    if (MT_LIKELY(bytes == sizeof(struct mt_wire_event))) {
        /* The common record: one cell, a fixed-size copy the compiler inlines. */
        memcpy(w->cells + (pos & w->mask) * MT_WIRE_CELL, src, sizeof(struct mt_wire_event));
        return;
    }
    const uint8_t *p = src;
    while (bytes > 0) {
        size_t n = bytes < MT_WIRE_CELL ? bytes : MT_WIRE_CELL;
        memcpy(w->cells + (pos & w->mask) * MT_WIRE_CELL, p, n);
        p += n;
        bytes -= n;
        pos++;
    }
}

/* head = max(head, next): the only writers are this thread and its signal handlers. */
static MT_NOINLINE void publish(struct mt_ring_writer *w)
{
    uint64_t next = atomic_load_explicit(&w->next, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&w->ring->head, memory_order_relaxed);
    while (head < next && !cas_own(&w->ring->head, &head, next)) {
    }
}

/* The end of a record: the outermost one publishes everything reserved so far.
 *
 * Its common case is one plain store to `head`, made while the record still counts in
 * `depth`: a signal handler recording meanwhile is nested and publishes nothing, and every
 * earlier publication was of a position at or before this record's, so the store cannot
 * move `head` back (no compare-and-swap, and no load of the line the collector polls).
 * A handler that recorded between the load of `next` and `depth` dropping to 0 left its
 * cells unpublished: `next` moved, and publish() (to the maximum: from depth 0 on, a
 * handler publishes itself) takes them. */
MT_INLINE void finish(struct mt_ring_writer *w)
{
    atomic_signal_fence(memory_order_seq_cst);
    if (MT_UNLIKELY(w->depth != 1)) {
        w->depth--;
        return;
    }
    uint64_t next = atomic_load_explicit(&w->next, memory_order_relaxed);
    atomic_store_explicit(&w->ring->head, next, memory_order_release);
    atomic_signal_fence(memory_order_seq_cst);
    w->depth = 0;
    atomic_signal_fence(memory_order_seq_cst);
    if (MT_UNLIKELY(atomic_load_explicit(&w->next, memory_order_relaxed) != next))
        publish(w);
}

bool mt_ring_begin(struct mt_ring_writer *w, struct mt_wire_rec *rec, size_t bytes, uint64_t *pos)
{
    uint32_t want = mt_ring_cells_for(bytes);
    rec->cells = (uint8_t)want;
    w->depth++;
    atomic_signal_fence(memory_order_seq_cst);
    if (MT_UNLIKELY(!reserve(w, want, pos))) {
        count_drop(w);
        finish(w);
        return false;
    }
    if (rec->kind != MT_REC_PAD)
    {
        uint64_t seq = take_seq();
        w->last_seq = seq;
        rec->seq = (uint32_t)seq;
    }
    return true;
}

/* The rest of mt_ring_put_cell once cell `pos` is reserved. */
MT_INLINE void write_cell(struct mt_ring_writer *w, uint64_t pos, uint64_t head, uint64_t ts, uint64_t body0,
                          uint64_t body1)
{
    uint64_t seq = take_seq();
    w->last_seq = seq;
    prefetch_ahead(w, pos);
    uint64_t *cell = (uint64_t *)(void *)(w->cells + (pos & w->mask) * MT_WIRE_CELL);
    cell[0] = head | mt_wire_rec_word(0, 1, 0, 0, seq);
    cell[1] = ts;
    cell[2] = body0;
    cell[3] = body1;
    finish(w);
}

/* mt_ring_put_cell when the first try found no room (or a signal handler's record moved
 * `next`): out of line, so that the common path keeps few registers. */
static MT_NOINLINE bool put_cell_slow(struct mt_ring_writer *w, uint64_t head, uint64_t ts, uint64_t body0,
                                      uint64_t body1)
{
    uint64_t pos;
    if (!reserve(w, 1, &pos)) {
        count_drop(w);
        finish(w);
        return false;
    }
    write_cell(w, pos, head, ts, body0, body1);
    return true;
}

bool mt_ring_put_cell(struct mt_ring_writer *w, uint64_t head, uint64_t ts, uint64_t body0, uint64_t body1)
{
    w->depth++;
    atomic_signal_fence(memory_order_seq_cst);
    /* reserve()'s first round inline: room by the last `tail` seen, and no signal handler
     * of ours moved `next` meanwhile. */
    uint64_t pos = atomic_load_explicit(&w->next, memory_order_relaxed);
    if (MT_UNLIKELY(pos + 1 - w->tail_seen > w->mask + 1 ||
                    atomic_load_explicit(&collector_lost, memory_order_relaxed) || !cas_own(&w->next, &pos, pos + 1)))
        return put_cell_slow(w, head, ts, body0, body1);
    write_cell(w, pos, head, ts, body0, body1);
    return true;
}

void mt_ring_end(struct mt_ring_writer *w, uint64_t pos, const struct mt_wire_rec *rec, size_t bytes)
{
    copy_cells(w, pos, rec, bytes);
    finish(w);
}

bool mt_ring_put(struct mt_ring_writer *w, struct mt_wire_rec *rec, size_t bytes)
{
    uint64_t pos;
    if (!mt_ring_begin(w, rec, bytes, &pos))
        return false;
    mt_ring_end(w, pos, rec, bytes);
    return true;
}
