/* The SQLite sink: trace.db as docs/trace-format.md (format v3) specifies.
 *
 * One connection, prepared statements, and one open transaction that is committed when
 * it grew big or old (mt_sink_maybe_commit): per-row commits would cost a WAL frame sync
 * each, while one endless transaction would hide everything from a reader until the end.
 * synchronous=OFF: a machine crash loses the trace anyway (meta.complete stays 0); the
 * collector's own death does not corrupt the file.
 *
 * Rows that describe a process as a whole (processes, threads, op_counts, sizes,
 * stack_stats, mappings) and the symbols are written at the end, once known; events,
 * snapshots, marks, errors and live_at_exit as they happen. */
#include "collector.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"

#define TRACE_APPLICATION_ID 1836348003 /* "mtrc" */
#define TRACE_FORMAT_VERSION 3
/* Commit the open transaction after this many rows or this long: keeps the WAL and the
 * reader's view fresh without a sync per row. */
#define COMMIT_ROWS 20000
/* 8 KiB pages: an event chunk (~40 KiB) spans fewer overflow pages than with 4 KiB. */
#define DB_PAGE_SIZE 8192
/* Page cache in KiB (negative: SQLite's unit for KiB): the B-tree interiors (a few pages
 * even for a 300 MiB trace, whose rows are appended) and a 1 MiB commit's dirty pages. No
 * more: every page passes through it once, and a small cache stays in the core's L2 while
 * SQLite fills, checksums and writes each page. 16 MiB (before) cost the draining thread
 * 10% more CPU on bench/loop (470 -> 420 ms, 1-4 MiB alike) and 5% on bench/churn. */
#define DB_CACHE_KIB 2048
#define COMMIT_INTERVAL_NS (500u * 1000u * 1000u)
/* ... or this many bytes of event chunks: a commit is what a checkpoint copies next (below).
 * Measured on bench/loop (20M events, 114 MiB): 4 MiB commits made the checkpoints bursty
 * (~30 short waits of the program), 1 MiB ~7, 256 KiB no better. */
#define COMMIT_BYTES (1u << 20)
/* SQLite's automatic checkpoint, on this thread after a commit, once the WAL holds this
 * many frames (2 MiB of 8 KiB pages): it copies them all (no other connection writes, and
 * a reader only keeps the frames it still uses), so the next transaction starts the WAL
 * over and the WAL stays a few MiB, rewritten in place while it is in the CPU's caches.
 * A checkpointer thread of its own (tried: a passive checkpoint per 8 MiB, at nice 10)
 * never let the WAL start over, since the writer always had committed frames newer than
 * the copy; the WAL grew to its 64 MiB bound, every frame went to a fresh page of the
 * page cache and was read back cold. On bench/loop the collector then needed 450 ms
 * (draining) + 80 ms (copying) of CPU on the core the program leaves; here 470 ms in all,
 * in ~1.5 ms copies every other commit (a 4 MiB ring absorbs ~2.6 ms of that program).
 * 64-256 frames measured alike; at 1000 frames (SQLite's default) 500 ms. */
#define CKPT_FRAMES 256
/* A finished trace smaller than this is rewritten (VACUUM) with SMALL_PAGE_SIZE pages:
 * every table and index holds at least one page, about twenty of them, which with 8 KiB
 * pages would be 170 KiB of a trace of a few thousand events. Rewriting a few MiB takes a
 * few milliseconds; big traces keep their 8 KiB pages (and skip the copy). */
#define SMALL_TRACE_BYTES (4u << 20)
#define SMALL_PAGE_SIZE 512

