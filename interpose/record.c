/* The recorder (record.h), libmtrace.so only: the glue between the hooked calls, the
 * allocator's statistics and trace/ (rings, stack store, session).
 *
 * Owns: the recursion guard, event records (timestamp, stack, one ring cell), realloc as
 * one event whose sequence number is taken before the old block is released, snapshots
 * (by time and by allocated volume, one thread at a time), trace control (pause, resume,
 * mark), heap error records and the collector's answer, and the process's end (exit code,
 * leak scan, exit record, GOODBYE; _exit and _Exit).
 *
 * Invariants:
 * - The common path of a recorded call takes no lock and makes no system call: a TSC
 *   timestamp (trace/clock.h), the stack id from the validated unwind cache (or
 *   unw_backtrace and the stack store), one ring cell.
 * - A call is unrecorded only while its thread is inside a non-nestable recorder section
 *   (thread_state.busy: making its ring, the exit scan) or nested implausibly deep; those
 *   are counted in the process area's `unrecorded`. */
#ifdef MT_TRACING
#include "record.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../allocator/alloc.h"
#include "../allocator/alloc_init.h"
#include "../allocator/size_class.h"
#include "../allocator/small.h"
#include "../allocator/stats.h"
#include "../common/log.h"
#include "../common/options.h"
#include "../common/platform.h"
#include "../include/mtrace.h"
#include "../trace/clock.h"
#include "../trace/session.h"
#include "../trace/unwind.h"
#include "../trace/unwind_cache.h"
#include "../trace/wire.h"
#include "error_report.h"
#include "hooks.h"
#include "leak_scan.h"

/* Allocated bytes a thread accumulates before adding them to the process total: keeps the
 * shared counter off the common path (one contended atomic per 64 KiB, not per call). */
#define BYTES_FLUSH_CHUNK (64u * 1024u)
#define NS_PER_MS 1000000ull

/* Recording is on: the session was accepted, and not finished. */
/* record.h: recording is on (the session was accepted, and not finished); paused. */
_Atomic bool mt_record_recording;
_Atomic bool mt_record_paused;

static struct {
    uint64_t period_ns;      /* MTRACE_SNAPSHOT_MS (0: off) */
    uint64_t volume_bytes;   /* MTRACE_SNAPSHOT_BYTES (0: off) */
    uint64_t flush_chunk;
    _Atomic uint64_t next_ts;    /* next snapshot by time (a timestamp: trace/clock.h) */
    _Atomic uint64_t bytes;      /* allocated since the last snapshot (flushed chunks) */
    atomic_flag taking;          /* one snapshot at a time */
} snap = {.taking = ATOMIC_FLAG_INIT};

static struct {
    int code;
    bool known;
    bool done; /* the exit records are written */
    bool destructors_ran;
} ending;

/* ---- the guard ------------------------------------------------------------------------------ */

bool mt_record_refuse(void)
{
    struct mt_wire_proc *proc = mt_session_proc();
    if (proc)
        atomic_fetch_add_explicit(&proc->unrecorded, 1, memory_order_relaxed);
    return false;
}

/* ---- records ------------------------------------------------------------------------------- */

static MT_NOINLINE uint32_t capture_stack(struct mt_thread_state *t);

/* A miss of the unwind cache for `key`: a full unwind, which may fill the key's entry. */
static MT_NOINLINE uint32_t capture_cached_miss(struct mt_thread_state *t, const struct mt_unwind_key *key)
{
    struct mt_stack_store *store = mt_session_store();
    uint64_t frames[MT_WIRE_DEPTH_MAX];
    struct mt_unwind_fill fill;
    uint32_t count = mt_unwind_capture_cached(t->unwind_cache, key, frames, mt_session_depth(), &fill);
    uint32_t id = mt_stack_store_intern(store, &t->cache, frames, count);
    mt_unwind_cache_commit(&fill, id, store->generation);
    return id;
}

/* An event's stack from the call site of a hooked call (every frame above is ours, built
 * with frame pointers; `frame` is the exported function's frame, or NULL): the thread's
 * validated unwind cache first (trace/unwind.h). */
