"""Fabricated trace.db files for the mtrace-report tests, written as docs/trace-format.md
(format 3; older formats on request) says, so the reports are tested against the
contract rather than against the collector.

A test scripts a process's heap calls (malloc, free, realloc, region push/pop, marks,
snapshots, errors) on a FabProcess; TraceFab.write() then stores the events as LEB128 /
zigzag event_chunks and computes every aggregate table the collector computes (op_counts,
stack_stats, sizes, snapshots' requested/blocks, snapshot_sizes, snapshot_classes,
live_at_exit) from the same script, the way the doc defines them. Tests assert exact
numbers they work out by hand from the script.
"""
import json
import sqlite3

APPLICATION_ID = 0x6D747263
FORMAT_VERSION = 3

OP = {"malloc": 1, "calloc": 2, "realloc": 3, "reallocarray": 4, "posix_memalign": 5,
      "aligned_alloc": 6, "memalign": 7, "valloc": 8, "pvalloc": 9, "free": 10,
      "region_push": 11, "region_pop": 12}
ALLOC_OPS = {1, 2, 3, 4, 5, 6, 7, 8, 9, 11}
DEFAULT_CLASSES = [16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512,
                   640, 768, 896, 1024]
BLOCK_ALIGN = 16
HEAP_BASE = 0x7F0000100000
TIME_STEP_NS = 1000

SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value);
CREATE TABLE processes(proc_id INTEGER PRIMARY KEY, pid INTEGER, ppid INTEGER,
  parent_proc_id INTEGER, exe TEXT, argv TEXT, start_ns INTEGER, end_ns INTEGER,
  exit_code INTEGER, exit_signal INTEGER, end_reason TEXT, events INTEGER, dropped INTEGER,
  peak_bytes INTEGER, peak_ns INTEGER, leak_scan INTEGER);
CREATE TABLE threads(proc_id INTEGER, thread_idx INTEGER, tid INTEGER, name TEXT,
  start_ns INTEGER, end_ns INTEGER, events INTEGER, PRIMARY KEY(proc_id, thread_idx));
CREATE TABLE modules(module_id INTEGER PRIMARY KEY, path TEXT, build_id TEXT);
CREATE TABLE mappings(proc_id INTEGER, module_id INTEGER, start INTEGER, "end" INTEGER,
  bias INTEGER);
CREATE TABLE frames(frame_id INTEGER PRIMARY KEY, module_id INTEGER, offset INTEGER,
  function TEXT, file TEXT, line INTEGER, inlined INTEGER);
CREATE TABLE stack_nodes(node_id INTEGER PRIMARY KEY, parent_id INTEGER, frame_id INTEGER);
CREATE TABLE stacks(stack_id INTEGER PRIMARY KEY, depth INTEGER, node_id INTEGER);
CREATE VIEW stack_frames(stack_id, pos, frame_id) AS WITH RECURSIVE
  walk(stack_id, pos, parent_id, frame_id) AS (
    SELECT s.stack_id, 0, n.parent_id, n.frame_id FROM stacks s
    JOIN stack_nodes n ON n.node_id = s.node_id
    UNION ALL SELECT w.stack_id, w.pos + 1, n.parent_id, n.frame_id FROM walk w
    JOIN stack_nodes n ON n.node_id = w.parent_id)
  SELECT stack_id, pos, frame_id FROM walk;
CREATE TABLE event_chunks(chunk_id INTEGER PRIMARY KEY, proc_id INTEGER, first_seq INTEGER,
  count INTEGER, first_ns INTEGER, last_ns INTEGER, data BLOB);
CREATE INDEX event_chunks_by_proc ON event_chunks(proc_id, first_seq);
CREATE TABLE op_counts(proc_id INTEGER, op INTEGER, calls INTEGER, bytes INTEGER,
  PRIMARY KEY(proc_id, op));
CREATE TABLE stack_stats(proc_id INTEGER, stack_id INTEGER, allocs INTEGER,
  alloc_bytes INTEGER, frees INTEGER, freed_bytes INTEGER, free_calls INTEGER,
  reallocs INTEGER, peak_bytes INTEGER, at_peak_bytes INTEGER, temporary INTEGER,
  min_size INTEGER, max_size INTEGER, leaked_blocks INTEGER, leaked_bytes INTEGER,
  reachable_blocks INTEGER, reachable_bytes INTEGER, PRIMARY KEY(proc_id, stack_id));