static const char schema[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value);"
    "CREATE TABLE processes(proc_id INTEGER PRIMARY KEY, pid INTEGER, ppid INTEGER, parent_proc_id INTEGER,"
    " exe TEXT, argv TEXT, start_ns INTEGER, end_ns INTEGER, exit_code INTEGER, exit_signal INTEGER,"
    " end_reason TEXT, events INTEGER, dropped INTEGER, peak_bytes INTEGER, peak_ns INTEGER, leak_scan INTEGER);"
    "CREATE TABLE threads(proc_id INTEGER, thread_idx INTEGER, tid INTEGER, name TEXT, start_ns INTEGER,"
    " end_ns INTEGER, events INTEGER, PRIMARY KEY(proc_id, thread_idx)) WITHOUT ROWID;"
    "CREATE TABLE modules(module_id INTEGER PRIMARY KEY, path TEXT, build_id TEXT);"
    "CREATE TABLE mappings(proc_id INTEGER, module_id INTEGER, start INTEGER, end INTEGER, bias INTEGER);"
    "CREATE TABLE frames(frame_id INTEGER PRIMARY KEY, module_id INTEGER, offset INTEGER, function TEXT,"
    " file TEXT, line INTEGER, inlined INTEGER);"
    /* Format v3: stacks as a prefix trie (stack_trie.c); stack_frames, the table of
     * format 2, is a view over it for ad-hoc SQL (slow on big traces: it walks every stack). */
    "CREATE TABLE stack_nodes(node_id INTEGER PRIMARY KEY, parent_id INTEGER, frame_id INTEGER);"
    "CREATE TABLE stacks(stack_id INTEGER PRIMARY KEY, depth INTEGER, node_id INTEGER);"
    "CREATE VIEW stack_frames(stack_id, pos, frame_id) AS WITH RECURSIVE"
    " walk(stack_id, pos, parent_id, frame_id) AS ("
    "  SELECT s.stack_id, 0, n.parent_id, n.frame_id FROM stacks s JOIN stack_nodes n ON n.node_id = s.node_id"
    "  UNION ALL SELECT w.stack_id, w.pos + 1, n.parent_id, n.frame_id FROM walk w"
    "  JOIN stack_nodes n ON n.node_id = w.parent_id)"
    " SELECT stack_id, pos, frame_id FROM walk;"
    "CREATE TABLE event_chunks(chunk_id INTEGER PRIMARY KEY, proc_id INTEGER, first_seq INTEGER,"
    " count INTEGER, first_ns INTEGER, last_ns INTEGER, data BLOB);"
    "CREATE INDEX event_chunks_by_proc ON event_chunks(proc_id, first_seq);"
    "CREATE TABLE op_counts(proc_id INTEGER, op INTEGER, calls INTEGER, bytes INTEGER);"
    "CREATE TABLE stack_stats(proc_id INTEGER, stack_id INTEGER, allocs INTEGER, alloc_bytes INTEGER,"
    " frees INTEGER, freed_bytes INTEGER, free_calls INTEGER, reallocs INTEGER, peak_bytes INTEGER,"
    " at_peak_bytes INTEGER, temporary INTEGER, min_size INTEGER, max_size INTEGER, leaked_blocks INTEGER,"
    " leaked_bytes INTEGER, reachable_blocks INTEGER, reachable_bytes INTEGER,"
    " PRIMARY KEY(proc_id, stack_id)) WITHOUT ROWID;"
    "CREATE TABLE size_counts(proc_id INTEGER, count INTEGER, data BLOB);"
    "CREATE TABLE snapshots(proc_id INTEGER, snap_id INTEGER, ts_ns INTEGER, seq INTEGER, requested INTEGER,"
    " blocks INTEGER, in_use INTEGER, mapped INTEGER, committed INTEGER, free_bytes INTEGER,"
    " largest_free INTEGER, PRIMARY KEY(proc_id, snap_id)) WITHOUT ROWID;"
    "CREATE TABLE snapshot_classes(proc_id INTEGER, snap_id INTEGER, block_size INTEGER, live INTEGER,"
    " capacity INTEGER);"
    "CREATE TABLE snapshot_sizes(proc_id INTEGER, snap_id INTEGER, bucket INTEGER, live INTEGER, bytes INTEGER);"
    "CREATE TABLE live_at_exit(proc_id INTEGER, ptr INTEGER, size INTEGER, stack_id INTEGER, thread_idx INTEGER,"
    " alloc_ns INTEGER, seq INTEGER, status TEXT);"
    "CREATE TABLE errors(proc_id INTEGER, ts_ns INTEGER, thread_idx INTEGER, kind TEXT, ptr INTEGER, size INTEGER,"
    " function TEXT, detail TEXT, stack_id INTEGER, alloc_stack_id INTEGER, free_stack_id INTEGER);"
    "CREATE TABLE marks(proc_id INTEGER, ts_ns INTEGER, label TEXT);";