MT_INLINE uint32_t capture_event_stack(struct mt_thread_state *t, const void *frame)
{
    if (t->calls != 1 || !t->unwind_cache)
        return capture_stack(t);
    struct mt_unwind_key key;
    uint32_t id = mt_unwind_cache_lookup(t->unwind_cache, frame, mt_session_depth(), mt_session_store()->generation,
                                         &key);
    if (MT_LIKELY(id))
        return id;
    if (!key.ip)
        return capture_stack(t);
    return capture_cached_miss(t, &key);
}

static MT_NOINLINE uint32_t capture_stack(struct mt_thread_state *t)
{
    uint64_t frames[MT_WIRE_DEPTH_MAX];
    uint32_t depth = mt_unwind_capture(frames, mt_session_depth());
    /* The per-thread cache only for the outermost call: see stack_store.h. */
    return mt_stack_store_intern(mt_session_store(), t->calls == 1 ? &t->cache : NULL, frames, depth);
}

static void fill_rec(struct mt_wire_rec *rec, enum mt_rec_kind kind, uint64_t ts)
{
    rec->kind = (uint8_t)kind;
    rec->ts = ts;
}

/* Write a non-event record on the calling thread's ring. */
static bool put_record(struct mt_wire_rec *rec, size_t bytes)
{
    struct mt_thread_state *t = mt_session_thread();
    if (!t)
        return false;
    return mt_ring_put(&t->writer, rec, bytes);
}

MT_INLINE void maybe_snapshot(struct mt_thread_state *t, uint64_t ts, size_t allocated);

MT_INLINE void put_event(enum mt_op op, uint64_t ptr, uint64_t size, uint64_t aux, const void *frame)
{
    struct mt_thread_state *t = mt_session_thread();
    if (!t)
        return;
    uint32_t stack_id = capture_event_stack(t, frame);
    uint64_t ts = mt_clock_event(&t->clock);
    struct mt_wire_event_fields f = {stack_id, ptr, size, aux};
    uint64_t body[2];
    if (MT_LIKELY(mt_wire_event_words(&f, body))) {
        /* Built in registers: no record assembled in memory and copied (ring.h). */
        mt_ring_put_cell(&t->writer, mt_wire_rec_word(MT_REC_EVENT, 0, (uint8_t)op, 0, 0), ts, body[0], body[1]);
    } else {
        struct mt_wire_event_wide ev;
        ev.rec.kind = MT_REC_EVENT;
        ev.rec.op = (uint8_t)op;
        ev.rec.ts = ts;
        size_t bytes = mt_wire_event_encode(&ev.rec, &f);
        mt_ring_put(&t->writer, &ev.rec, bytes);
    }
    maybe_snapshot(t, ts, op == MT_OP_FREE || op == MT_OP_REGION_POP ? 0 : size);
}

void mt_record_alloc(enum mt_op op, const void *ptr, size_t size, size_t align, const void *frame)
{
    uint64_t aux = align;
    if (op == MT_OP_VALLOC || op == MT_OP_PVALLOC)
        aux = mt_os_page_size();
    put_event(op, (uint64_t)(uintptr_t)ptr, size, aux, frame);
}

void mt_record_free(const void *ptr, const void *frame)
{
    put_event(MT_OP_FREE, (uint64_t)(uintptr_t)ptr, 0, 0, frame);
}

void mt_record_region(enum mt_op op, const void *region, const void *ptr, size_t size, const void *frame)
{
    put_event(op, (uint64_t)(uintptr_t)ptr, size, (uint64_t)(uintptr_t)region, frame);
}

/* A realloc in flight on this thread: begun (sequence number taken, the record open) and
 * finished once the result is known. A signal handler's realloc nests inside; its own
 * state lives in its own frame of this small stack. */
#define REALLOC_NEST_MAX 8
static MT_TLS struct {
    struct mt_wire_event_wide ev;
    uint64_t pos;
    bool open;
} realloc_open[REALLOC_NEST_MAX];
static MT_TLS uint32_t realloc_depth;