CREATE TABLE size_counts(proc_id INTEGER, count INTEGER, data BLOB);
CREATE TABLE snapshots(proc_id INTEGER, snap_id INTEGER, ts_ns INTEGER, seq INTEGER,
  requested INTEGER, blocks INTEGER, in_use INTEGER, mapped INTEGER, committed INTEGER,
  free_bytes INTEGER, largest_free INTEGER, PRIMARY KEY(proc_id, snap_id));
CREATE TABLE snapshot_classes(proc_id INTEGER, snap_id INTEGER, block_size INTEGER,
  live INTEGER, capacity INTEGER);
CREATE TABLE snapshot_sizes(proc_id INTEGER, snap_id INTEGER, bucket INTEGER, live INTEGER,
  bytes INTEGER);
CREATE TABLE live_at_exit(proc_id INTEGER, ptr INTEGER, size INTEGER, stack_id INTEGER,
  thread_idx INTEGER, alloc_ns INTEGER, seq INTEGER, status TEXT);
CREATE TABLE errors(proc_id INTEGER, ts_ns INTEGER, thread_idx INTEGER, kind TEXT,
  ptr INTEGER, size INTEGER, function TEXT, detail TEXT, stack_id INTEGER,
  alloc_stack_id INTEGER, free_stack_id INTEGER);
CREATE TABLE marks(proc_id INTEGER, ts_ns INTEGER, label TEXT);
"""
# Formats 1-2: every frame of every stack as a row.
STACKS_SCHEMA_V2 = """
CREATE TABLE stacks(stack_id INTEGER PRIMARY KEY, depth INTEGER);
CREATE TABLE stack_frames(stack_id INTEGER, pos INTEGER, frame_id INTEGER,
  PRIMARY KEY(stack_id, pos));
"""


def schema_of(format_version):
    """The schema a collector of `format_version` writes."""
    schema = SCHEMA
    if format_version < 3:
        start = schema.index("CREATE TABLE stack_nodes")
        end = schema.index("CREATE TABLE event_chunks")
        schema = schema[:start] + STACKS_SCHEMA_V2.lstrip() + schema[end:]
    if format_version == 1:
        schema = schema.replace("CREATE TABLE size_counts(proc_id INTEGER, count INTEGER, data BLOB);",
                                "CREATE TABLE sizes(proc_id INTEGER, size INTEGER, allocs INTEGER,"
                                " live_at_exit INTEGER, PRIMARY KEY(proc_id, size));")
    return schema


def stack_node_rows(stacks):
    """stacks {tuple of frame_ids innermost first: stack_id} as format 3's prefix trie:
    ([(node_id, parent_id, frame_id)], [(stack_id, depth, node_id)]), nodes numbered in
    creation order from the outermost frame in, as the collector does."""
    nodes, node_rows, stack_rows = {}, [], []
    for ids, sid in sorted(stacks.items(), key=lambda kv: kv[1]):
        node = None
        for fid in reversed(ids):
            key = (node, fid)
            if key not in nodes:
                nodes[key] = len(nodes) + 1
                node_rows.append((nodes[key], node, fid))
            node = nodes[key]
        stack_rows.append((sid, len(ids), node))
    return node_rows, stack_rows


# ---- the event encoding of docs/trace-format.md ----------------------------------------
def zigzag(n):
    return ((n << 1) ^ (n >> 63)) & 0xFFFFFFFFFFFFFFFF


def uleb128(value, out):
    if value < 0:
        raise ValueError("LEB128 of a negative number")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def ptr_delta(d):
    """A pointer difference: zigzag(d / 16) * 2 when d is a multiple of 16, else
    zigzag(d) * 2 + 1."""
    return zigzag(d >> 4) << 1 if d % 16 == 0 else zigzag(d) << 1 | 1


def encode_chunk(events, first_ns):
    """events: (op, thread_idx, ts_ns, ptr, size, stack_id, aux_raw) in order, where aux_raw
    is the old pointer for realloc/reallocarray and the table's value otherwise."""
    out = bytearray()
    prev_ns, prev_ptr = first_ns, 0
    for op, thread_idx, ts, ptr, size, stack_id, aux in events:
        uleb128(op | (thread_idx << 4), out)
        uleb128(ts - prev_ns, out)
        uleb128(ptr_delta(ptr - prev_ptr), out)
        if op != OP["free"]:
            uleb128(size, out)
        uleb128(stack_id, out)
        if op in (OP["realloc"], OP["reallocarray"]):
            uleb128(ptr_delta(aux - ptr), out)
        elif op not in (OP["malloc"], OP["calloc"], OP["free"]):
            uleb128(aux, out)
        prev_ns, prev_ptr = ts, ptr
    return bytes(out)


