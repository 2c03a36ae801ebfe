"""Opening a trace.db: every check that turns a bad file into one clear ReportError.

Owns: validation (file present, SQLite, mtrace's application_id, a format version this
reader knows, not truncated, not empty), the meta table, the process list and the
--pid/--proc/--from/--to selections every command shares. The connection is read-only, so
a report can run beside the collector while it records (the file is in WAL mode).

Invariant: nothing here reads events; it runs in constant time and memory whatever the
size of the trace.
"""
import fnmatch
import json
import os
import sqlite3
import sys
import urllib.parse

from . import FORMAT_VERSION
from .errors import ReportError
from .events import varint_reader

# PRAGMA application_id of a trace: "mtrc" (docs/trace-format.md).
APPLICATION_ID = 0x6D747263

SQLITE_MAGIC = b"SQLite format 3\x00"
# SQLite file header fields (https://sqlite.org/fileformat.html, "The Database Header").
HEADER_SIZE = 100
HEADER_PAGE_SIZE_OFFSET = 16
HEADER_CHANGE_COUNTER_OFFSET = 24
HEADER_PAGE_COUNT_OFFSET = 28
HEADER_VALID_FOR_OFFSET = 92
# A page size field of 1 means 65536 (it does not fit in 16 bits).
PAGE_SIZE_65536_MARKER = 1
PAGE_SIZE_MAX = 65536

# Tables and columns the reports read (docs/trace-format.md); a file without them is not
# (or not yet) a trace of its format version. Checked up front so that a malformed trace is one clear
# error instead of a failure deep inside a report.
REQUIRED_COLUMNS = {
    "meta": ("key", "value"),
    "processes": ("proc_id", "pid", "ppid", "parent_proc_id", "exe", "argv", "start_ns",
                  "end_ns", "exit_code", "exit_signal", "end_reason", "events", "dropped",
                  "peak_bytes", "peak_ns", "leak_scan"),
    "threads": ("proc_id", "thread_idx"),
    "modules": ("module_id", "path"),
    "frames": ("frame_id", "module_id", "offset", "function", "file", "line", "inlined"),
    "stacks": ("stack_id",),
    "event_chunks": ("chunk_id", "proc_id", "first_seq", "count", "first_ns", "last_ns", "data"),
    "op_counts": ("proc_id", "op", "calls", "bytes"),
    "stack_stats": ("proc_id", "stack_id", "allocs", "alloc_bytes", "frees", "freed_bytes",
                    "reallocs", "peak_bytes", "at_peak_bytes", "temporary", "min_size",
                    "max_size", "leaked_blocks", "leaked_bytes", "reachable_blocks",
                    "reachable_bytes"),
    "snapshots": ("proc_id", "snap_id", "ts_ns", "requested", "blocks", "in_use", "mapped",
                  "committed", "free_bytes", "largest_free"),
    "snapshot_classes": ("proc_id", "snap_id", "block_size", "live", "capacity"),
    "snapshot_sizes": ("proc_id", "snap_id", "bucket", "live", "bytes"),
    "live_at_exit": ("proc_id", "size", "stack_id", "status"),
    "errors": ("proc_id", "ts_ns", "kind", "ptr", "size", "function", "stack_id"),
    "marks": ("proc_id", "ts_ns", "label"),
}
# Format 1 stored one row per distinct size; format 2 packs them (size_counts).
SIZES_COLUMNS = {1: {"sizes": ("proc_id", "size", "allocs", "live_at_exit")},
                 2: {"size_counts": ("proc_id", "count", "data")}}
# Formats 1-2 stored every frame of every stack (stack_frames); format 3 a prefix trie
# (stack_nodes), where stack_frames is only a convenience view (analysis/stacks.py).
STACK_COLUMNS = {2: {"stack_frames": ("stack_id", "pos", "frame_id")},
                 3: {"stack_nodes": ("node_id", "parent_id", "frame_id"),
                     "stacks": ("stack_id", "depth", "node_id")}}
REQUIRED_TABLES = tuple(REQUIRED_COLUMNS)

NS_PER_S = 1_000_000_000

RECORD_HINT = "record one with `mtrace-run -o trace.db -- ./prog`"


def bit_length(n):
    """Requested-size bucket of the trace format: bucket b holds sizes of bit length b."""
    return int(n).bit_length() if n is not None else None


def basename(path):
    return os.path.basename(path) if path else path