void mt_record_realloc_begin(enum mt_op op, const void *old_ptr, size_t size, const void *frame)
{
    uint32_t level = realloc_depth++;
    if (level >= REALLOC_NEST_MAX)
        return;
    realloc_open[level].open = false;
    struct mt_thread_state *t = mt_session_thread();
    if (!t)
        return;
    /* Always the two-cell form: its size must not change between begin and end, and the
     * old pointer is an aux value anyway (realloc(NULL, n) aside). */
    struct mt_wire_event_wide *ev = &realloc_open[level].ev;
    memset(ev, 0, sizeof *ev);
    fill_rec(&ev->rec, MT_REC_EVENT, mt_clock_event(&t->clock));
    ev->rec.op = (uint8_t)op;
    ev->rec.sub = MT_EVENT_WIDE;
    ev->stack_id = capture_event_stack(t, frame);
    ev->size = size;
    ev->aux = (uint64_t)(uintptr_t)old_ptr;
    realloc_open[level].open = mt_ring_begin(&t->writer, &ev->rec, sizeof *ev, &realloc_open[level].pos);
}

void mt_record_realloc_end(enum mt_op op, const void *old_ptr, const void *new_ptr, size_t size)
{
    (void)op;
    uint32_t level = --realloc_depth;
    if (level >= REALLOC_NEST_MAX || !realloc_open[level].open)
        return;
    realloc_open[level].open = false;
    struct mt_thread_state *t = mt_session_thread_raw();
    struct mt_wire_event_wide *ev = &realloc_open[level].ev;
    if (new_ptr) {
        ev->ptr = (uint64_t)(uintptr_t)new_ptr;
    } else if (size == 0) {
        /* realloc(p, 0) frees p and returns NULL (glibc's behaviour, and ours). */
        ev->rec.op = MT_OP_FREE;
        ev->ptr = (uint64_t)(uintptr_t)old_ptr;
        ev->aux = 0;
    } else {
        /* Failed: the old block stays live; the number taken is kept by a skip record. */
        ev->rec.kind = MT_REC_SKIP;
    }
    mt_ring_end(&t->writer, realloc_open[level].pos, &ev->rec, sizeof *ev);
    if (new_ptr)
        maybe_snapshot(t, ev->rec.ts, size);
}

/* ---- snapshots ------------------------------------------------------------------------------ */

/* The record: fixed part, small classes, then medium and large blocks by log2 size. */
struct snapshot_record {
    struct mt_wire_snapshot head;
    struct mt_wire_snap_class classes[MT_SMALL_CLASSES];
    uint64_t buckets[MT_WIRE_SNAP_BUCKETS];
};

static void take_snapshot(uint64_t ts)
{
    struct mt_thread_state *t = mt_session_thread();
    if (!t)
        return;
    /* Not a busy section: a signal handler's call during it records its event as usual
     * (it cannot start a snapshot of its own: snap.taking, and only outermost calls try). */
    static struct snapshot_record rec; /* one snapshot at a time (snap.taking) */
    memset(&rec, 0, sizeof rec);
    struct mt_zone_stats stats;
    mt_alloc_stats(&stats);
    rec.head.mapped = stats.mapped;
    rec.head.committed = stats.committed;
    rec.head.in_use = stats.in_use;
    rec.head.free_bytes = stats.free_bytes;
    rec.head.largest_free = stats.largest_free;
    rec.head.live_blocks = stats.live_blocks;
    rec.head.class_count = MT_SMALL_CLASSES;
    static uint64_t live[MT_SMALL_CLASSES], allocs[MT_SMALL_CLASSES], capacity[MT_SMALL_CLASSES];
    mt_small_histogram(live, allocs, capacity);
    for (unsigned c = 0; c < MT_SMALL_CLASSES; c++) {
        rec.classes[c].block_size = mt_class_size[c];
        rec.classes[c].live = (uint32_t)live[c];
        rec.classes[c].capacity = (uint32_t)capacity[c];
    }
    static uint64_t medium_live[MT_LOG2_BUCKETS], large_live[MT_LOG2_BUCKETS], ignored[MT_LOG2_BUCKETS];
    mt_medium_histogram(medium_live, ignored);
    mt_large_histogram(large_live, ignored);
    for (unsigned b = 0; b < MT_WIRE_SNAP_BUCKETS && b < MT_LOG2_BUCKETS; b++)
        rec.buckets[b] = medium_live[b] + large_live[b];
    fill_rec(&rec.head.rec, MT_REC_SNAPSHOT, ts);
    mt_ring_put(&t->writer, &rec.head.rec, sizeof rec);
}