enum stmt_id {
    ST_META, ST_CHUNK, ST_SNAPSHOT, ST_SNAP_CLASS, ST_SNAP_SIZE, ST_MARK, ST_ERROR, ST_LIVE, ST_PROCESS,
    ST_THREAD, ST_OP_COUNT, ST_SIZE, ST_STACK_STAT, ST_MAPPING, ST_MODULE, ST_FRAME, ST_STACK, ST_STACK_NODE,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_META] = "INSERT OR REPLACE INTO meta VALUES(?,?)",
    [ST_CHUNK] = "INSERT INTO event_chunks(proc_id, first_seq, count, first_ns, last_ns, data) VALUES(?,?,?,?,?,?)",
    [ST_SNAPSHOT] = "INSERT OR REPLACE INTO snapshots VALUES(?,?,?,?,?,?,?,?,?,?,?)",
    [ST_SNAP_CLASS] = "INSERT INTO snapshot_classes VALUES(?,?,?,?,?)",
    [ST_SNAP_SIZE] = "INSERT INTO snapshot_sizes VALUES(?,?,?,?,?)",
    [ST_MARK] = "INSERT INTO marks VALUES(?,?,?)",
    [ST_ERROR] = "INSERT INTO errors VALUES(?,?,?,?,?,?,?,?,?,?,?)",
    [ST_LIVE] = "INSERT INTO live_at_exit VALUES(?,?,?,?,?,?,?,?)",
    [ST_PROCESS] = "INSERT OR REPLACE INTO processes VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    [ST_THREAD] = "INSERT OR REPLACE INTO threads VALUES(?,?,?,?,?,?,?)",
    [ST_OP_COUNT] = "INSERT INTO op_counts VALUES(?,?,?,?)",
    [ST_SIZE] = "INSERT INTO size_counts VALUES(?,?,?)",
    [ST_STACK_STAT] = "INSERT OR REPLACE INTO stack_stats VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    [ST_MAPPING] = "INSERT INTO mappings VALUES(?,?,?,?,?)",
    [ST_MODULE] = "INSERT OR REPLACE INTO modules VALUES(?,?,?)",
    [ST_FRAME] = "INSERT OR REPLACE INTO frames VALUES(?,?,?,?,?,?,?)",
    [ST_STACK] = "INSERT OR REPLACE INTO stacks VALUES(?,?,?)",
    [ST_STACK_NODE] = "INSERT INTO stack_nodes VALUES(?,?,?)",
};

static sqlite3 *db;
static sqlite3_stmt *stmts[ST_COUNT];
static uint64_t rows_pending;
static uint64_t bytes_pending; /* of event chunks in the open transaction */
static uint64_t last_commit_ns;
static uint64_t events_stored;
static const char *db_path;
static bool failed;

/* The first failure is reported (one line) and marks the trace incomplete; later ones
 * are its consequences. */
static void report_failure(const char *what)
{
    if (!failed)
        fprintf(stderr, "mtrace-run: error: %s: %s: %s\n", db_path, what, db ? sqlite3_errmsg(db) : "no database");
    failed = true;
}

static bool exec_sql(const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        report_failure("writing");
        return false;
    }
    return true;
}

/* The trace cannot be created at all: one line naming the file, nothing written. */
static int open_failed(const char *path)
{
    fprintf(stderr, "mtrace-run: error: cannot write '%s': %s\n", path, db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    db = NULL;
    return -1;
}

int mt_sink_open(const char *path)
{
    db_path = path;
    /* A previous trace of the same name is replaced, with its WAL files. */
    char side[4096];
    remove(path);
    snprintf(side, sizeof side, "%s-wal", path);
    remove(side);
    snprintf(side, sizeof side, "%s-shm", path);
    remove(side);
    /* No memory statistics: SQLite would take a mutex around every allocation of its own
     * to keep them (~6% of the collector's end phase on a trace of 55000 stacks), and
     * nothing reads them. Only possible before SQLite initializes: a second trace of the
     * same process keeps the first setting (the call then fails, harmlessly). */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK)
        return open_failed(path);
    /* synchronous=OFF first: the file's creation (application_id, the switch to WAL) is
     * two rollback-journal commits, each of which would otherwise sync the file, the
     * journal and the directory (6 ms before the program could start). */
    char pragmas[256];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA synchronous=OFF; PRAGMA page_size=%d; PRAGMA application_id=%d;"
             "PRAGMA journal_mode=WAL; PRAGMA cache_size=-%d; PRAGMA wal_autocheckpoint=%d;",
             DB_PAGE_SIZE, TRACE_APPLICATION_ID, DB_CACHE_KIB, CKPT_FRAMES);
    /* SQLite reads the file lazily: a file it could open but not use fails here. */
    if (sqlite3_exec(db, pragmas, NULL, NULL, NULL) != SQLITE_OK)
        return open_failed(path);
    /* The schema and user_version in one transaction (docs/trace-format.md): a reader that
     * sees our user_version sees every table; before that, user_version 0 says the file is
     * still being created. */
    char version[64];
    snprintf(version, sizeof version, "PRAGMA user_version=%d; COMMIT;", TRACE_FORMAT_VERSION);
    if (!exec_sql("BEGIN") || !exec_sql(schema) || !exec_sql(version))
        return -1;
    for (int i = 0; i < ST_COUNT; i++)
        if (sqlite3_prepare_v3(db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &stmts[i], NULL) != SQLITE_OK) {
            report_failure("preparing statements");
            return -1;
        }
    mt_sink_meta_int("format_version", TRACE_FORMAT_VERSION);
    mt_sink_meta_int("complete", 0);
    /* From here rows go into batched transactions (mt_sink_maybe_commit). */
    exec_sql("BEGIN");
    last_commit_ns = mt_host_monotonic_ns();
    return 0;
}

