/* The collector: one per traced process tree, inside mtrace-run. It accepts the
 * producers' connections (server.c), merges each process's rings in sequence order
 * (drain.c), keeps each process's state and turns its records into the trace's
 * aggregates (process.c, live.c), interns call stacks (stacks.c), symbolizes them
 * (symbolize.c) and writes trace.db (sink.c) as docs/trace-format.md specifies.
 *
 * Single-threaded by design: the producers never wait for the collector unless a ring is
 * full, and one core applies every event in process order with no locks at all.
 *
 * This header is the collector's internal interface; mtrace-run only calls
 * mt_collector_run(). */
#ifndef MT_COLLECTOR_H
#define MT_COLLECTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../../common/compiler.h"
#include "../../common/hash.h"
#include "../wire.h"

#ifndef MTRACE_VERSION
#define MTRACE_VERSION "0.1.0"
#endif

/* ---- entry point ------------------------------------------------------------------------- */

struct mt_collector_config {
    int listen_fd;            /* listening socket (close-on-exec, non-blocking) */
    int first_conn_fd;        /* our end of the first connection, or -1 */
    const char *out_path;     /* trace.db */
    const char *command_json; /* meta.command; NULL: the first process's argv */
};

struct mt_collector_result {
    uint64_t events;
    uint32_t processes;
    uint64_t ring_waits, ring_wait_ns; /* producers' waits for ring space (meta.ring_waits) */
    uint64_t ring_grows;               /* rings replaced by bigger ones (meta.ring_grows) */
    bool root_reaped;
    int root_wait_status; /* when root_reaped */
};

/* Create the trace file (so that an unwritable output is reported before the program
 * starts). 0, or -1 after printing why. */
int mt_collector_start(const struct mt_collector_config *config);
/* Record until the process tree is gone (and `root_pid`, if > 0, was reaped), then
 * finalize the trace. 0, or -1 after printing why the trace could not be written. */
int mt_collector_run(pid_t root_pid, struct mt_collector_result *result);
/* Close the connections of programs waiting at exit for the trace to be final (after the
 * summary is printed, so it comes before the program's shell prompt returns). */
void mt_collector_release(void);

/* ---- small growable arrays and hashing ----------------------------------------------------- */

/* Grow `*items` (count `len`, capacity `*cap`) to hold `need` items of `size` bytes; aborts
 * on exhaustion (the collector cannot do its work without memory). */
void *mt_grow(void *items, size_t *cap, size_t need, size_t size);
#define MT_VEC_RESERVE(ptr, cap, need) ((ptr) = mt_grow((ptr), &(cap), (need), sizeof *(ptr)))
void *mt_xcalloc(size_t count, size_t size);
char *mt_xstrdup(const char *s);