class Trace:
    """An open, validated trace: the connection, its meta values and its processes."""

    def __init__(self, path, conn, meta, processes, version=FORMAT_VERSION):
        self.path = path
        self.conn = conn
        self.meta = meta
        self.processes = processes  # proc_id -> dict of the processes row
        self.complete = str(meta.get("complete", "0")) == "1"
        self.version = version      # PRAGMA user_version: the format of the file
        self._sizes_ready = version < 2

    def ensure_sizes(self):
        """Make `sizes(proc_id, size, allocs, live_at_exit)` queryable: format 1 has the
        table, format 2 packs it into size_counts, unpacked here into a temporary table
        (once, on first use: only reports over sizes pay for it)."""
        if self._sizes_ready:
            return
        self.conn.execute("CREATE TEMP TABLE sizes(proc_id INTEGER, size INTEGER, allocs INTEGER,"
                          " live_at_exit INTEGER)")
        rows = self.conn.execute("SELECT proc_id, count, data FROM size_counts").fetchall()
        for proc_id, count, data in rows:
            self.conn.executemany("INSERT INTO temp.sizes VALUES(?,?,?,?)",
                                  ((proc_id,) + r for r in decode_size_counts(data, count)))
        self._sizes_ready = True

    # -- meta -----------------------------------------------------------------------------
    def meta_int(self, key, default=0):
        try:
            return int(self.meta.get(key, default))
        except (TypeError, ValueError):
            return default

    def meta_json(self, key, default=None):
        value = self.meta.get(key)
        if value is None:
            return default
        try:
            return json.loads(value)
        except (TypeError, ValueError):
            return default

    def small_classes(self):
        classes = self.meta_json("small_classes", []) or []
        return sorted({int(c) for c in classes if isinstance(c, (int, float)) and c > 0})

    # -- selections -----------------------------------------------------------------------
    def select(self, pids=None, proc_ids=None, exe_patterns=None):
        """proc_ids chosen by --pid (every image of that pid), --proc and --exe (a shell
        pattern on the executable's path or base name); all by default."""
        chosen = []
        for pattern in exe_patterns or ():
            matches = [p for p, row in self.processes.items()
                       if row.get("exe") and (fnmatch.fnmatchcase(row["exe"], pattern) or
                                              fnmatch.fnmatchcase(os.path.basename(row["exe"]), pattern))]
            if not matches:
                raise ReportError(f"no process in {self.path} runs an executable matching "
                                  f"{pattern!r}", "see the exe column of `mtrace-report summary --json`")
            chosen.extend(matches)
        for pid in pids or ():
            matches = [p for p, row in self.processes.items() if row["pid"] == pid]
            if not matches:
                known = ", ".join(str(row["pid"]) for row in self.processes.values())
                raise ReportError(f"no process with pid {pid} in {self.path} (pids: {known})",
                                  "pick one from `mtrace-report summary`")
            chosen.extend(matches)
        for proc_id in proc_ids or ():
            if proc_id not in self.processes:
                raise ReportError(
                    f"no process with proc_id {proc_id} in {self.path} "
                    f"(1 to {max(self.processes)})", "pick one from `mtrace-report summary`")
            chosen.append(proc_id)
        if not chosen:
            chosen = list(self.processes)
        return sorted(set(chosen))

    def query(self, sql, params=()):
        return self.conn.execute(sql, params)

    def close(self):
        self.conn.close()


def decode_size_counts(data, count):
    """(size, allocs, live_at_exit) of one size_counts row (docs/trace-format.md)."""
    varint = varint_reader(data, "size_counts blob")
    size = 0
    for _ in range(count):
        size += varint()
        packed = varint()
        live = varint() if packed & 1 else 0
        yield size, packed >> 1, live


def in_list(proc_ids):
    """SQL text `(1,2,3)` for a list of proc_ids (integers we produced: safe to inline)."""
    return "(" + ",".join(str(int(p)) for p in proc_ids) + ")"


def window_ns(t_from, t_to):
    """--from/--to in seconds as a (lo, hi) pair of ns, either end None when open."""
    lo = None if t_from is None else int(t_from * NS_PER_S)
    hi = None if t_to is None else int(t_to * NS_PER_S)
    if lo is not None and hi is not None and hi < lo:
        raise ReportError(f"--to {t_to} is before --from {t_from}", "swap them")
    return lo, hi


def _read_header(path):
    try:
        with open(path, "rb") as f:
            return f.read(HEADER_SIZE)
    except PermissionError:
        raise ReportError(f"{path}: permission denied", "check the file's permissions")
    except OSError as e:
        raise ReportError(f"{path}: cannot read it ({e.strerror})", RECORD_HINT)