/* Run a statement whose parameters are bound; resets it. */
static void step(enum stmt_id id)
{
    sqlite3_stmt *s = stmts[id];
    if (sqlite3_step(s) != SQLITE_DONE)
        report_failure("writing");
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    rows_pending++;
}

static void bind_u64(sqlite3_stmt *s, int i, uint64_t v)
{
    sqlite3_bind_int64(s, i, (sqlite3_int64)v);
}

static void bind_text(sqlite3_stmt *s, int i, const char *text, size_t len)
{
    if (text)
        sqlite3_bind_text(s, i, text, (int)len, SQLITE_TRANSIENT);
}

/* A NUL-terminated string, or NULL (SQL NULL). */
static void bind_str(sqlite3_stmt *s, int i, const char *text)
{
    if (text)
        bind_text(s, i, text, strlen(text));
}

void mt_sink_meta(const char *key, const char *value)
{
    sqlite3_stmt *s = stmts[ST_META];
    if (!s)
        return;
    bind_str(s, 1, key);
    bind_str(s, 2, value);
    step(ST_META);
}

void mt_sink_meta_int(const char *key, int64_t value)
{
    sqlite3_stmt *s = stmts[ST_META];
    if (!s)
        return;
    bind_str(s, 1, key);
    sqlite3_bind_int64(s, 2, value);
    step(ST_META);
}

void mt_sink_chunk(const struct mt_proc *proc)
{
    sqlite3_stmt *s = stmts[ST_CHUNK];
    sqlite3_bind_int(s, 1, (int)proc->proc_id);
    bind_u64(s, 2, proc->chunk_first_seq);
    sqlite3_bind_int(s, 3, (int)proc->chunk_count);
    bind_u64(s, 4, proc->chunk_first_ns);
    bind_u64(s, 5, proc->chunk_last_ns);
    sqlite3_bind_blob(s, 6, proc->chunk, (int)proc->chunk_len, SQLITE_STATIC);
    step(ST_CHUNK);
    events_stored += proc->chunk_count;
    bytes_pending += proc->chunk_len;
}

uint64_t mt_sink_events(void)
{
    return events_stored;
}

/* The first two columns of every snapshot table: which process, which snapshot. */
static void bind_snapshot_key(sqlite3_stmt *s, const struct mt_proc *proc, uint32_t snap_id)
{
    sqlite3_bind_int(s, 1, (int)proc->proc_id);
    sqlite3_bind_int(s, 2, (int)snap_id);
}

void mt_sink_snapshot(const struct mt_proc *proc, uint32_t snap_id, const struct mt_snap_state *snap,
                      const struct mt_snap_state *prev)
{
    static const struct mt_snap_state zero;
    if (!prev)
        prev = &zero;
    sqlite3_stmt *s = stmts[ST_SNAPSHOT];
    bind_snapshot_key(s, proc, snap_id);
    bind_u64(s, 3, snap->ts_ns);
    bind_u64(s, 4, snap->seq);
    bind_u64(s, 5, snap->requested);
    bind_u64(s, 6, snap->blocks);
    bind_u64(s, 7, snap->in_use);
    bind_u64(s, 8, snap->mapped);
    bind_u64(s, 9, snap->committed);
    bind_u64(s, 10, snap->free_bytes);
    bind_u64(s, 11, snap->largest_free);
    step(ST_SNAPSHOT);
    /* Format v2: only what changed since the previous snapshot (a class whose live
     * count drops to 0 gets a row with 0). */
    s = stmts[ST_SNAP_CLASS];
    for (uint32_t i = 0; i < snap->class_count; i++) {
        const struct mt_wire_snap_class *c = &snap->classes[i];
        const struct mt_wire_snap_class *was = i < prev->class_count ? &prev->classes[i] : &zero.classes[0];
        if (c->live == was->live && c->capacity == was->capacity && c->block_size == was->block_size)
            continue;
        if (!c->live && !c->capacity && was->block_size != c->block_size)
            continue; /* new and empty: as absent */
        bind_snapshot_key(s, proc, snap_id);
        bind_u64(s, 3, c->block_size);
        bind_u64(s, 4, c->live);
        bind_u64(s, 5, c->capacity);
        step(ST_SNAP_CLASS);
    }
    /* Medium and large blocks by power-of-two upper bound, capacity NULL. */
    for (unsigned b = 0; b < MT_WIRE_SNAP_BUCKETS; b++) {
        if (snap->wire_buckets[b] == prev->wire_buckets[b])
            continue;
        bind_snapshot_key(s, proc, snap_id);
        bind_u64(s, 3, (uint64_t)1 << b);
        bind_u64(s, 4, snap->wire_buckets[b]);
        step(ST_SNAP_CLASS);
    }
    s = stmts[ST_SNAP_SIZE];
    for (unsigned b = 0; b < MT_SIZE_BUCKETS; b++) {
        if (snap->size_live[b] == prev->size_live[b] && snap->size_bytes[b] == prev->size_bytes[b])
            continue;
        bind_snapshot_key(s, proc, snap_id);
        sqlite3_bind_int(s, 3, (int)b);
        bind_u64(s, 4, snap->size_live[b]);
        bind_u64(s, 5, snap->size_bytes[b]);
        step(ST_SNAP_SIZE);
    }
}

