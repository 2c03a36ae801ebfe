/* Per-process state: the process table, threads, and the turning of each record of a
 * process's stream into the trace's aggregates (docs/trace-format.md, "Aggregates").
 *
 * Invariants:
 * - Records arrive here in seq order (drain.c); events are numbered 0, 1, ... per process
 *   in that order (event_chunks' first_seq, snapshots' and live_at_exit's seq).
 * - Event times are made non-decreasing within a process: threads stamp their records
 *   after taking the seq, so a preempted thread's stamp can be older than its
 *   predecessor's; the encoding stores deltas and the reports expect sorted times.
 * - A stack's statistics live in proc->stats; proc->local_stat maps the process's own
 *   stack ids to them, resolving (and interning) a stack the first time it is used.
 * - proc_ids are given in order of accepted HELLOs; an exec'd image is a new process whose
 *   parent is the image it replaced, a fork child's parent is the live image of its ppid.
 * - at_peak_bytes is computed lazily: a stack's live bytes at the latest process peak are
 *   saved only when the stack next changes (note_change), so a new peak costs O(1) instead
 *   of a walk over every stack. */
#include "collector.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../allocator/error.h"
#include "../../common/options.h"
#include "../clock.h"
#include "host.h"
#include "ring.h"

/* Events per event_chunks row: large enough that SQLite's per-row overhead vanishes
 * (~10 bytes per event, ~40 KiB per row), small enough that a reader seeking to an event
 * decodes little. */
#define CHUNK_EVENTS 4096
/* Initial slots of the per-process size table. */
#define SIZES_INITIAL_SLOTS 256
/* A block's frames shown in a BLOCK_INFO answer: the first few locate the call. */
#define INFO_FRAMES 6

static struct mt_proc **procs;
static size_t proc_count, proc_cap;
static uint64_t trace_origin_ns;

void mt_trace_set_origin(uint64_t mono_ns)
{
    trace_origin_ns = mono_ns;
}

uint64_t mt_trace_origin(void)
{
    return trace_origin_ns;
}

uint64_t mt_trace_ns(uint64_t mono_ns)
{
    return mono_ns > trace_origin_ns ? mono_ns - trace_origin_ns : 0;
}

struct mt_proc *mt_proc_create(void)
{
    MT_VEC_RESERVE(procs, proc_cap, proc_count + 1);
    struct mt_proc *p = mt_xcalloc(1, sizeof *p);
    p->proc_id = (uint32_t)proc_count + 1;
    procs[proc_count++] = p;
    mt_live_init(&p->live);
    p->sizes_mask = SIZES_INITIAL_SLOTS - 1;
    p->sizes = mt_xcalloc(SIZES_INITIAL_SLOTS, sizeof *p->sizes);
    p->size_direct = mt_xcalloc(MT_SIZE_DIRECT, sizeof *p->size_direct);
    return p;
}

static void json_argv(struct mt_buf *b, const char *argv, size_t len)
{
    mt_buf_append(b, "[", 1);
    size_t i = 0;
    bool first = true;
    while (i < len) {
        size_t n = strnlen(argv + i, len - i);
        if (!first)
            mt_buf_append(b, ",", 1);
        mt_buf_json_string(b, argv + i, n);
        first = false;
        i += n + 1;
    }
    mt_buf_append(b, "]", 1);
}

struct mt_proc *mt_proc_from_hello(const struct mt_msg_hello *hello, size_t len, struct mt_wire_proc *area,
                                   uint32_t parent_proc_id)
{
    struct mt_proc *p = mt_proc_create();
    p->pid = hello->pid;
    p->ppid = hello->ppid;
    char exe[MT_WIRE_PATH_MAX];
    memcpy(exe, hello->exe, sizeof exe);
    exe[sizeof exe - 1] = '\0';
    p->exe = mt_xstrdup(exe);
    /* The argument block is what the message holds, whatever argv_len claims. */
    size_t argv_len = hello->argv_len;
    size_t room = len - offsetof(struct mt_msg_hello, argv);
    argv_len = MT_MIN(argv_len, MT_MIN(room, (size_t)MT_WIRE_ARGV_MAX));
    struct mt_buf argv = {0};
    json_argv(&argv, hello->argv, argv_len);
    p->argv_json = argv.data;
    p->start_ns = mt_trace_ns(hello->start_mono_ns);
    p->end_reason = "lost"; /* until an exit record, an exec or the wait status says more */
    p->state = MT_PROC_LIVE;
    p->area = area;
    p->area_size = hello->proc_area_size;
    p->parent_proc_id = parent_proc_id;
    p->page_size = area->page_size;
    p->ts_ticks = area->ts_ticks != 0;
    p->small_class_count = MT_MIN(area->small_class_count, (uint32_t)MT_ARRAY_LEN(p->small_classes));
    memcpy(p->small_classes, area->small_classes, sizeof p->small_classes);
    /* Now, while the process waits for our reply: it cannot have exited yet. */
    mt_sym_read_maps(&p->maps, p->pid);
    return p;
}

struct mt_proc *mt_proc_by_id(uint32_t proc_id)
{
    return proc_id >= 1 && proc_id <= proc_count ? procs[proc_id - 1] : NULL;
}