def _check_not_truncated(path, header):
    """A file shorter than the page count its header declares lost its tail."""
    if len(header) < HEADER_SIZE:
        raise ReportError(f"{path} is truncated (only {len(header)} bytes)",
                          "record the trace again")
    page_size = int.from_bytes(header[HEADER_PAGE_SIZE_OFFSET:HEADER_PAGE_SIZE_OFFSET + 2], "big")
    if page_size == PAGE_SIZE_65536_MARKER:
        page_size = PAGE_SIZE_MAX
    pages = int.from_bytes(header[HEADER_PAGE_COUNT_OFFSET:HEADER_PAGE_COUNT_OFFSET + 4], "big")
    counter = header[HEADER_CHANGE_COUNTER_OFFSET:HEADER_CHANGE_COUNTER_OFFSET + 4]
    valid_for = header[HEADER_VALID_FOR_OFFSET:HEADER_VALID_FOR_OFFSET + 4]
    # The page count is only meaningful when the header says so (SQLite >= 3.7.0 writers),
    # and a -wal file may hold pages the main file does not have yet.
    if counter != valid_for or os.path.exists(path + "-wal"):
        return
    size = os.path.getsize(path)
    if pages and size < pages * page_size:
        raise ReportError(
            f"{path} is truncated ({size} bytes, its header says {pages * page_size})",
            "copy the whole file or record the trace again")


def _connect(path):
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as e:
        raise ReportError(f"{path}: cannot open it as SQLite ({e})", RECORD_HINT)
    conn.create_function("mt_bitlen", 1, bit_length, deterministic=True)
    conn.create_function("mt_basename", 1, basename, deterministic=True)
    return conn


def open_trace(path, warn=None):
    """Open and validate a trace; raise ReportError (exit 2) on anything unusable.

    A trace still being written (meta.complete = 0) is reported with a warning through
    `warn` (default: a line on stderr), as the brief of the collector allows reading it
    while it records."""
    if warn is None:
        def warn(text):
            print(f"mtrace-report: warning: {text}", file=sys.stderr)
    if not os.path.exists(path):
        raise ReportError(f"{path}: no such file", RECORD_HINT)
    if os.path.isdir(path):
        raise ReportError(f"{path} is a directory, not a trace", "give the trace.db file")
    header = _read_header(path)
    if not header:
        raise ReportError(f"{path} is empty (0 bytes): the recording did not start",
                          "look at mtrace-run's messages and record again")
    if not header.startswith(SQLITE_MAGIC):
        raise ReportError(f"{path} is not an SQLite database, so not an mtrace trace",
                          "give the trace.db written by mtrace-run")
    _check_not_truncated(path, header)
    conn = _connect(path)
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise ReportError(f"{path} is an SQLite database but not an mtrace trace "
                              f"(application_id {app_id})", "give the trace.db written by mtrace-run")
        if version > FORMAT_VERSION:
            raise ReportError(f"trace format {version} is newer than this mtrace-report "
                              f"({FORMAT_VERSION})", "upgrade mtrace")
        if version < 1:
            raise ReportError(f"{path} has no trace format version yet: the collector is "
                              "creating it or died while doing so", "record the trace again")
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        required = dict(REQUIRED_COLUMNS)
        required.update(SIZES_COLUMNS[min(version, 2)])
        required.update(STACK_COLUMNS[max(version, 2)])
        missing = [t for t in required if t not in tables]
        if missing:
            raise ReportError(f"{path} lacks table(s) {', '.join(missing)}: "
                              f"not a complete format-{version} trace", "record the trace again")
        for table, columns in required.items():
            have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            lacking = [c for c in columns if c not in have]
            if lacking:
                raise ReportError(f"{path}: table {table} lacks column(s) {', '.join(lacking)}: "
                                  f"not a format-{version} trace", "record the trace again with this mtrace")
        meta = {k: v for k, v in conn.execute("SELECT key, value FROM meta")}
        cols = [d[0] for d in conn.execute("SELECT * FROM processes LIMIT 0").description]
        processes = {}
        for row in conn.execute("SELECT * FROM processes ORDER BY proc_id"):
            rec = dict(zip(cols, row))
            processes[rec["proc_id"]] = rec
    except sqlite3.DatabaseError as e:
        conn.close()
        raise corrupt_error(path, e)
    except ReportError:
        conn.close()
        raise
    trace = Trace(path, conn, meta, processes, version)
    if not processes:
        conn.close()
        if not trace.complete:
            raise ReportError(f"{path} is empty: no process recorded yet (still being "
                              "written, or the recorder died before the first event)",
                              "wait for mtrace-run to finish or record again")
        raise ReportError(f"{path} is empty: no process was recorded",
                          "check that the program ran under mtrace-run")
    if not trace.complete:
        warn(f"{path} is incomplete (still being recorded, or the recorder died): "
             "reporting what it holds so far")
    return trace


def corrupt_error(path, exc):
    return ReportError(f"{path} is corrupt or truncated (SQLite: {exc})",
                       "copy the whole file or record the trace again")


def proc_label(row):
    """`pid 1234 ./prog args` for a processes row (argv shortened for one line)."""
    argv = row.get("argv")
    try:
        args = json.loads(argv) if argv else []
    except (TypeError, ValueError):
        args = [str(argv)]
    if not args and row.get("exe"):
        args = [row["exe"]]
    text = " ".join(str(a) for a in args)
    limit = 60
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return f"pid {row['pid']} {text}".rstrip()