void mt_sink_mark(const struct mt_proc *proc, uint64_t ts_ns, const char *label, size_t len)
{
    sqlite3_stmt *s = stmts[ST_MARK];
    sqlite3_bind_int(s, 1, (int)proc->proc_id);
    bind_u64(s, 2, ts_ns);
    bind_text(s, 3, label, len);
    step(ST_MARK);
}

static void bind_stack(sqlite3_stmt *s, int i, uint32_t gstack)
{
    if (gstack)
        sqlite3_bind_int(s, i, (int)gstack);
}

void mt_sink_error(const struct mt_proc *proc, uint64_t ts_ns, uint32_t thread, const char *kind, uint64_t ptr,
                   uint64_t size, const char *function, const char *detail, size_t detail_len, uint32_t stack,
                   uint32_t alloc_stack, uint32_t free_stack)
{
    sqlite3_stmt *s = stmts[ST_ERROR];
    sqlite3_bind_int(s, 1, (int)proc->proc_id);
    bind_u64(s, 2, ts_ns);
    sqlite3_bind_int(s, 3, (int)thread);
    bind_str(s, 4, kind);
    bind_u64(s, 5, ptr);
    bind_u64(s, 6, size);
    bind_str(s, 7, function);
    if (detail_len)
        bind_text(s, 8, detail, detail_len);
    sqlite3_bind_int(s, 9, (int)stack);
    bind_stack(s, 10, alloc_stack);
    bind_stack(s, 11, free_stack);
    step(ST_ERROR);
}

void mt_sink_live_block(const struct mt_proc *proc, const struct mt_block *block, uint32_t gstack, const char *status)
{
    sqlite3_stmt *s = stmts[ST_LIVE];
    sqlite3_bind_int(s, 1, (int)proc->proc_id);
    bind_u64(s, 2, block->ptr);
    bind_u64(s, 3, mt_block_size(block));
    sqlite3_bind_int(s, 4, (int)gstack);
    sqlite3_bind_int(s, 5, (int)mt_block_thread(block));
    bind_u64(s, 6, block->ts_ns);
    bind_u64(s, 7, mt_block_seq(block));
    bind_str(s, 8, status);
    step(ST_LIVE);
}

static int compare_stat_gstack(const void *a, const void *b)
{
    const struct mt_stack_stat *x = a, *y = b;
    return x->gstack < y->gstack ? -1 : x->gstack > y->gstack;
}

/* Two local stacks of one process can intern to one global stack (they differed only in
 * mtrace's own frames): their statistics are summed, the peaks taken as the larger. */
static void merge_stat(struct mt_stack_stat *into, const struct mt_stack_stat *from)
{
    into->allocs += from->allocs;
    into->alloc_bytes += from->alloc_bytes;
    into->frees += from->frees;
    into->freed_bytes += from->freed_bytes;
    into->free_calls += from->free_calls;
    into->reallocs += from->reallocs;
    into->temporary += from->temporary;
    into->min_size = MT_MIN(into->min_size, from->min_size);
    into->max_size = MT_MAX(into->max_size, from->max_size);
    into->peak_bytes = MT_MAX(into->peak_bytes, from->peak_bytes);
    into->at_peak_bytes += from->at_peak_bytes;
    into->leaked_blocks += from->leaked_blocks;
    into->leaked_bytes += from->leaked_bytes;
    into->reachable_blocks += from->reachable_blocks;
    into->reachable_bytes += from->reachable_bytes;
}