size_t mt_proc_count(void)
{
    return proc_count;
}

void mt_proc_add_ring(struct mt_proc *proc, struct mt_wire_ring *hdr, size_t map_bytes)
{
    MT_VEC_RESERVE(proc->rings, proc->ring_cap, proc->ring_count + 1);
    struct mt_ring_view *r = &proc->rings[proc->ring_count++];
    memset(r, 0, sizeof *r);
    r->hdr = hdr;
    r->cells = (const unsigned char *)hdr + MT_WIRE_RING_HEADER;
    r->map_bytes = map_bytes;
    r->mask = (uint64_t)hdr->cells - 1;
    r->tail = atomic_load_explicit(&hdr->tail, memory_order_acquire);
    r->head = r->tail;
    r->published_tail = r->tail;
    r->woken_tail = r->tail;
    r->tid = hdr->tid;
    r->thread = -1;
    memcpy(r->name, hdr->name, sizeof r->name);
    r->name[sizeof r->name - 1] = '\0';
}

void mt_proc_retire_ring(struct mt_proc *proc, size_t index)
{
    struct mt_ring_view *r = &proc->rings[index];
    mt_host_unmap(r->hdr, r->map_bytes);
    proc->rings[index] = proc->rings[--proc->ring_count];
}

/* ---- threads and stacks ----------------------------------------------------------------- */

uint32_t mt_proc_ring_thread(struct mt_proc *proc, struct mt_ring_view *ring)
{
    if (ring->thread >= 0)
        return (uint32_t)ring->thread;
    /* A thread whose ring was closed and that recorded again got a new ring: same tid,
     * same thread_idx. */
    for (size_t i = 0; i < proc->thread_count; i++)
        if (proc->threads[i].tid == ring->tid) {
            ring->thread = (int)i;
            return (uint32_t)i;
        }
    MT_VEC_RESERVE(proc->threads, proc->thread_cap, proc->thread_count + 1);
    struct mt_thread *t = &proc->threads[proc->thread_count];
    memset(t, 0, sizeof *t);
    t->tid = ring->tid;
    memcpy(t->name, ring->name, sizeof t->name);
    ring->thread = (int)proc->thread_count++;
    return (uint32_t)ring->thread;
}

static uint32_t new_stat(struct mt_proc *proc, uint32_t gstack)
{
    MT_VEC_RESERVE(proc->stats, proc->stat_cap, proc->stat_count + 1);
    struct mt_stack_stat *st = &proc->stats[proc->stat_count];
    memset(st, 0, sizeof *st);
    st->gstack = gstack;
    st->min_size = UINT64_MAX;
    return (uint32_t)proc->stat_count++;
}

/* stat_for's first use of a stack: resolve it. */
static MT_NOINLINE uint32_t stat_resolve(struct mt_proc *proc, uint32_t local_id)
{
    if (local_id >= MT_WIRE_STACKS_MAX)
        local_id = 0;
    MT_VEC_RESERVE(proc->local_stat, proc->local_stat_cap, (size_t)local_id + 1);
    uint32_t gid = mt_stacks_resolve(proc, local_id);
    uint32_t idx = new_stat(proc, gid);
    proc->local_stat[local_id] = idx + 1;
    return idx;
}

/* The statistics index of a process-local stack id; resolves the stack on first use. */
MT_INLINE uint32_t stat_for(struct mt_proc *proc, uint32_t local_id)
{
    if (MT_LIKELY(local_id < proc->local_stat_cap && proc->local_stat[local_id]))
        return proc->local_stat[local_id] - 1;
    return stat_resolve(proc, local_id);
}

/* ---- events ------------------------------------------------------------------------------ */