static void snapshot_now(uint64_t ts)
{
    if (atomic_flag_test_and_set_explicit(&snap.taking, memory_order_acquire))
        return; /* another thread is taking one */
    atomic_store_explicit(&snap.bytes, 0, memory_order_relaxed);
    if (snap.period_ns)
        atomic_store_explicit(&snap.next_ts, mt_clock_after(ts, snap.period_ns), memory_order_relaxed);
    take_snapshot(ts);
    atomic_flag_clear_explicit(&snap.taking, memory_order_release);
}

static MT_NOINLINE void snapshot_check(struct mt_thread_state *t, uint64_t ts)
{
    bool due = false;
    if (t->bytes_since_check >= snap.flush_chunk) {
        uint64_t total = atomic_fetch_add_explicit(&snap.bytes, t->bytes_since_check, memory_order_relaxed) +
                         t->bytes_since_check;
        t->bytes_since_check = 0;
        due = total >= snap.volume_bytes;
    }
    if (ts >= atomic_load_explicit(&snap.next_ts, memory_order_relaxed))
        due = true;
    if (due && t->calls == 1 && t->writer.depth == 0)
        snapshot_now(ts);
}

/* Two compares on the common path: flush_chunk and next_ts are UINT64_MAX when their kind
 * of snapshot is off. */
MT_INLINE void maybe_snapshot(struct mt_thread_state *t, uint64_t ts, size_t allocated)
{
    t->bytes_since_check += allocated;
    if (MT_UNLIKELY(t->bytes_since_check >= snap.flush_chunk) ||
        MT_UNLIKELY(ts >= atomic_load_explicit(&snap.next_ts, memory_order_relaxed)))
        snapshot_check(t, ts);
}

/* ---- trace control (include/mtrace.h) ---------------------------------------------------------- */

static void put_plain(enum mt_rec_kind kind)
{
    struct mt_wire_rec rec;
    memset(&rec, 0, sizeof rec);
    fill_rec(&rec, kind, mt_clock_now());
    put_record(&rec, sizeof rec);
}

MT_API void mt_trace_pause(void)
{
    if (!atomic_load(&mt_record_recording) || atomic_exchange(&mt_record_paused, true))
        return;
    put_plain(MT_REC_PAUSE);
}

MT_API void mt_trace_resume(void)
{
    if (!atomic_load(&mt_record_recording) || !atomic_load(&mt_record_paused))
        return;
    put_plain(MT_REC_RESUME);
    atomic_store(&mt_record_paused, false);
}

MT_API void mt_trace_mark(const char *label)
{
    if (!atomic_load(&mt_record_recording) || !label)
        return;
    struct {
        struct mt_wire_text head;
        char text[MT_WIRE_TEXT_MAX];
    } rec;
    memset(&rec, 0, sizeof rec.head);
    size_t len = strnlen(label, MT_WIRE_TEXT_MAX);
    memcpy(rec.text, label, len);
    rec.head.len = (uint32_t)len;
    struct mt_thread_state *t = mt_session_thread_raw();
    fill_rec(&rec.head.rec, MT_REC_MARK, mt_clock_now());
    if (!t->busy) {
        t->calls++;
        rec.head.stack_id = capture_stack(t);
        t->calls--;
    }
    put_record(&rec.head.rec, sizeof rec.head + len);
}

MT_API int mt_trace_active(void)
{
    return atomic_load(&mt_record_recording) && !atomic_load(&mt_record_paused);
}

/* ---- heap errors ---------------------------------------------------------------------------- */

/* The collector's answer can be long; it is printed as received (its own lines). */
#define ERROR_ANSWER_MAX 4096