static void write_stack_stats(struct mt_proc *proc)
{
    /* Resolve the lazily kept at-peak values first (process.c, note_change). */
    for (size_t i = 0; i < proc->stat_count; i++) {
        struct mt_stack_stat *st = &proc->stats[i];
        if (st->at_peak_epoch == proc->peak_epoch && proc->peak_epoch)
            continue;
        st->at_peak_bytes = proc->peak_epoch && st->changed_epoch <= proc->peak_epoch ? st->live_bytes : 0;
    }
    if (proc->stat_count)
        qsort(proc->stats, proc->stat_count, sizeof *proc->stats, compare_stat_gstack);
    sqlite3_stmt *s = stmts[ST_STACK_STAT];
    for (size_t i = 0; i < proc->stat_count;) {
        struct mt_stack_stat st = proc->stats[i++];
        while (i < proc->stat_count && proc->stats[i].gstack == st.gstack)
            merge_stat(&st, &proc->stats[i++]);
        sqlite3_bind_int(s, 1, (int)proc->proc_id);
        sqlite3_bind_int(s, 2, (int)st.gstack);
        bind_u64(s, 3, st.allocs);
        bind_u64(s, 4, st.alloc_bytes);
        bind_u64(s, 5, st.frees);
        bind_u64(s, 6, st.freed_bytes);
        bind_u64(s, 7, st.free_calls);
        bind_u64(s, 8, st.reallocs);
        bind_u64(s, 9, st.peak_bytes);
        bind_u64(s, 10, st.at_peak_bytes);
        bind_u64(s, 11, st.temporary);
        if (st.allocs) {
            bind_u64(s, 12, st.min_size);
            bind_u64(s, 13, st.max_size);
        }
        bind_u64(s, 14, st.leaked_blocks);
        bind_u64(s, 15, st.leaked_bytes);
        bind_u64(s, 16, st.reachable_blocks);
        bind_u64(s, 17, st.reachable_bytes);
        step(ST_STACK_STAT);
    }
}

/* Distinct sizes per size_counts row: bounds one blob (~3 bytes a size). */
#define SIZES_PER_ROW 65536

static int compare_size(const void *a, const void *b)
{
    const struct mt_size_count *x = a, *y = b;
    return x->size < y->size ? -1 : x->size > y->size;
}