/* A growable byte buffer for JSON and text. */
struct mt_buf {
    char *data;
    size_t len, cap;
};
void mt_buf_append(struct mt_buf *b, const void *data, size_t len);
void mt_buf_printf(struct mt_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mt_buf_json_string(struct mt_buf *b, const char *s, size_t len);
void mt_buf_free(struct mt_buf *b);

/* ---- the live set (live.c): blocks allocated and not freed, per process --------------------- */

#include "live.h" /* struct mt_block, the live set and its per-event operations */

/* Recently freed blocks, for BLOCK_QUERY and error rows: a ring of the last N frees. */
struct mt_freed_block {
    uint64_t ptr, size;
    uint32_t alloc_gstack, free_gstack; /* global stack ids */
    uint32_t alloc_thread, free_thread;
};
struct mt_freed_memory {
    struct mt_freed_block *ring;
    size_t next; /* total recorded; slot = next % MT_FREED_MEMORY */
};
/* Frees remembered per process: enough for the recent past of a busy program (a double
 * free is usually close to the first free), 32 bytes each (half a cache line: every free
 * writes one), freed when the process ends. */
#define MT_FREED_MEMORY 16384
/* The ring, made at the first free (live.c). */
struct mt_freed_block *mt_freed_ring(struct mt_freed_memory *mem);
static inline void mt_freed_remember(struct mt_freed_memory *mem, const struct mt_freed_block *block)
{
    struct mt_freed_block *ring = MT_LIKELY(mem->ring != NULL) ? mem->ring : mt_freed_ring(mem);
    ring[mem->next++ % MT_FREED_MEMORY] = *block;
}
/* The most recent free of a block containing ptr, or NULL. */
const struct mt_freed_block *mt_freed_find(const struct mt_freed_memory *mem, uint64_t ptr);
void mt_freed_free(struct mt_freed_memory *mem);

/* ---- stacks (stacks.c) and symbols (symbolize.c) ---------------------------------------------- */

/* A code location independent of where a module was loaded. module 0: none known (offset
 * is then the raw address). */
struct mt_code_loc {
    uint32_t module;
    uint64_t offset;
};

struct mt_proc; /* process.c */

/* Resolve a process-local stack id into a global stack id (identical (module, offset)
 * sequences share one id, across processes). 0 stays 0. */
uint32_t mt_stacks_resolve(struct mt_proc *proc, uint32_t local_id);
uint32_t mt_stacks_count(void); /* global ids 1..count-1 exist */
/* The locations of a global stack, innermost first. */
const struct mt_code_loc *mt_stacks_get(uint32_t gid, uint32_t *depth);
void mt_stacks_reset(void);

/* The prefix trie of stacks written as stack_nodes (stack_trie.c): one node per distinct
 * (caller's node, frame_id); node 0 is "none", the parent of an outermost frame. */
struct mt_stack_trie {
    struct trie_node *nodes; /* index = node id */
    size_t cap;
    uint32_t count; /* ids 1..count-1 exist */
    uint32_t *table;
    size_t table_mask;
};
/* The node of `frame` under `parent`; *created tells whether it is new (its row is due). */
uint32_t mt_stack_trie_intern(struct mt_stack_trie *t, uint32_t parent, uint32_t frame, bool *created);
void mt_stack_trie_free(struct mt_stack_trie *t);

/* Per-process code mappings, from /proc/<pid>/maps. */
struct mt_map_range {
    uint64_t start, end, bias;
    uint32_t module;
};
struct mt_proc_maps {
    struct mt_map_range *ranges; /* sorted by start */
    size_t count, cap;
    uint32_t rereads;
};
/* Read the process's maps now (at HELLO, and when an address is unknown). */
void mt_sym_read_maps(struct mt_proc_maps *maps, int32_t pid);
/* Where `addr` lies; false when in no known module. */
bool mt_sym_locate(const struct mt_proc_maps *maps, uint64_t addr, struct mt_code_loc *loc);
void mt_sym_maps_free(struct mt_proc_maps *maps);
/* Frames of mtrace itself (libmtrace.so, libmtalloc.so): removed from stacks. */
bool mt_sym_module_is_own(uint32_t module);

/* One logical frame (a function, possibly inlined) of a return address. */
struct mt_sym_frame {
    const char *function; /* demangled; NULL when unknown */
    const char *file;     /* NULL without debug information */
    int line;             /* 0 when unknown */
    bool inlined;
};
/* The logical frames of a location (innermost first); the array lives as long as the
 * symbolizer. Looks up offset - 1 inside the call instruction, since stacks hold return
 * addresses. */
const struct mt_sym_frame *mt_sym_frames(struct mt_code_loc loc, size_t *count);
uint32_t mt_sym_module_count(void); /* module ids 1..count-1 */
const char *mt_sym_module_path(uint32_t module);
const char *mt_sym_module_build_id(uint32_t module); /* lowercase hex or NULL */
/* Every symbolized location with the index of its first logical frame and their count
 * (frame ids in the trace are index + 1). */
void mt_sym_for_each_loc(void (*fn)(struct mt_code_loc loc, size_t first, size_t count, void *arg), void *arg);
size_t mt_sym_first_frame(struct mt_code_loc loc, size_t *count);
size_t mt_sym_frame_total(void);
const struct mt_sym_frame *mt_sym_frame_at(size_t index);
/* A stack uses `module`: open its debug information now, on a helper thread, so that
 * symbolizing at the end does not wait for it. */
void mt_sym_module_used(uint32_t module);
void mt_sym_shutdown(void);
/* Whether C++ names get demangled (libstdc++'s __cxa_demangle was found). */
bool mt_sym_can_demangle(void);

/* ---- per-process state (process.c) ---------------------------------------------------------- */

/* Statistics of one call stack within one process (stack_stats). */
struct mt_stack_stat {
    uint32_t gstack;
    uint64_t allocs, alloc_bytes, frees, freed_bytes, free_calls, reallocs, temporary;
    uint64_t min_size, max_size;
    uint64_t live_bytes, peak_bytes;
    /* The value live at the process's peak, kept lazily: see process.c, note_peak. */
    uint64_t at_peak_bytes, at_peak_epoch, changed_epoch;
    uint64_t leaked_blocks, leaked_bytes, reachable_blocks, reachable_bytes;
};

struct mt_thread {
    int32_t tid;
    char name[16];
    uint64_t start_ns, end_ns, events; /* times of its first and last record */
    bool seen;
    uint64_t last_alloc_ptr; /* for `temporary`: freed before this thread's next alloc */
    bool last_alloc_valid;
};

struct mt_ring_view {
    struct mt_wire_ring *hdr;
    const unsigned char *cells;
    size_t map_bytes;
    uint64_t mask;
    uint64_t tail;       /* our copy of hdr->tail */
    uint64_t head;       /* last value read from hdr->head */
    uint64_t published_tail; /* last tail stored to hdr->tail */
    uint64_t woken_tail;     /* tail when we last woke a waiting producer */
    int32_t tid;
    int thread;          /* thread_idx, -1 until its first record */
    char name[16];
};

struct mt_size_count {
    uint64_t size, allocs, live_at_exit;
};

#define MT_SIZE_BUCKETS 65 /* bit_length of a 64-bit size: 0..64 */
/* Allocations of sizes below this are counted in a plain array (8 KiB per process), not
 * the size table: most allocations are small, and a hash probe per allocation showed in
 * the collector's profile. Folded into the table when the process ends. */
#define MT_SIZE_DIRECT 1024

/* The allocator's state at one snapshot, as stored (docs/trace-format.md, "snapshots"):
 * the last one stored is what the next one is written against (only changed rows), and a
 * snapshot not stored (rate-limited) is kept in case it is the process's last. */
struct mt_snap_state {
    uint64_t ts_ns, seq, requested, blocks;
    uint64_t in_use, mapped, committed, free_bytes, largest_free;
    uint32_t class_count;
    struct mt_wire_snap_class classes[MT_WIRE_SMALL_CLASSES_MAX];
    uint64_t wire_buckets[MT_WIRE_SNAP_BUCKETS]; /* medium and large blocks by 2^b */
    uint64_t size_live[MT_SIZE_BUCKETS], size_bytes[MT_SIZE_BUCKETS];
};

struct mt_region_push {
    uint64_t region, ptr;
};

/* A record taken out of its ring before its turn (drain.c). */
struct mt_held_rec {
    uint64_t seq;
    uint32_t thread;
    unsigned char *data;
};

struct mt_conn;

enum mt_proc_state {
    MT_PROC_LIVE,   /* records may still be published */
    MT_PROC_FINAL,  /* no more records will come (EOF, exec, goodbye): drain, skip gaps */
    MT_PROC_ENDED,  /* drained and its rows written */
};

struct mt_proc {
    uint32_t proc_id;
    int32_t pid, ppid;
    uint64_t os_start_ticks; /* mt_host_proc_start_ticks at HELLO: one value for all images */
    uint32_t parent_proc_id; /* 0: none */
    char *exe;
    char *argv_json;
    uint64_t start_ns, end_ns;
    bool has_exit_code;
    int exit_code;
    int exit_signal; /* 0: none */
    const char *end_reason;
    enum mt_proc_state state;
    struct mt_conn *conn;

    struct mt_wire_proc *area;
    size_t area_size;
    struct mt_ring_view *rings;
    size_t ring_count, ring_cap;
    uint64_t next_seq;      /* the next record we expect */
    uint64_t area_dropped_final; /* mt_wire_proc.dropped when the process ended */
    uint64_t unrecorded;         /* mt_wire_proc.unrecorded when the process ended */
    uint64_t ring_waits, ring_wait_ns; /* mt_wire_proc's, when the process ended */
    uint64_t ring_grows;
    uint64_t skipped_seqs;  /* gaps skipped (after the process ended, or abandoned) */
    uint64_t stuck_seq, stuck_since_ns; /* the gap we wait for, since when (drain.c) */
    struct mt_held_rec *held;
    size_t held_count, held_cap;

    uint32_t page_size, small_class_count, small_classes[64]; /* from the process area */
    bool ts_ticks; /* records' ts are TSC ticks (mt_wire_proc.ts_ticks) */
    struct mt_proc_maps maps;
    uint32_t *local_stat;   /* local stack id -> index+1 into stats (0: not yet resolved) */
    size_t local_stat_cap;
    struct mt_stack_stat *stats;
    size_t stat_count, stat_cap;

    struct mt_thread *threads;
    size_t thread_count, thread_cap;

    struct mt_live_set live;
    struct mt_freed_memory freed;
    struct mt_region_push *regions; /* pushes per region, in order */
    size_t region_count, region_cap;

    /* Aggregates of the event stream. */
    uint64_t events;
    uint64_t op_calls[MT_OP_COUNT], op_bytes[MT_OP_COUNT];
    uint64_t live_bytes, live_blocks;
    uint64_t peak_bytes, peak_ns, peak_epoch, epoch;
    uint64_t bucket_live[MT_SIZE_BUCKETS], bucket_bytes[MT_SIZE_BUCKETS];
    struct mt_size_count *sizes; /* open-addressed by size; sizes_mask + 1 slots */
    size_t sizes_mask, sizes_count;
    bool has_size_zero;
    struct mt_size_count size_zero;
    uint64_t *size_direct; /* allocs of small sizes, indexed by size (process.c) */
    uint32_t snapshots;           /* stored so far (the last snap_id) */
    struct mt_snap_state *snap_stored;  /* the last stored snapshot (when snap_stored_valid) */
    struct mt_snap_state *snap_pending; /* a later one not stored yet (rate limit) */
    bool snap_stored_valid, snap_pending_valid;
    uint64_t last_ns;
    uint64_t last_raw_ts; /* the record timestamp last_ns came from (0: none) */

    /* Exit scan. */
    uint64_t *leaked; /* sorted on use */
    size_t leaked_count, leaked_cap;
    bool scan_done;
    bool saw_exit;

    /* Event chunk being encoded (sink.c writes it). */
    unsigned char *chunk;
    size_t chunk_len, chunk_cap;
    uint32_t chunk_count;
    uint64_t chunk_first_seq, chunk_first_ns, chunk_last_ns, chunk_prev_ptr;

    /* A pending BLOCK_QUERY: answered once next_seq > query_upto. */
    bool query_pending;
    uint64_t query_ptr, query_upto;
};

/* The process table: proc_ids 1, 2, ... in order of creation. */
struct mt_proc *mt_proc_create(void);
/* A new live image from its accepted HELLO (`len` bytes received), with its mapped
 * process area; reads its code mappings. parent_proc_id 0: none. */
struct mt_proc *mt_proc_from_hello(const struct mt_msg_hello *hello, size_t len, struct mt_wire_proc *area,
                                   uint32_t parent_proc_id);
struct mt_proc *mt_proc_by_id(uint32_t proc_id);
size_t mt_proc_count(void);
void mt_proc_add_ring(struct mt_proc *proc, struct mt_wire_ring *hdr, size_t map_bytes);
/* Live-set or size-table slots from which prefetching pays (256 KiB of live set). */
#define MT_PREFETCH_MIN_SLOTS 8192
/* Whether mt_proc_prefetch is worth calling: smaller tables stay in the core's caches,
 * and their prefetch (decoding the record, hashing its pointer) would cost more than it
 * saves (a tenth of the collector's time on a malloc/free loop). */
static inline bool mt_proc_wants_prefetch(const struct mt_proc *proc)
{
    return proc->live.mask >= MT_PREFETCH_MIN_SLOTS || proc->sizes_mask >= MT_PREFETCH_MIN_SLOTS;
}
/* Prefetch what applying this (later) record will touch (drain.c calls it per record;
 * always inline, as mt_live_prefetch says why). */
MT_INLINE void mt_proc_prefetch(struct mt_proc *proc, const struct mt_wire_rec *rec)
{
    if (rec->kind != MT_REC_EVENT)
        return;
    /* Only the record's first cell is read: `rec` may be any cell (even a wide event's
     * second, or the ring's last), and its second cell may lie past the ring's end. */
    if (rec->sub == MT_EVENT_WIDE) {
        mt_live_prefetch(&proc->live, ((const struct mt_wire_event_wide *)rec)->ptr);
        return;
    }
    struct mt_wire_event_fields ev;
    mt_wire_event_decode(rec, &ev);
    mt_live_prefetch(&proc->live, ev.ptr);
    /* A program with many distinct sizes (strings grown by realloc) has a size table of
     * megabytes: its probe was a cache miss per allocation, the collector's largest cost. */
    if (ev.size >= MT_SIZE_DIRECT && rec->op != MT_OP_FREE)
        __builtin_prefetch(&proc->sizes[(size_t)mt_mix64(ev.size) & proc->sizes_mask], 1);
}
/* Write the events encoded so far as a chunk (a quiet process's events then reach the
 * file without waiting for a full chunk). */
void mt_proc_flush_chunk(struct mt_proc *proc);
/* Unmap a drained ring whose thread is gone (order of the rings is not kept). */
void mt_proc_retire_ring(struct mt_proc *proc, size_t index);
/* Apply one complete record of the process's stream, of thread `thread` (drain.c calls it
 * in seq order for a record held out of its ring). */
void mt_proc_apply_as(struct mt_proc *proc, uint32_t thread, const struct mt_wire_rec *rec);
/* Apply the records at the ring's tail while they continue the process's sequence
 * (next_seq), at most `budget`; returns how many (drain.c chooses the ring, this is the
 * loop per record, where the event path is inline). */
size_t mt_proc_apply_run(struct mt_proc *proc, struct mt_ring_view *ring, size_t budget);
/* The thread_idx of a ring's thread (assigned at its first record). */
uint32_t mt_proc_ring_thread(struct mt_proc *proc, struct mt_ring_view *ring);
/* No more records will come: called once drained. Writes live_at_exit, the last chunk. */
void mt_proc_end(struct mt_proc *proc);
/* Once recording ended: each image's end_reason and exit status. An image replaced by
 * exec ended by `exec`; the last image of the launched program (root_pid > 0) takes its
 * wait status (exit code, or the signal that killed it); others `exit` when they recorded
 * an exit, else `lost`. */
void mt_proc_settle_end_reasons(pid_t root_pid, bool root_reaped, int root_status);
/* Text lines describing where the block at ptr was allocated and freed (BLOCK_INFO). */
size_t mt_proc_describe_block(struct mt_proc *proc, uint64_t ptr, char *text, size_t cap, bool *found);
/* Trace time of a CLOCK_MONOTONIC stamp. */
uint64_t mt_trace_ns(uint64_t mono_ns);
void mt_trace_set_origin(uint64_t mono_ns);
uint64_t mt_trace_origin(void);

/* ---- draining (drain.c) ------------------------------------------------------------------- */

/* Consume what the process has published, in seq order, up to `budget` records. Returns
 * the records consumed. When the process is FINAL and everything is consumed, *drained is
 * set. */
size_t mt_drain_proc(struct mt_proc *proc, size_t budget, bool *drained);
/* Tell waiting producers that space was freed (store tails, futex wake). */
void mt_drain_publish_tails(struct mt_proc *proc);

/* ---- the SQLite sink (sink.c) ---------------------------------------------------------------- */

int mt_sink_open(const char *path);
void mt_sink_meta(const char *key, const char *text_value);
void mt_sink_meta_int(const char *key, int64_t value);
/* One event chunk of a process (the encoded events in proc->chunk). */
void mt_sink_chunk(const struct mt_proc *proc);
/* A snapshot: its row, and the class and size-bucket rows that differ from `prev` (the
 * process's previous stored snapshot; NULL: the first, against all zeros). */
void mt_sink_snapshot(const struct mt_proc *proc, uint32_t snap_id, const struct mt_snap_state *snap,
                      const struct mt_snap_state *prev);
void mt_sink_mark(const struct mt_proc *proc, uint64_t ts_ns, const char *label, size_t len);
void mt_sink_error(const struct mt_proc *proc, uint64_t ts_ns, uint32_t thread, const char *kind, uint64_t ptr,
                   uint64_t size, const char *function, const char *detail, size_t detail_len, uint32_t stack,
                   uint32_t alloc_stack, uint32_t free_stack);
void mt_sink_live_block(const struct mt_proc *proc, const struct mt_block *block, uint32_t gstack, const char *status);
/* Rows that exist only once a process ended: processes, threads, op_counts, sizes,
 * stack_stats, mappings. */
void mt_sink_process_rows(const struct mt_proc *proc);
/* Modules, frames, stacks, stack_nodes: after the last stack was interned. */
void mt_sink_symbols(void);
/* Commit what is pending when the open transaction got big or old. */
void mt_sink_maybe_commit(uint64_t now_ns);
/* Commit, mark complete, leave WAL mode, close. 0 on success. */
int mt_sink_finish(void);
uint64_t mt_sink_events(void);

#endif