/* A heap error inside realloc (of a freed or foreign block) is detected while its record is
 * open: close it now as a skip (such a realloc fails and changes nothing), so that the
 * error record is published and the collector can answer before the process aborts. */
static void close_open_reallocs(struct mt_thread_state *t)
{
    uint32_t levels = realloc_depth < REALLOC_NEST_MAX ? realloc_depth : REALLOC_NEST_MAX;
    for (uint32_t level = levels; level-- > 0;) {
        if (!realloc_open[level].open)
            continue;
        realloc_open[level].open = false;
        realloc_open[level].ev.rec.kind = MT_REC_SKIP;
        mt_ring_end(&t->writer, realloc_open[level].pos, &realloc_open[level].ev.rec,
                    sizeof realloc_open[level].ev);
    }
}

static void error_extra(const struct mt_heap_error *error)
{
    if (!atomic_load(&mt_record_recording))
        return;
    struct mt_thread_state *t = mt_session_thread();
    if (!t)
        return;
    close_open_reallocs(t);
    struct {
        struct mt_wire_error head;
        char detail[MT_WIRE_TEXT_MAX];
    } rec;
    memset(&rec, 0, sizeof rec.head);
    size_t len = error->detail ? strnlen(error->detail, MT_WIRE_TEXT_MAX) : 0;
    memcpy(rec.detail, error->detail, len);
    rec.head.len = (uint32_t)len;
    rec.head.ptr = (uint64_t)(uintptr_t)error->ptr;
    rec.head.size = error->size;
    t->calls++;
    rec.head.stack_id = capture_stack(t);
    fill_rec(&rec.head.rec, MT_REC_ERROR, mt_clock_now());
    t->calls--;
    rec.head.rec.op = (uint8_t)error->kind;
    rec.head.rec.sub = (uint8_t)error->api;
    if (!mt_ring_put(&t->writer, &rec.head.rec, sizeof rec.head + len))
        return;
    static char answer[ERROR_ANSWER_MAX];
    uint32_t n = mt_session_block_query(rec.head.ptr, t->writer.last_seq, answer, sizeof answer);
    if (n) {
        mt_os_write_all(MT_LOG_FD, answer, n);
        if (answer[n - 1] != '\n')
            mt_os_write_all(MT_LOG_FD, "\n", 1);
    }
}

/* ---- the process's end ---------------------------------------------------------------------- */

static void emit_leaked(const uint64_t *ptrs, uint32_t count)
{
    struct {
        struct mt_wire_leaked head;
        uint64_t ptr[MT_WIRE_LEAKED_PER_REC];
    } rec;
    memset(&rec.head, 0, sizeof rec.head);
    fill_rec(&rec.head.rec, MT_REC_LEAKED, mt_clock_now());
    rec.head.count = count;
    memcpy(rec.ptr, ptrs, count * sizeof *ptrs);
    put_record(&rec.head.rec, sizeof rec.head + count * sizeof *ptrs);
}

/* `entry_frame`: the frame of the exit hook that called us (see mt_leak_scan_run). */
static void write_exit(enum mt_exit_how how, int code, const void *entry_frame)
{
    if (ending.done || !atomic_load(&mt_record_recording))
        return;
    ending.done = true;
    struct mt_thread_state *t = mt_session_thread();
    if (!t)
        return;
    t->busy++; /* what runs from here on (scan, snapshot) cannot nest */
    take_snapshot(mt_clock_now());
    if (how == MT_EXIT_NORMAL && mt_option_bool(MT_OPT_LEAK_SCAN)) {
        struct mt_leak_result result;
        if (mt_leak_scan_run(emit_leaked, &result, entry_frame)) {
            struct mt_wire_scan_done done;
            memset(&done, 0, sizeof done);
            fill_rec(&done.rec, MT_REC_SCAN_DONE, mt_clock_now());
            done.live_blocks = result.live_blocks;
            done.leaked_blocks = result.leaked_blocks;
            put_record(&done.rec, sizeof done);
        }
    }
    struct mt_wire_exit rec;
    memset(&rec, 0, sizeof rec);
    fill_rec(&rec.rec, MT_REC_EXIT, mt_clock_now());
    rec.rec.sub = (uint8_t)how;
    rec.code = code;
    put_record(&rec.rec, sizeof rec);
    atomic_store(&mt_record_recording, false);
    t->busy--;
}