static unsigned char *put_uvarint(unsigned char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

/* size_counts (format v2): every distinct requested size, ascending, as varints: the
 * difference from the previous size of the row (the first: from 0), allocs * 2 + (1 when
 * some are live at exit), then live_at_exit when that bit is set. A table row per size
 * cost ~14 bytes; a program allocating random big sizes has about one per event. */
static void write_sizes(const struct mt_proc *proc)
{
    size_t n = proc->has_size_zero ? 1 : 0;
    for (size_t i = 0; proc->sizes && i <= proc->sizes_mask; i++)
        n += proc->sizes[i].size != 0;
    if (!n)
        return;
    struct mt_size_count *all = mt_xcalloc(n, sizeof *all);
    size_t k = 0;
    if (proc->has_size_zero)
        all[k++] = proc->size_zero;
    for (size_t i = 0; proc->sizes && i <= proc->sizes_mask; i++)
        if (proc->sizes[i].size)
            all[k++] = proc->sizes[i];
    qsort(all, n, sizeof *all, compare_size);
    unsigned char *blob = mt_xcalloc(MT_MIN(n, (size_t)SIZES_PER_ROW), 30);
    sqlite3_stmt *s = stmts[ST_SIZE];
    for (size_t first = 0; first < n; first += SIZES_PER_ROW) {
        size_t count = MT_MIN(n - first, (size_t)SIZES_PER_ROW);
        unsigned char *p = blob;
        uint64_t prev = 0;
        for (size_t i = first; i < first + count; i++) {
            p = put_uvarint(p, all[i].size - prev);
            p = put_uvarint(p, all[i].allocs << 1 | (all[i].live_at_exit != 0));
            if (all[i].live_at_exit)
                p = put_uvarint(p, all[i].live_at_exit);
            prev = all[i].size;
        }
        sqlite3_bind_int(s, 1, (int)proc->proc_id);
        bind_u64(s, 2, count);
        sqlite3_bind_blob(s, 3, blob, (int)(p - blob), SQLITE_STATIC);
        step(ST_SIZE);
    }
    free(blob);
    free(all);
}

void mt_sink_process_rows(const struct mt_proc *cproc)
{
    struct mt_proc *proc = (struct mt_proc *)cproc; /* stats are sorted in place */
    sqlite3_stmt *s = stmts[ST_PROCESS];
    sqlite3_bind_int(s, 1, (int)proc->proc_id);
    sqlite3_bind_int(s, 2, proc->pid);
    sqlite3_bind_int(s, 3, proc->ppid);
    if (proc->parent_proc_id)
        sqlite3_bind_int(s, 4, (int)proc->parent_proc_id);
    bind_str(s, 5, proc->exe);
    bind_str(s, 6, proc->argv_json);
    bind_u64(s, 7, proc->start_ns);
    bind_u64(s, 8, proc->end_ns);
    if (proc->has_exit_code)
        sqlite3_bind_int(s, 9, proc->exit_code);
    if (proc->exit_signal)
        sqlite3_bind_int(s, 10, proc->exit_signal);
    bind_str(s, 11, proc->end_reason);
    bind_u64(s, 12, proc->events);
    bind_u64(s, 13, proc->area_dropped_final);
    bind_u64(s, 14, proc->peak_bytes);
    bind_u64(s, 15, proc->peak_ns);
    sqlite3_bind_int(s, 16, proc->scan_done ? 1 : 0);
    step(ST_PROCESS);

    s = stmts[ST_THREAD];
    for (size_t i = 0; i < proc->thread_count; i++) {
        const struct mt_thread *t = &proc->threads[i];
        sqlite3_bind_int(s, 1, (int)proc->proc_id);
        sqlite3_bind_int(s, 2, (int)i);
        sqlite3_bind_int(s, 3, t->tid);
        if (t->name[0])
            bind_text(s, 4, t->name, strnlen(t->name, sizeof t->name));
        bind_u64(s, 5, t->start_ns);
        bind_u64(s, 6, t->end_ns);
        bind_u64(s, 7, t->events);
        step(ST_THREAD);
    }

    s = stmts[ST_OP_COUNT];
    for (unsigned op = 1; op < MT_OP_COUNT; op++) {
        if (!proc->op_calls[op])
            continue;
        sqlite3_bind_int(s, 1, (int)proc->proc_id);
        sqlite3_bind_int(s, 2, (int)op);
        bind_u64(s, 3, proc->op_calls[op]);
        bind_u64(s, 4, proc->op_bytes[op]);
        step(ST_OP_COUNT);
    }

    write_sizes(proc);

    write_stack_stats(proc);

    /* One mappings row per module: its lowest and highest executable address. */
    s = stmts[ST_MAPPING];
    for (size_t i = 0; i < proc->maps.count; i++) {
        const struct mt_map_range *r = &proc->maps.ranges[i];
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = proc->maps.ranges[j].module == r->module;
        if (seen)
            continue;
        uint64_t start = r->start, end = r->end;
        for (size_t j = i + 1; j < proc->maps.count; j++)
            if (proc->maps.ranges[j].module == r->module) {
                start = MT_MIN(start, proc->maps.ranges[j].start);
                end = MT_MAX(end, proc->maps.ranges[j].end);
            }
        sqlite3_bind_int(s, 1, (int)proc->proc_id);
        sqlite3_bind_int(s, 2, (int)r->module);
        bind_u64(s, 3, start);
        bind_u64(s, 4, end);
        bind_u64(s, 5, r->bias);
        step(ST_MAPPING);
    }
}

static void write_frames_of_loc(struct mt_code_loc loc, size_t first, size_t count, void *arg)
{
    (void)arg;
    sqlite3_stmt *s = stmts[ST_FRAME];
    for (size_t i = 0; i < count; i++) {
        const struct mt_sym_frame *f = mt_sym_frame_at(first + i);
        sqlite3_bind_int64(s, 1, (sqlite3_int64)(first + i + 1));
        if (loc.module)
            sqlite3_bind_int(s, 2, (int)loc.module);
        bind_u64(s, 3, loc.offset);
        bind_str(s, 4, f->function);
        bind_str(s, 5, f->file);
        if (f->line)
            sqlite3_bind_int(s, 6, f->line);
        sqlite3_bind_int(s, 7, f->inlined ? 1 : 0);
        step(ST_FRAME);
    }
}

/* stacks and stack_nodes (format v3): each stack's logical frames are threaded into the
 * trie from the outermost in, and the stack names its innermost frame's node. Stacks are
 * numbered as the program first used them, so a stack mostly shares its outer frames with
 * the one before: those nodes are taken from the previous stack's path without a hash
 * lookup (72% of the lookups of docs/collector.md's g++ trace, each a likely cache miss: its
 * end 277 -> 271 ms, median of 5). */
static void write_stacks(void)
{
    struct mt_stack_trie trie = {0};
    uint32_t *frames = NULL; /* one stack's frame ids, innermost first */
    size_t frames_cap = 0;
    uint32_t *path_frames = NULL, *path_nodes = NULL; /* the previous stack, outermost first */
    size_t path_frames_cap = 0, path_nodes_cap = 0, path_len = 0;
    uint32_t count = mt_stacks_count();
    for (uint32_t gid = 1; gid < count; gid++) {
        uint32_t depth = 0;
        const struct mt_code_loc *locs = mt_stacks_get(gid, &depth);
        size_t pos = 0;
        for (uint32_t i = 0; i < depth; i++) {
            size_t n = 0;
            size_t first = mt_sym_first_frame(locs[i], &n);
            MT_VEC_RESERVE(frames, frames_cap, pos + n);
            for (size_t f = 0; f < n; f++)
                frames[pos++] = (uint32_t)(first + f + 1);
        }
        size_t shared = 0;
        while (shared < pos && shared < path_len && path_frames[shared] == frames[pos - 1 - shared])
            shared++;
        uint32_t node = shared ? path_nodes[shared - 1] : 0;
        MT_VEC_RESERVE(path_frames, path_frames_cap, pos);
        MT_VEC_RESERVE(path_nodes, path_nodes_cap, pos);
        for (size_t j = shared; j < pos; j++) {
            uint32_t frame = frames[pos - 1 - j];
            bool created = false;
            uint32_t parent = node;
            node = mt_stack_trie_intern(&trie, parent, frame, &created);
            path_frames[j] = frame;
            path_nodes[j] = node;
            if (!created)
                continue;
            sqlite3_stmt *sn = stmts[ST_STACK_NODE];
            sqlite3_bind_int64(sn, 1, node);
            if (parent)
                sqlite3_bind_int64(sn, 2, parent);
            sqlite3_bind_int64(sn, 3, frame);
            step(ST_STACK_NODE);
        }
        path_len = pos;
        sqlite3_stmt *st = stmts[ST_STACK];
        sqlite3_bind_int(st, 1, (int)gid);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)pos);
        if (node)
            sqlite3_bind_int64(st, 3, node);
        step(ST_STACK);
    }
    free(frames);
    free(path_frames);
    free(path_nodes);
    mt_stack_trie_free(&trie);
}