static inline unsigned char *put_varint(unsigned char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

static inline uint64_t zigzag(int64_t n)
{
    return ((uint64_t)n << 1) ^ (uint64_t)(n >> 63);
}

void mt_proc_flush_chunk(struct mt_proc *proc)
{
    if (!proc->chunk_count)
        return;
    mt_sink_chunk(proc);
    proc->chunk_len = 0;
    proc->chunk_count = 0;
}

/* Most bytes one event takes: 6 varints of at most 10 bytes. */
#define EVENT_MAX_BYTES 60
/* Pointer differences are stored in units of this many bytes when they are multiples of
 * it (every malloc result is 16-byte aligned): 4 bits fewer per pointer for 1 flag bit. */
#define PTR_UNIT_SHIFT 4

/* A pointer difference (docs/trace-format.md, "Raw events"): zigzag(d / 16) * 2 when d is
 * a multiple of 16, else zigzag(d) * 2 + 1. The value has 65 bits at most: the flag is
 * the first byte's low bit and the zigzag value is spread over the following groups. */
static inline unsigned char *put_ptr_delta(unsigned char *p, uint64_t d)
{
    bool unit = (d & ((1u << PTR_UNIT_SHIFT) - 1)) == 0;
    uint64_t z = zigzag(unit ? (int64_t)d >> PTR_UNIT_SHIFT : (int64_t)d);
    unsigned char first = (unsigned char)((z & 0x3f) << 1 | (unit ? 0u : 1u));
    z >>= 6;
    if (!z) {
        *p++ = first;
        return p;
    }
    *p++ = first | 0x80;
    return put_varint(p, z);
}

/* Which fields an operation stores beyond head, time, pointer and stack (format v2): a
 * free has no size and no aux (both are 0 by definition), malloc and calloc no aux. */
static inline bool op_has_size(uint32_t op) { return op != MT_OP_FREE; }
static inline bool op_has_aux(uint32_t op)
{
    return op != MT_OP_FREE && op != MT_OP_MALLOC && op != MT_OP_CALLOC;
}

MT_INLINE void chunk_append(struct mt_proc *proc, uint32_t op, uint32_t thread, uint64_t ts, uint64_t ptr,
                         uint64_t size, uint32_t gstack, uint64_t aux)
{
    if (proc->chunk_count == 0) {
        proc->chunk_first_seq = proc->events;
        proc->chunk_first_ns = ts;
        proc->chunk_last_ns = ts;
        proc->chunk_prev_ptr = 0;
    }
    if (MT_UNLIKELY(proc->chunk_len + EVENT_MAX_BYTES > proc->chunk_cap))
        MT_VEC_RESERVE(proc->chunk, proc->chunk_cap, proc->chunk_len + EVENT_MAX_BYTES);
    unsigned char *p = proc->chunk + proc->chunk_len;
    p = put_varint(p, op | (uint64_t)thread << 4);
    p = put_varint(p, ts - proc->chunk_last_ns);
    p = put_ptr_delta(p, ptr - proc->chunk_prev_ptr);
    if (op_has_size(op))
        p = put_varint(p, size);
    p = put_varint(p, gstack);
    if (op == MT_OP_REALLOC || op == MT_OP_REALLOCARRAY)
        p = put_ptr_delta(p, aux - ptr); /* realloc(NULL, n): old 0 */
    else if (op_has_aux(op))
        p = put_varint(p, aux);
    proc->chunk_len = (size_t)(p - proc->chunk);
    proc->chunk_last_ns = ts;
    proc->chunk_prev_ptr = ptr;
    if (++proc->chunk_count == CHUNK_EVENTS)
        mt_proc_flush_chunk(proc);
}

static inline unsigned size_bucket(uint64_t size)
{
    return size ? 64u - (unsigned)__builtin_clzll(size) : 0;
}

static struct mt_size_count *size_entry(struct mt_proc *proc, uint64_t size)
{
    if (size == 0) {
        proc->has_size_zero = true;
        return &proc->size_zero;
    }
    if ((proc->sizes_count + 1) * 2 > proc->sizes_mask + 1) {
        struct mt_size_count *old = proc->sizes;
        size_t old_cap = proc->sizes_mask + 1;
        proc->sizes_mask = old_cap * 2 - 1;
        proc->sizes = mt_xcalloc(old_cap * 2, sizeof *proc->sizes);
        for (size_t i = 0; i < old_cap; i++) {
            if (!old[i].size)
                continue;
            size_t s = (size_t)mt_mix64(old[i].size) & proc->sizes_mask;
            while (proc->sizes[s].size)
                s = (s + 1) & proc->sizes_mask;
            proc->sizes[s] = old[i];
        }
        free(old);
    }
    size_t s = (size_t)mt_mix64(size) & proc->sizes_mask;
    while (proc->sizes[s].size && proc->sizes[s].size != size)
        s = (s + 1) & proc->sizes_mask;
    if (!proc->sizes[s].size) {
        proc->sizes[s].size = size;
        proc->sizes_count++;
    }
    return &proc->sizes[s];
}

/* Save the stack's value at the latest peak before it changes (see the file comment). */
static inline void note_change(struct mt_proc *proc, struct mt_stack_stat *st)
{
    if (proc->peak_epoch >= st->changed_epoch && st->at_peak_epoch != proc->peak_epoch) {
        st->at_peak_bytes = st->live_bytes;
        st->at_peak_epoch = proc->peak_epoch;
    }
    st->changed_epoch = proc->epoch;
}

/* A block leaves the live set: the live totals of its stack, its process and its size
 * bucket drop (a free, or an allocation whose free was never seen). */
static inline void live_totals_sub(struct mt_proc *proc, struct mt_stack_stat *st, uint64_t size)
{
    note_change(proc, st);
    st->live_bytes -= size;
    proc->live_bytes -= size;
    proc->live_blocks--;
    unsigned bucket = size_bucket(size);
    proc->bucket_live[bucket]--;
    proc->bucket_bytes[bucket] -= size;
}

MT_INLINE void block_allocated(struct mt_proc *proc, uint32_t thread, uint64_t ts, uint64_t ptr, uint64_t size,
                            uint32_t stat, bool is_realloc)
{
    struct mt_stack_stat *st = &proc->stats[stat];
    st->allocs++;
    st->alloc_bytes += size;
    if (is_realloc)
        st->reallocs++;
    if (size < st->min_size)
        st->min_size = size;
    if (size > st->max_size)
        st->max_size = size;
    if (size - 1 < MT_SIZE_DIRECT - 1) /* 1 .. MT_SIZE_DIRECT - 1 */
        proc->size_direct[size]++;
    else
        size_entry(proc, size)->allocs++;
    struct mt_thread *t = &proc->threads[thread];
    t->last_alloc_ptr = ptr;
    t->last_alloc_valid = true;
    if (!ptr)
        return;
    struct mt_block b = mt_block_make(ptr, size, ts, proc->events, stat, thread);
    struct mt_block stale;
    if (mt_live_insert(&proc->live, &b, &stale)) {
        /* Its free was never seen (a gap skipped after the process died): forget it. */
        live_totals_sub(proc, &proc->stats[mt_block_stat(&stale)], mt_block_size(&stale));
    }
    note_change(proc, st);
    st->live_bytes += size;
    if (st->live_bytes > st->peak_bytes)
        st->peak_bytes = st->live_bytes;
    proc->live_bytes += size;
    proc->live_blocks++;
    unsigned bucket = size_bucket(size);
    proc->bucket_live[bucket]++;
    proc->bucket_bytes[bucket] += size;
}

MT_INLINE void block_freed(struct mt_proc *proc, uint32_t thread, uint64_t ptr, uint32_t free_stat,
                        bool count_temporary)
{
    struct mt_block b;
    if (!mt_live_remove(&proc->live, ptr, &b))
        return; /* allocated before tracing started, or untraced */
    uint64_t size = mt_block_size(&b);
    uint32_t alloc_thread = mt_block_thread(&b);
    struct mt_stack_stat *st = &proc->stats[mt_block_stat(&b)];
    live_totals_sub(proc, st, size);
    st->frees++;
    st->freed_bytes += size;
    struct mt_thread *t = &proc->threads[thread];
    if (t->last_alloc_valid && t->last_alloc_ptr == ptr) {
        /* This thread's latest allocation, freed before it allocated again. */
        if (count_temporary && alloc_thread == thread)
            st->temporary++;
        t->last_alloc_valid = false;
    }
    struct mt_freed_block f = {b.ptr, size, st->gstack, proc->stats[free_stat].gstack, alloc_thread, thread};
    mt_freed_remember(&proc->freed, &f);
}

MT_INLINE void note_peak(struct mt_proc *proc, uint64_t ts)
{
    if (proc->live_bytes > proc->peak_bytes) {
        proc->peak_bytes = proc->live_bytes;
        proc->peak_ns = ts;
        proc->peak_epoch = proc->epoch;
    }
}

/* Region pops free every push of the region at or above the new position. The region's
 * base is taken as its first push's address (a push starts at position 0 of a fresh or
 * cleared region), positions of later pushes as their distance from it. */
static void region_pop(struct mt_proc *proc, uint32_t thread, uint64_t region, uint64_t pos,
                       uint32_t stat)
{
    uint64_t base = 0;
    bool found = false;
    for (size_t i = 0; i < proc->region_count; i++)
        if (proc->regions[i].region == region) {
            base = proc->regions[i].ptr;
            found = true;
            break;
        }
    if (!found)
        return;
    size_t kept = 0;
    for (size_t i = 0; i < proc->region_count; i++) {
        struct mt_region_push r = proc->regions[i];
        if (r.region == region && r.ptr - base >= pos)
            block_freed(proc, thread, r.ptr, stat, false);
        else
            proc->regions[kept++] = r;
    }
    proc->region_count = kept;
}

/* One event whose operation is `op`: always inline, so that on_event's calls with a constant
 * op (malloc and free, nearly every event) are specialized by the compiler: the encoding's
 * field choices and the switch fold away. */
MT_INLINE void apply_event(struct mt_proc *proc, uint32_t thread, uint64_t ts, uint32_t op,
                           const struct mt_wire_event_fields *ev)
{
    uint32_t stat = stat_for(proc, ev->stack_id);
    uint32_t gstack = proc->stats[stat].gstack;
    proc->epoch++;
    chunk_append(proc, op, thread, ts, ev->ptr, ev->size, gstack, ev->aux);
    proc->op_calls[op]++;
    switch (op) {
    case MT_OP_FREE:
        proc->stats[stat].free_calls++;
        block_freed(proc, thread, ev->ptr, stat, true);
        break;
    case MT_OP_REGION_POP:
        proc->stats[stat].free_calls++;
        region_pop(proc, thread, ev->aux, ev->size, stat);
        break;
    case MT_OP_REALLOC:
    case MT_OP_REALLOCARRAY:
        proc->op_bytes[op] += ev->size;
        if (ev->aux)
            block_freed(proc, thread, ev->aux, stat, false);
        block_allocated(proc, thread, ts, ev->ptr, ev->size, stat, true);
        note_peak(proc, ts);
        break;
    case MT_OP_REGION_PUSH:
        MT_VEC_RESERVE(proc->regions, proc->region_cap, proc->region_count + 1);
        proc->regions[proc->region_count++] = (struct mt_region_push){ev->aux, ev->ptr};
        /* fall through */
    default:
        proc->op_bytes[op] += ev->size;
        block_allocated(proc, thread, ts, ev->ptr, ev->size, stat, false);
        note_peak(proc, ts);
        break;
    }
    proc->events++; /* the thread's count is the caller's (thread_ran) */
}

/* The rest of the operations (kept out of line: one copy of the generic path). */
static MT_NOINLINE void apply_event_other(struct mt_proc *proc, uint32_t thread, uint64_t ts, uint32_t op,
                                          const struct mt_wire_event_fields *ev)
{
    apply_event(proc, thread, ts, op, ev);
}

MT_INLINE void on_event(struct mt_proc *proc, uint32_t thread, uint64_t ts, const struct mt_wire_rec *rec)
{
    uint32_t op = rec->op;
    if (op == 0 || op >= MT_OP_COUNT || (rec->sub == MT_EVENT_WIDE && rec->cells < 2))
        return; /* malformed (a wide event's second cell would lie past the record) */
    struct mt_wire_event_fields fields;
    mt_wire_event_decode(rec, &fields);
    if (op == MT_OP_FREE)
        apply_event(proc, thread, ts, MT_OP_FREE, &fields);
    else if (op == MT_OP_MALLOC)
        apply_event(proc, thread, ts, MT_OP_MALLOC, &fields);
    else
        apply_event_other(proc, thread, ts, op, &fields);
}

/* ---- other records ------------------------------------------------------------------------ */

/* Bytes available to a record: its cells. */
static size_t record_bytes(const struct mt_wire_rec *rec)
{
    return (size_t)(rec->cells ? rec->cells : 1) * MT_WIRE_CELL;
}

/* Snapshots taken because of allocation volume can come every few events (a program
 * that reallocs big buffers allocates gigabytes a second) and would then outweigh the
 * events themselves. One is stored when the period has passed since the last stored one
 * (so the periodic ones all are), or after this many events: a chunk's worth, so that
 * snapshots cost a fraction of a byte per event whatever the volume. */
#define SNAPSHOT_MIN_EVENTS CHUNK_EVENTS

static uint64_t snapshot_period_ns(void)
{
    static long long period_ms = -1;
    if (period_ms < 0)
        period_ms = mt_option_int(MT_OPT_SNAPSHOT_MS);
    return (uint64_t)period_ms * 1000u * 1000u;
}

/* Store the pending snapshot; it becomes the one the next is written against. */
static void store_pending_snapshot(struct mt_proc *proc)
{
    mt_sink_snapshot(proc, ++proc->snapshots, proc->snap_pending, proc->snap_stored_valid ? proc->snap_stored : NULL);
    struct mt_snap_state *stored = proc->snap_stored;
    proc->snap_stored = proc->snap_pending;
    proc->snap_pending = stored;
    proc->snap_stored_valid = true;
    proc->snap_pending_valid = false;
}

static void on_snapshot(struct mt_proc *proc, uint64_t ts, const struct mt_wire_rec *rec)
{
    const struct mt_wire_snapshot *snap = (const void *)rec;
    size_t classes_bytes = (size_t)snap->class_count * sizeof(struct mt_wire_snap_class);
    size_t need = sizeof *snap + classes_bytes + MT_WIRE_SNAP_BUCKETS * sizeof(uint64_t);
    if (need > record_bytes(rec) || snap->class_count > MT_WIRE_SMALL_CLASSES_MAX)
        return; /* malformed: ignore rather than read past the record */
    if (!proc->snap_pending) {
        proc->snap_pending = mt_xcalloc(1, sizeof *proc->snap_pending);
        proc->snap_stored = mt_xcalloc(1, sizeof *proc->snap_stored);
    }
    struct mt_snap_state *s = proc->snap_pending;
    s->ts_ns = ts;
    s->seq = proc->events;
    s->requested = proc->live_bytes;
    s->blocks = proc->live_blocks;
    s->in_use = snap->in_use;
    s->mapped = snap->mapped;
    s->committed = snap->committed;
    s->free_bytes = snap->free_bytes;
    s->largest_free = snap->largest_free;
    s->class_count = snap->class_count;
    memcpy(s->classes, snap + 1, classes_bytes); /* may be unaligned: 12-byte triples */
    memcpy(s->wire_buckets, (const unsigned char *)(snap + 1) + classes_bytes, sizeof s->wire_buckets);
    memcpy(s->size_live, proc->bucket_live, sizeof s->size_live);
    memcpy(s->size_bytes, proc->bucket_bytes, sizeof s->size_bytes);
    proc->snap_pending_valid = true;
    const struct mt_snap_state *last = proc->snap_stored;
    bool due = !proc->snap_stored_valid || ts - last->ts_ns >= snapshot_period_ns() || proc->events - last->seq >= SNAPSHOT_MIN_EVENTS;
    if (!due)
        return; /* kept pending: stored at the end if no later one is */
    store_pending_snapshot(proc);
}

static void on_error(struct mt_proc *proc, uint32_t thread, uint64_t ts, const struct mt_wire_rec *rec)
{
    const struct mt_wire_error *err = (const void *)rec;
    size_t len = err->len;
    if (sizeof *err + len > record_bytes(rec))
        len = record_bytes(rec) - sizeof *err;
    uint32_t stat = stat_for(proc, err->stack_id);
    uint32_t alloc_stack = 0, free_stack = 0;
    const struct mt_block *live = mt_live_find(&proc->live, err->ptr);
    if (live) {
        alloc_stack = proc->stats[mt_block_stat(live)].gstack;
    } else {
        const struct mt_freed_block *f = mt_freed_find(&proc->freed, err->ptr);
        if (f) {
            alloc_stack = f->alloc_gstack;
            free_stack = f->free_gstack;
        }
    }
    mt_sink_error(proc, ts, thread, mt_heap_error_name((enum mt_heap_error_kind)rec->op), err->ptr, err->size,
                  mt_api_name((enum mt_api)rec->sub), (const char *)(err + 1), len, proc->stats[stat].gstack,
                  alloc_stack, free_stack);
}

static void on_leaked(struct mt_proc *proc, const struct mt_wire_rec *rec)
{
    const struct mt_wire_leaked *l = (const void *)rec;
    size_t count = l->count;
    size_t room = (record_bytes(rec) - sizeof *l) / sizeof(uint64_t);
    if (count > room)
        count = room;
    MT_VEC_RESERVE(proc->leaked, proc->leaked_cap, proc->leaked_count + count);
    memcpy(proc->leaked + proc->leaked_count, l + 1, count * sizeof(uint64_t));
    proc->leaked_count += count;
}

static void apply_other(struct mt_proc *proc, uint32_t thread, uint64_t ts, const struct mt_wire_rec *rec);

/* TSC ticks to monotonic ns: with the calibration's linear map while it is current, else
 * through the clock (which recalibrates), exactly as mt_clock_ticks_to_ns converts every
 * timestamp (clock.h; this thread is the only converter). A call per record was a tenth of
 * the collector's instructions. */
static struct mt_clock_linear tick_map;
static bool tick_map_valid;

MT_INLINE uint64_t ticks_to_ns(uint64_t ticks)
{
    if (MT_LIKELY(tick_map_valid && ticks < tick_map.next_ticks))
        return mt_clock_linear_ns(&tick_map, ticks);
    uint64_t ns = mt_clock_ticks_to_ns(ticks);
    tick_map_valid = mt_clock_linear_get(&tick_map);
    return ns;
}

/* One record: its time (made non-decreasing), then its effect. The thread's first and last
 * times and its event count are the caller's (thread_ran), once per run of records. */
MT_INLINE void apply_record(struct mt_proc *proc, uint32_t thread, const struct mt_wire_rec *rec)
{
    uint64_t ts = proc->last_ns;
    /* The default clock gives 7 events in 8 their predecessor's reading (trace/clock.h,
     * mt_clock_event): it converts to the same time, or one the raise below would lift. */
    if (rec->ts != proc->last_raw_ts) {
        proc->last_raw_ts = rec->ts;
        uint64_t now = mt_trace_ns(proc->ts_ticks ? ticks_to_ns(rec->ts) : rec->ts);
        if (now > ts)
            ts = now;
        proc->last_ns = ts;
    }
    if (MT_LIKELY(rec->kind == MT_REC_EVENT))
        on_event(proc, thread, ts, rec);
    else
        apply_other(proc, thread, ts, rec);
}

/* A run of records of `thread` was applied: the first at `first_ns`, the last at
 * proc->last_ns (each record leaves its time there), `events` of them events. */
static inline void thread_ran(struct mt_proc *proc, uint32_t thread, uint64_t first_ns, uint64_t events)
{
    struct mt_thread *t = &proc->threads[thread];
    if (!t->seen) {
        t->seen = true;
        t->start_ns = first_ns;
    }
    t->end_ns = proc->last_ns;
    t->events += events;
}

void mt_proc_apply_as(struct mt_proc *proc, uint32_t thread, const struct mt_wire_rec *rec)
{
    uint64_t events = proc->events;
    apply_record(proc, thread, rec);
    thread_ran(proc, thread, proc->last_ns, proc->events - events);
}

/* Records ahead whose live-set slot is prefetched (single-cell events are the common case;
 * a multi-cell record in between only makes the prefetch land on a non-event). */
#define PREFETCH_AHEAD 8
/* Cells ahead of the tail loaded into the cache (the producer wrote them on another core). */
#define RING_PREFETCH_CELLS 16
/* Publish our tail to the producer after this many cells even in the middle of a run, so
 * a thread waiting for space is not held up by a long drain. */
#define TAIL_PUBLISH_CELLS 1024

size_t mt_proc_apply_run(struct mt_proc *proc, struct mt_ring_view *ring, size_t budget)
{
    static unsigned char wrap_buf[MT_RECORD_MAX_CELLS * MT_WIRE_CELL] __attribute__((aligned(64)));
    uint32_t thread = mt_proc_ring_thread(proc, ring);
    /* Decided once per run: a table that outgrows the cache mid-run only misses its
     * prefetches until the next run. */
    bool prefetch = mt_proc_wants_prefetch(proc);
    uint64_t events = proc->events, first_ns = 0;
    /* The ring's and the sequence's positions in locals: the event path's byte stores
     * (the chunk) would otherwise make the compiler reload them for every record. */
    const unsigned char *cells = ring->cells;
    uint64_t mask = ring->mask, tail = ring->tail, head = ring->head, next = proc->next_seq;
    size_t done = 0;
    for (;;) {
        if (tail == head) {
            ring->tail = tail;
            mt_ring_refresh(ring);
            head = ring->head;
            if (tail == head)
                break;
        }
        const struct mt_wire_rec *rec = (const struct mt_wire_rec *)(cells + (tail & mask) * MT_WIRE_CELL);
        unsigned n = rec->cells ? rec->cells : 1;
        if (MT_UNLIKELY(rec->kind == MT_REC_PAD)) {
            tail += n;
            continue;
        }
        if (rec->seq != (uint32_t)next || done == budget)
            break;
        /* One cell never wraps: used in place. */
        const struct mt_wire_rec *whole = n == 1 ? rec : mt_ring_record_contiguous(ring, tail, rec, wrap_buf);
        apply_record(proc, thread, whole);
        if (!done)
            first_ns = proc->last_ns;
        tail += n;
        next++;
        done++;
        if (MT_UNLIKELY(tail - ring->published_tail >= TAIL_PUBLISH_CELLS)) {
            ring->tail = tail;
            mt_ring_publish_tail(ring, false);
        }
        /* The live-set slot of a record a few ahead: its cache miss overlaps this
         * record's work instead of stalling when its turn comes. */
        if (prefetch && tail + PREFETCH_AHEAD < head)
            mt_proc_prefetch(proc, mt_ring_cell(ring, tail + PREFETCH_AHEAD));
        if (tail + RING_PREFETCH_CELLS < head)
            __builtin_prefetch(cells + ((tail + RING_PREFETCH_CELLS) & mask) * MT_WIRE_CELL);
    }
    ring->tail = tail;
    proc->next_seq = next;
    if (done)
        thread_ran(proc, thread, first_ns, proc->events - events);
    return done;
}

/* Every record but an event (rare: kept out of the event path). */
static MT_NOINLINE void apply_other(struct mt_proc *proc, uint32_t thread, uint64_t ts, const struct mt_wire_rec *rec)
{
    switch (rec->kind) {
    case MT_REC_SNAPSHOT:
        on_snapshot(proc, ts, rec);
        break;
    case MT_REC_MARK: {
        const struct mt_wire_text *text = (const void *)rec;
        size_t len = text->len;
        if (sizeof *text + len > record_bytes(rec))
            len = record_bytes(rec) - sizeof *text;
        mt_sink_mark(proc, ts, (const char *)(text + 1), len);
        break;
    }
    case MT_REC_ERROR:
        on_error(proc, thread, ts, rec);
        break;
    case MT_REC_LEAKED:
        on_leaked(proc, rec);
        break;
    case MT_REC_SCAN_DONE:
        proc->scan_done = true;
        break;
    case MT_REC_EXIT: {
        const struct mt_wire_exit *e = (const void *)rec;
        proc->saw_exit = true;
        proc->has_exit_code = true;
        proc->exit_code = e->code;
        proc->end_ns = ts;
        break;
    }
    default: /* PAUSE, RESUME: nothing to aggregate */
        break;
    }
}

/* ---- the end of a process ------------------------------------------------------------------- */

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void mt_proc_end(struct mt_proc *proc)
{
    if (proc->state == MT_PROC_ENDED)
        return;
    mt_proc_flush_chunk(proc);
    if (proc->end_ns < proc->last_ns)
        proc->end_ns = proc->last_ns;
    if (proc->end_ns < proc->start_ns)
        proc->end_ns = proc->start_ns;
    for (uint64_t size = 1; proc->size_direct && size < MT_SIZE_DIRECT; size++)
        if (proc->size_direct[size])
            size_entry(proc, size)->allocs += proc->size_direct[size];
    free(proc->size_direct);
    proc->size_direct = NULL;
    if (proc->leaked_count)
        qsort(proc->leaked, proc->leaked_count, sizeof *proc->leaked, compare_u64);
    const struct mt_block *slots = mt_live_slots(&proc->live);
    for (size_t i = 0; i <= proc->live.mask; i++) {
        const struct mt_block *b = &slots[i];
        if (!b->ptr)
            continue;
        struct mt_stack_stat *st = &proc->stats[mt_block_stat(b)];
        uint64_t size = mt_block_size(b);
        const char *status = "unknown";
        if (proc->scan_done) {
            bool leaked = proc->leaked_count &&
                          bsearch(&b->ptr, proc->leaked, proc->leaked_count, sizeof *proc->leaked, compare_u64);
            status = leaked ? "leaked" : "reachable";
            if (leaked) {
                st->leaked_blocks++;
                st->leaked_bytes += size;
            } else {
                st->reachable_blocks++;
                st->reachable_bytes += size;
            }
        }
        size_entry(proc, size)->live_at_exit++;
        mt_sink_live_block(proc, b, st->gstack, status);
    }
    if (proc->snap_pending_valid) /* the process's last state is always stored */
        store_pending_snapshot(proc);
    free(proc->snap_pending);
    free(proc->snap_stored);
    proc->snap_pending = proc->snap_stored = NULL;
    if (proc->area)
        proc->area_dropped_final = atomic_load_explicit(&proc->area->dropped, memory_order_relaxed);
    mt_live_free(&proc->live);
    mt_freed_free(&proc->freed);
    free(proc->local_stat); /* no record will name a local stack again */
    proc->local_stat = NULL;
    proc->local_stat_cap = 0;
    free(proc->leaked);
    proc->leaked = NULL;
    free(proc->regions);
    proc->regions = NULL;
    free(proc->chunk);
    proc->chunk = NULL;
    for (size_t i = 0; i < proc->held_count; i++)
        free(proc->held[i].data);
    free(proc->held);
    proc->held = NULL;
    proc->held_count = 0;
    for (size_t i = 0; i < proc->ring_count; i++)
        mt_host_unmap(proc->rings[i].hdr, proc->rings[i].map_bytes);
    free(proc->rings);
    proc->rings = NULL;
    proc->ring_count = 0;
    if (proc->area) {
        proc->unrecorded = atomic_load_explicit(&proc->area->unrecorded, memory_order_relaxed);
        proc->ring_waits = atomic_load_explicit(&proc->area->ring_waits, memory_order_relaxed);
        proc->ring_wait_ns = atomic_load_explicit(&proc->area->ring_wait_ns, memory_order_relaxed);
        proc->ring_grows = atomic_load_explicit(&proc->area->ring_grows, memory_order_relaxed);
        mt_host_unmap(proc->area, proc->area_size);
        proc->area = NULL;
    }
    proc->state = MT_PROC_ENDED;
}

/* End reasons decided once everything is known: the launched program's wait status is
 * the truth for its last image. */
void mt_proc_settle_end_reasons(pid_t root_pid, bool root_reaped, int root_status)
{
    size_t n = mt_proc_count();
    struct mt_proc *root_last = NULL;
    for (uint32_t id = 1; id <= n; id++) {
        struct mt_proc *p = mt_proc_by_id(id);
        if (root_pid > 0 && p->pid == root_pid && strcmp(p->end_reason, "exec") != 0)
            root_last = p;
    }
    for (uint32_t id = 1; id <= n; id++) {
        struct mt_proc *p = mt_proc_by_id(id);
        if (strcmp(p->end_reason, "exec") == 0)
            continue;
        if (p == root_last && root_reaped) {
            int code, sig;
            mt_host_status_to_exit_code(root_status, &code, &sig);
            if (sig) {
                p->end_reason = "signal";
                p->exit_signal = sig;
                p->has_exit_code = false;
            } else {
                p->end_reason = "exit";
                p->exit_code = code;
                p->has_exit_code = true;
            }
        } else if (p->saw_exit) {
            p->end_reason = "exit";
        }
    }
}

/* ---- block queries ---------------------------------------------------------------------- */

static size_t describe_stack(struct mt_proc *proc, uint32_t gstack, const char *what, uint32_t thread, char *text,
                             size_t cap)
{
    size_t n = 0;
    uint32_t depth = 0;
    const struct mt_code_loc *locs = gstack ? mt_stacks_get(gstack, &depth) : NULL;
    if (!depth) {
        n += (size_t)snprintf(text, cap, "    %s by thread %u (no stack recorded)\n", what, thread);
        return n < cap ? n : cap;
    }
    unsigned shown = 0;
    for (uint32_t i = 0; i < depth && shown < INFO_FRAMES && n < cap; i++) {
        uint64_t addr = locs[i].offset;
        for (size_t r = 0; r < proc->maps.count && locs[i].module; r++)
            if (proc->maps.ranges[r].module == locs[i].module) {
                addr = locs[i].offset + proc->maps.ranges[r].bias;
                break;
            }
        size_t nframes = 0;
        const struct mt_sym_frame *frames = mt_sym_frames(locs[i], &nframes);
        for (size_t f = 0; f < (nframes ? nframes : 1) && shown < INFO_FRAMES && n < cap; f++, shown++) {
            const struct mt_sym_frame *fr = nframes ? &frames[f] : NULL;
            char where[512];
            if (fr && fr->file)
                snprintf(where, sizeof where, "%s (%s:%d)", fr->function ? fr->function : "??", fr->file, fr->line);
            else
                snprintf(where, sizeof where, "%s", fr && fr->function ? fr->function : "??");
            if (shown == 0)
                n += (size_t)snprintf(text + n, cap - n, "    %s by thread %u at 0x%llx in %s\n", what, thread,
                                      (unsigned long long)addr, where);
            else
                n += (size_t)snprintf(text + n, cap - n, "        at 0x%llx in %s\n", (unsigned long long)addr, where);
        }
    }
    return n < cap ? n : cap;
}

size_t mt_proc_describe_block(struct mt_proc *proc, uint64_t ptr, char *text, size_t cap, bool *found)
{
    size_t n = 0;
    *found = false;
    const struct mt_block *live = mt_live_find(&proc->live, ptr);
    if (live) {
        *found = true;
        return describe_stack(proc, proc->stats[mt_block_stat(live)].gstack, "allocated", mt_block_thread(live),
                              text, cap);
    }
    const struct mt_freed_block *f = mt_freed_find(&proc->freed, ptr);
    if (f) {
        *found = true;
        n += describe_stack(proc, f->alloc_gstack, "allocated", f->alloc_thread, text, cap);
        n += describe_stack(proc, f->free_gstack, "freed", f->free_thread, text + n, cap - n);
    }
    return n;
}