def encode_chunk_v1(events, first_ns):
    """Format 1: six varints per event, pointer differences as plain zigzag."""
    out = bytearray()
    prev_ns, prev_ptr = first_ns, 0
    for op, thread_idx, ts, ptr, size, stack_id, aux in events:
        uleb128(op | (thread_idx << 4), out)
        uleb128(ts - prev_ns, out)
        uleb128(zigzag(ptr - prev_ptr), out)
        uleb128(size, out)
        uleb128(stack_id, out)
        uleb128(zigzag(aux - ptr) if op in (OP["realloc"], OP["reallocarray"]) else aux, out)
        prev_ns, prev_ptr = ts, ptr
    return bytes(out)


def encode_sizes(sizes):
    """size_counts' blob: [(size, allocs, live_at_exit)] ascending."""
    out = bytearray()
    prev = 0
    for size, allocs, live in sizes:
        uleb128(size - prev, out)
        uleb128(allocs << 1 | (1 if live else 0), out)
        if live:
            uleb128(live, out)
        prev = size
    return bytes(out)


def changed(prev, now, zero):
    """Rows of `now` that differ from `prev`, and zero rows for keys gone since; zero None:
    a gone key's row keeps its capacity column None when it had one, else 0."""
    out = {k: v for k, v in now.items() if prev.get(k) != v}
    for k, v in prev.items():
        if k not in now:
            out[k] = zero if zero is not None else (0, None if v[1] is None else 0)
    return out


def bucket_of(size):
    return int(size).bit_length()


def pow2_upper(size):
    return 1 << max(0, (int(size) - 1).bit_length())