void mt_sink_symbols(void)
{
    write_stacks();
    mt_sym_for_each_loc(write_frames_of_loc, NULL);
    sqlite3_stmt *s = stmts[ST_MODULE];
    for (uint32_t m = 1; m < mt_sym_module_count(); m++) {
        const char *path = mt_sym_module_path(m);
        const char *build_id = mt_sym_module_build_id(m);
        sqlite3_bind_int(s, 1, (int)m);
        bind_str(s, 2, path);
        bind_str(s, 3, build_id);
        step(ST_MODULE);
    }
}

void mt_sink_maybe_commit(uint64_t now_ns)
{
    if (!db || !rows_pending)
        return;
    if (rows_pending < COMMIT_ROWS && bytes_pending < COMMIT_BYTES && now_ns - last_commit_ns < COMMIT_INTERVAL_NS)
        return;
    exec_sql("COMMIT");
    exec_sql("BEGIN");
    rows_pending = 0;
    bytes_pending = 0;
    last_commit_ns = now_ns;
}

int mt_sink_finish(void)
{
    if (!db)
        return -1;
    mt_sink_meta_int("complete", failed ? 0 : 1);
    exec_sql("COMMIT");
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(stmts[i]);
    /* One self-contained file: fold the WAL back in and drop it. Best effort: a reader
     * that has the trace open keeps it in WAL mode, which is just as valid. */
    bool rollback = sqlite3_exec(db, "PRAGMA journal_mode=DELETE", NULL, NULL, NULL) == SQLITE_OK;
    if (rollback && !failed && mt_host_file_size(db_path) < SMALL_TRACE_BYTES) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA page_size=%d; VACUUM;", SMALL_PAGE_SIZE);
        sqlite3_exec(db, sql, NULL, NULL, NULL); /* best effort: the trace is complete either way */
    }
    if (sqlite3_close(db) != SQLITE_OK)
        failed = true;
    db = NULL;
    return failed ? -1 : 0;
}