/* exit(): which of our two exit hooks runs last does the work. The on_exit handler is
 * registered by our constructor, which ld.so runs before __libc_start_main registers
 * _dl_fini, so in practice it runs after every destructor (ours included) and knows the
 * status; should the order ever be the other way round, the destructor does it. */
static void on_exit_code(int status, void *arg)
{
    (void)arg;
    ending.code = status;
    ending.known = true;
    if (ending.destructors_ran) {
        write_exit(MT_EXIT_NORMAL, status, __builtin_frame_address(0));
        mt_session_finish();
    }
}

MT_API void _exit(int status)
{
    if (!mt_session_is_own_process())
        mt_os_exit_now(status); /* a vfork child: the rings and connection are its parent's */
    write_exit(MT_EXIT_IMMEDIATE, status, __builtin_frame_address(0));
    mt_session_finish();
    mt_os_exit_now(status);
}

MT_API void _Exit(int status)
{
    _exit(status);
}

static void fork_child_mode(void)
{
    bool traced = mt_session_traced();
    ending.done = false;
    ending.known = false;
    ending.destructors_ran = false;
    atomic_store(&mt_record_paused, false);
    atomic_store(&mt_record_recording, traced);
    if (traced) {
        mt_session_thread(); /* the forking thread's ring, as at start-up */
        atomic_fetch_or(&mt_alloc_mode, MT_MODE_TRACE);
    } else
        atomic_fetch_and(&mt_alloc_mode, ~(uint32_t)MT_MODE_TRACE);
    atomic_flag_clear(&snap.taking);
    atomic_store(&snap.bytes, 0);
}

_Static_assert(MT_SMALL_CLASSES <= MT_WIRE_SMALL_CLASSES_MAX, "the process area has no room for every size class");

__attribute__((constructor)) static void record_init(void)
{
    if (!mt_alloc_ensure_init())
        return;
    mt_error_report_install();
    static uint32_t classes[MT_SMALL_CLASSES];
    for (unsigned c = 0; c < MT_SMALL_CLASSES; c++)
        classes[c] = mt_class_size[c];
    struct mt_session_config config = {(uint32_t)mt_os_page_size(), MT_SMALL_CLASSES, classes};
    bool traced = mt_session_start(&config);
    if (!mt_session_connected())
        return;
    snap.period_ns = (uint64_t)mt_option_int(MT_OPT_SNAPSHOT_MS) * NS_PER_MS;
    snap.volume_bytes = (uint64_t)mt_option_int(MT_OPT_SNAPSHOT_BYTES);
    snap.flush_chunk = snap.volume_bytes < BYTES_FLUSH_CHUNK ? snap.volume_bytes : BYTES_FLUSH_CHUNK;
    if (snap.flush_chunk == 0)
        snap.flush_chunk = UINT64_MAX; /* off */
    atomic_store(&snap.next_ts, snap.period_ns ? mt_clock_after(mt_clock_now(), snap.period_ns) : UINT64_MAX);
    mt_error_report_set_extra(error_extra);
    on_exit(on_exit_code, NULL);
    /* Registered after the session's handlers: in a child it runs after the HELLO. */
    pthread_atfork(NULL, NULL, fork_child_mode);
    if (traced) {
        /* The main thread's ring now, before the program can have a signal handler whose
         * malloc would find the ring half made (and go unrecorded). */
        mt_session_thread();
        atomic_store(&mt_record_recording, true);
        atomic_fetch_or(&mt_alloc_mode, MT_MODE_TRACE);
    }
}

__attribute__((destructor)) static void record_fini(void)
{
    ending.destructors_ran = true;
    if (ending.known) {
        write_exit(MT_EXIT_NORMAL, ending.code, __builtin_frame_address(0));
        mt_session_finish();
    }
}
#endif