# ---- the builder -------------------------------------------------------------------------
class FabProcess:
    """One traced process: a script of heap calls with stacks given as frame lists."""

    def __init__(self, fab, proc_id, pid, argv, ppid, parent_proc_id, start_ns):
        self.fab = fab
        self.proc_id = proc_id
        self.pid = pid
        self.argv = argv
        self.ppid = ppid
        self.parent_proc_id = parent_proc_id
        self.start_ns = start_ns
        self.now = start_ns
        self.events = []         # (op, thread, ts, ptr, size, stack_id, aux)
        self.live = {}           # ptr -> (size, stack_id, thread, alloc_ns, seq)
        self.next_ptr = HEAP_BASE + proc_id * 0x1000000
        self.regions = {}        # handle -> {"base", "pos", "pushes": [ptr]}
        self.snapshots = []
        self.marks = []
        self.errors = []
        self.end = None
        self.status = {}         # ptr -> leaked/reachable/unknown at exit
        self.leak_scan = 1
        self.threads = {0: 1000 + pid}

    # time
    def tick(self, ns=None, at=None):
        if at is not None:
            assert at >= self.now
            self.now = at
        else:
            self.now += TIME_STEP_NS if ns is None else ns
        return self.now

    def _new_ptr(self, size):
        ptr = self.next_ptr
        self.next_ptr += max(BLOCK_ALIGN, (size + BLOCK_ALIGN - 1) // BLOCK_ALIGN * BLOCK_ALIGN)
        return ptr

    def _emit(self, op, ptr, size, stack, aux, thread, at):
        ts = self.tick(at=at)
        stack_id = self.fab.stack(stack)
        self.threads.setdefault(thread, 1000 + self.pid + thread)
        self.events.append((op, thread, ts, ptr, size, stack_id, aux))
        return stack_id, ts

    def malloc(self, size, stack, thread=0, op="malloc", at=None, aux=0):
        ptr = self._new_ptr(size)
        stack_id, ts = self._emit(OP[op], ptr, size, stack, aux, thread, at)
        self.live[ptr] = (size, stack_id, thread, ts, len(self.events) - 1)
        return ptr

    def calloc(self, count, size, stack, **kw):
        return self.malloc(count * size, stack, op="calloc", **kw)

    def free(self, ptr, stack=None, thread=0, at=None):
        assert ptr in self.live, "fabricated free of a block that is not live"
        self._emit(OP["free"], ptr, 0, stack, 0, thread, at)
        del self.live[ptr]

    def realloc(self, old, size, stack, thread=0, at=None, in_place=False):
        ptr = old if (in_place and old) else self._new_ptr(size)
        stack_id, ts = self._emit(OP["realloc"], ptr, size, stack, old, thread, at)
        if old:
            del self.live[old]
        self.live[ptr] = (size, stack_id, thread, ts, len(self.events) - 1)
        return ptr

    def region_create(self, handle):
        base = self._new_ptr(1 << 20)
        self.regions[handle] = {"base": base, "pos": 0, "pushes": []}

    def region_push(self, handle, size, stack, thread=0, at=None):
        region = self.regions[handle]
        ptr = region["base"] + region["pos"]
        region["pos"] += (size + BLOCK_ALIGN - 1) // BLOCK_ALIGN * BLOCK_ALIGN
        stack_id, ts = self._emit(OP["region_push"], ptr, size, stack, handle, thread, at)
        region["pushes"].append(ptr)
        self.live[ptr] = (size, stack_id, thread, ts, len(self.events) - 1)
        return ptr

    def region_pop(self, handle, new_pos, stack=None, thread=0, at=None):
        """ptr = the region's address at the new position (docs/trace-format.md)."""
        region = self.regions[handle]
        cut = region["base"] + new_pos
        self._emit(OP["region_pop"], cut, new_pos, stack, handle, thread, at)
        for ptr in [p for p in region["pushes"] if p >= cut]:
            region["pushes"].remove(ptr)
            del self.live[ptr]
        region["pos"] = new_pos

    def mark(self, label, at=None):
        self.marks.append((self.tick(at=at), label))

    def error(self, kind, ptr, size, function, stack=None, detail=None, thread=0):
        self.errors.append((self.tick(), thread, kind, ptr, size, function, detail,
                            self.fab.stack(stack)))

    def snapshot(self, mapped=None, committed=None, free_bytes=None, largest_free=None,
                 in_use=None, at=None):
        """Allocator numbers are the test's to choose; requested and blocks come from the
        live set, in_use defaults to the live blocks rounded to their size classes."""
        ts = self.tick(at=at)
        requested = sum(v[0] for v in self.live.values())
        if in_use is None:
            in_use = sum(self.fab.usable(v[0]) for v in self.live.values())
        mapped = in_use + 4096 if mapped is None else mapped
        free_bytes = mapped - in_use if free_bytes is None else free_bytes
        largest_free = free_bytes if largest_free is None else largest_free
        committed = mapped if committed is None else committed
        sizes = [v[0] for v in self.live.values()]
        self.snapshots.append(dict(ts_ns=ts, seq=len(self.events), requested=requested,
                                   blocks=len(sizes), in_use=in_use, mapped=mapped,
                                   committed=committed, free_bytes=free_bytes,
                                   largest_free=largest_free, sizes=sizes))

    def exit(self, code=0, status=None, default_status="leaked", signal=None, reason=None,
             at=None, leak_scan=True):
        """End the process; `status` maps ptr -> leaked/reachable/unknown for live blocks."""
        self.snapshot() if self.fab.snapshot_at_exit else None
        ts = self.tick(at=at)
        self.leak_scan = 1 if leak_scan else 0
        if not leak_scan:
            default_status = "unknown"
        self.status = {p: (status or {}).get(p, default_status) for p in self.live}
        if reason is None:
            reason = "signal" if signal else "exit"
        self.end = dict(end_ns=ts, exit_code=None if signal else code, exit_signal=signal,
                        end_reason=reason)


class TraceFab:
    """A trace being fabricated; write(path) stores it."""

    def __init__(self, small_classes=None, chunk_events=4, stack_depth=64,
                 snapshot_at_exit=True, dropped=0):
        self.small_classes = list(small_classes or DEFAULT_CLASSES)
        self.chunk_events = chunk_events
        self.stack_depth = stack_depth
        self.snapshot_at_exit = snapshot_at_exit
        self.dropped = dropped
        self.modules = {}   # path -> module_id
        self.frames = {}    # (function, file, line, module) -> frame_id
        self.stacks = {}    # tuple of frame ids -> stack_id
        self.procs = []
        self.meta_extra = {}

    def usable(self, size):
        for c in self.small_classes:
            if size <= c:
                return c
        return (size + BLOCK_ALIGN - 1) // BLOCK_ALIGN * BLOCK_ALIGN

    def module(self, path):
        if path not in self.modules:
            self.modules[path] = len(self.modules) + 1
        return self.modules[path]

    def frame(self, spec):
        """spec: "function", or (function, file, line[, module path])."""
        if isinstance(spec, str):
            spec = (spec, None, None, "/usr/bin/prog")
        if len(spec) == 3:
            spec = tuple(spec) + ("/usr/bin/prog",)
        key = tuple(spec)
        if key not in self.frames:
            self.frames[key] = len(self.frames) + 1
        return self.frames[key]

    def stack(self, frames):
        """stack_id for a list of frame specs, innermost first; None or [] is stack 0."""
        if not frames:
            return 0
        ids = tuple(self.frame(f) for f in frames)
        if ids not in self.stacks:
            self.stacks[ids] = len(self.stacks) + 1
        return self.stacks[ids]

    def process(self, pid=100, argv=None, ppid=1, parent=None, start_ns=0):
        proc = FabProcess(self, len(self.procs) + 1, pid, argv or ["./prog"], ppid,
                          parent.proc_id if parent else None, start_ns)
        self.procs.append(proc)
        return proc

    # ---- writing -------------------------------------------------------------------------
    def write(self, path, complete=1, user_version=None, application_id=APPLICATION_ID,
              wal=False, format_version=FORMAT_VERSION):
        """format_version 1 writes what a version-1 collector wrote (readers keep reading
        old traces): six varints per event, a `sizes` row per size, every snapshot row;
        1 and 2 store stacks as stack_frames rows, 3 as a prefix trie (stack_nodes)."""
        self.format = format_version
        if user_version is None:
            user_version = format_version
        conn = sqlite3.connect(path)
        conn.executescript(schema_of(format_version))
        conn.execute(f"PRAGMA application_id = {application_id}")
        conn.execute(f"PRAGMA user_version = {user_version}")
        if wal:
            conn.execute("PRAGMA journal_mode = WAL")
        total_events = sum(len(p.events) for p in self.procs)
        duration = max([p.end["end_ns"] if p.end else p.now for p in self.procs] or [0])
        meta = {"format_version": format_version, "mtrace_version": "fab-1",
                "start_unix_ns": 1_700_000_000_000_000_000, "duration_ns": duration,
                "command": json.dumps(self.procs[0].argv if self.procs else []),
                "cwd": "/tmp", "hostname": "fab", "options": json.dumps({"MTRACE_DEPTH": 64}),
                "complete": complete, "events": total_events, "dropped": self.dropped,
                "stack_depth": self.stack_depth, "page_size": 4096,
                "small_classes": json.dumps(self.small_classes)}
        meta.update(self.meta_extra)
        conn.executemany("INSERT INTO meta VALUES(?, ?)", meta.items())
        for path_, mid in self.modules.items():
            conn.execute("INSERT INTO modules VALUES(?, ?, ?)", (mid, path_, "ab" * 20))
        for (function, file, line, module), fid in self.frames.items():
            conn.execute("INSERT INTO frames VALUES(?, ?, ?, ?, ?, ?, 0)",
                         (fid, self.module(module) if module else None, 0x1000 + fid * 16,
                          function, file, line))
        for path_, mid in self.modules.items():
            conn.execute("INSERT OR IGNORE INTO modules VALUES(?, ?, ?)", (mid, path_, "ab" * 20))
        if format_version >= 3:
            node_rows, stack_rows = stack_node_rows(self.stacks)
            conn.executemany("INSERT INTO stack_nodes VALUES(?, ?, ?)", node_rows)
            conn.executemany("INSERT INTO stacks VALUES(?, ?, ?)", stack_rows)
        else:
            for ids, sid in self.stacks.items():
                conn.execute("INSERT INTO stacks VALUES(?, ?)", (sid, len(ids)))
                conn.executemany("INSERT INTO stack_frames VALUES(?, ?, ?)",
                                 [(sid, pos, fid) for pos, fid in enumerate(ids)])
        for proc in self.procs:
            self._write_process(conn, proc)
        conn.commit()
        conn.close()
        return path

    def _write_process(self, conn, p):
        pid = p.proc_id
        # event chunks
        for first in range(0, len(p.events), self.chunk_events):
            chunk = p.events[first:first + self.chunk_events]
            conn.execute("INSERT INTO event_chunks(proc_id, first_seq, count, first_ns, last_ns,"
                         " data) VALUES(?, ?, ?, ?, ?, ?)",
                         (pid, first, len(chunk), chunk[0][2], chunk[-1][2],
                          (encode_chunk_v1 if self.format == 1 else encode_chunk)(chunk, chunk[0][2])))
        stats, ops, sizes, peak, peak_ns, thread_events = self._replay(p)
        end = p.end or dict(end_ns=None, exit_code=None, exit_signal=None, end_reason=None)
        conn.execute("INSERT INTO processes VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     (pid, p.pid, p.ppid, p.parent_proc_id, p.argv[0], json.dumps(p.argv),
                      p.start_ns, end["end_ns"], end["exit_code"], end["exit_signal"],
                      end["end_reason"], len(p.events), 0, peak, peak_ns, p.leak_scan))
        for idx, tid in p.threads.items():
            conn.execute("INSERT INTO threads VALUES(?,?,?,?,?,?,?)",
                         (pid, idx, tid, f"t{idx}", p.start_ns, end["end_ns"],
                          thread_events.get(idx, 0)))
        conn.executemany("INSERT INTO op_counts VALUES(?,?,?,?)",
                         [(pid, op, c, b) for op, (c, b) in sorted(ops.items())])
        conn.executemany("INSERT INTO stack_stats VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         [(pid, sid) + tuple(s[k] for k in STAT_KEYS)
                          for sid, s in sorted(stats.items())])
        if self.format == 1:
            conn.executemany("INSERT INTO sizes VALUES(?,?,?,?)",
                             [(pid, size, a, l) for size, (a, l) in sorted(sizes.items())])
        elif sizes:
            rows = [(size, a, l) for size, (a, l) in sorted(sizes.items())]
            conn.execute("INSERT INTO size_counts VALUES(?,?,?)", (pid, len(rows), encode_sizes(rows)))
        # Snapshot rows are stored when they differ from the previous snapshot's.
        prev_buckets, prev_classes = {}, {}
        if self.format == 1:  # every row of every snapshot
            changed_rows = lambda prev, now, zero: now  # noqa: E731
        else:
            changed_rows = changed
        for snap_id, s in enumerate(p.snapshots, 1):
            conn.execute("INSERT INTO snapshots VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                         (pid, snap_id, s["ts_ns"], s["seq"], s["requested"], s["blocks"],
                          s["in_use"], s["mapped"], s["committed"], s["free_bytes"],
                          s["largest_free"]))
            buckets, classes = {}, {}
            for size in s["sizes"]:
                b = buckets.setdefault(bucket_of(size), [0, 0])
                b[0] += 1
                b[1] += size
                usable = self.usable(size)
                cls = usable if size <= self.small_classes[-1] else pow2_upper(size)
                classes[cls] = classes.get(cls, 0) + 1
            buckets = {b: tuple(v) for b, v in buckets.items()}
            conn.executemany("INSERT INTO snapshot_sizes VALUES(?,?,?,?,?)",
                             [(pid, snap_id, b, v[0], v[1]) for b, v in
                              sorted(changed_rows(prev_buckets, buckets, (0, 0)).items())])
            small_max = self.small_classes[-1]
            classes = {c: (n, (n + 3) // 4 * 4 if c <= small_max else None)
                       for c, n in classes.items()}
            conn.executemany("INSERT INTO snapshot_classes VALUES(?,?,?,?,?)",
                             [(pid, snap_id, c) + v for c, v in
                              sorted(changed_rows(prev_classes, classes, None).items())])
            prev_buckets, prev_classes = buckets, classes
        conn.executemany("INSERT INTO live_at_exit VALUES(?,?,?,?,?,?,?,?)",
                         [(pid, ptr, v[0], v[1], v[2], v[3], v[4], p.status.get(ptr, "unknown"))
                          for ptr, v in sorted(p.live.items())])
        conn.executemany("INSERT INTO errors VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                         [(pid,) + e + (0, 0) for e in p.errors])
        conn.executemany("INSERT INTO marks VALUES(?,?,?)", [(pid, ts, l) for ts, l in p.marks])

    def _replay(self, p):
        """The collector's aggregates, from the event script (docs/trace-format.md)."""
        stats, ops, sizes, thread_events = {}, {}, {}, {}
        live = {}                # ptr -> (size, stack_id, thread)
        stack_live = {}
        total = peak = 0
        peak_ns = p.start_ns
        at_peak = {}
        last_alloc = {}          # thread -> ptr of its latest allocation
        regions = {}             # handle -> list of ptr

        def st(sid):
            return stats.setdefault(sid, dict.fromkeys(STAT_KEYS, 0))

        def release(ptr, freeing_thread):
            nonlocal total
            size, sid, _ = live.pop(ptr)
            s = st(sid)
            s["frees"] += 1
            s["freed_bytes"] += size
            stack_live[sid] -= size
            total -= size
            if last_alloc.get(freeing_thread) == ptr:
                s["temporary"] += 1
                last_alloc[freeing_thread] = None

        def allocate(ptr, size, sid, thread, ts):
            nonlocal total, peak, peak_ns, at_peak
            live[ptr] = (size, sid, thread)
            s = st(sid)
            s["allocs"] += 1
            s["alloc_bytes"] += size
            s["min_size"] = size if s["allocs"] == 1 else min(s["min_size"], size)
            s["max_size"] = max(s["max_size"], size)
            a = sizes.setdefault(size, [0, 0])
            a[0] += 1
            stack_live[sid] = stack_live.get(sid, 0) + size
            s["peak_bytes"] = max(s["peak_bytes"], stack_live[sid])
            total += size
            last_alloc[thread] = ptr
            if total > peak:
                peak, peak_ns = total, ts
                at_peak = dict(stack_live)

        for op, thread, ts, ptr, size, sid, aux in p.events:
            thread_events[thread] = thread_events.get(thread, 0) + 1
            c = ops.setdefault(op, [0, 0])
            c[0] += 1
            c[1] += size if op in ALLOC_OPS else 0
            if op == OP["free"]:
                st(sid)["free_calls"] += 1
                release(ptr, thread)
            elif op in (OP["realloc"], OP["reallocarray"]):
                if aux:
                    st(sid)["free_calls"] += 1
                    release(aux, thread)
                allocate(ptr, size, sid, thread, ts)
                st(sid)["reallocs"] += 1
            elif op == OP["region_push"]:
                regions.setdefault(aux, []).append(ptr)
                allocate(ptr, size, sid, thread, ts)
            elif op == OP["region_pop"]:
                for q in [q for q in regions.get(aux, []) if q >= ptr]:
                    regions[aux].remove(q)
                    release(q, thread)
            else:
                allocate(ptr, size, sid, thread, ts)
        for sid, s in stats.items():
            s["at_peak_bytes"] = at_peak.get(sid, 0)
        for ptr, (size, sid, _) in live.items():
            status = p.status.get(ptr, "unknown")
            sizes[size][1] += 1
            if status in ("leaked", "reachable"):
                st(sid)[status + "_blocks"] += 1
                st(sid)[status + "_bytes"] += size
        return stats, ops, sizes, peak, peak_ns, thread_events


STAT_KEYS = ("allocs", "alloc_bytes", "frees", "freed_bytes", "free_calls", "reallocs",
             "peak_bytes", "at_peak_bytes", "temporary", "min_size", "max_size",
             "leaked_blocks", "leaked_bytes", "reachable_blocks", "reachable_bytes")
