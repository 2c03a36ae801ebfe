"""The collector (mtrace-run) against a fake producer that speaks trace/wire.h by hand
(tests/progs/fake_producer.c): every number in trace.db is known in advance."""
import json
import re
import signal
import sqlite3
import time

import pytest

from conftest import ROOT, run

FAKE_SRC = ROOT / "tests" / "progs" / "fake_producer.c"

# docs/trace-format.md, format v3: every table and its columns, in order.
SCHEMA = {
    "meta": ["key", "value"],
    "processes": ["proc_id", "pid", "ppid", "parent_proc_id", "exe", "argv", "start_ns", "end_ns",
                  "exit_code", "exit_signal", "end_reason", "events", "dropped", "peak_bytes",
                  "peak_ns", "leak_scan"],
    "threads": ["proc_id", "thread_idx", "tid", "name", "start_ns", "end_ns", "events"],
    "modules": ["module_id", "path", "build_id"],
    "mappings": ["proc_id", "module_id", "start", "end", "bias"],
    "frames": ["frame_id", "module_id", "offset", "function", "file", "line", "inlined"],
    "stack_nodes": ["node_id", "parent_id", "frame_id"],
    "stacks": ["stack_id", "depth", "node_id"],
    "event_chunks": ["chunk_id", "proc_id", "first_seq", "count", "first_ns", "last_ns", "data"],
    "op_counts": ["proc_id", "op", "calls", "bytes"],
    "stack_stats": ["proc_id", "stack_id", "allocs", "alloc_bytes", "frees", "freed_bytes",
                    "free_calls", "reallocs", "peak_bytes", "at_peak_bytes", "temporary",
                    "min_size", "max_size", "leaked_blocks", "leaked_bytes", "reachable_blocks",
                    "reachable_bytes"],
    "size_counts": ["proc_id", "count", "data"],
    "snapshots": ["proc_id", "snap_id", "ts_ns", "seq", "requested", "blocks", "in_use", "mapped",
                  "committed", "free_bytes", "largest_free"],
    "snapshot_classes": ["proc_id", "snap_id", "block_size", "live", "capacity"],
    "snapshot_sizes": ["proc_id", "snap_id", "bucket", "live", "bytes"],
    "live_at_exit": ["proc_id", "ptr", "size", "stack_id", "thread_idx", "alloc_ns", "seq", "status"],
    "errors": ["proc_id", "ts_ns", "thread_idx", "kind", "ptr", "size", "function", "detail",
               "stack_id", "alloc_stack_id", "free_stack_id"],
    "marks": ["proc_id", "ts_ns", "label"],
}

MALLOC, CALLOC, REALLOC, FREE = 1, 2, 3, 10


def site_line(name):
    """Line of the `SITE:<name>` marker in the fake producer's source."""
    for number, line in enumerate(FAKE_SRC.read_text().splitlines(), 1):
        if f"SITE:{name} " in line + " ":
            return number
    raise AssertionError(name)


def decode_varints(data):
    values, value, shift = [], 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            values.append(value)
            value, shift = 0, 0
    assert shift == 0, "truncated varint"
    return values


def unzigzag(z):
    return (z >> 1) ^ -(z & 1)


def unptr(v):
    """A pointer difference (format 2): flag bit clear means units of 16 bytes."""
    return unzigzag(v >> 1) if v & 1 else unzigzag(v >> 1) * 16


def decode_chunk(first_ns, data):
    """Events of one chunk as dicts (docs/trace-format.md, `event_chunks`, format 2: free
    has no size and no aux, malloc and calloc no aux)."""
    v = iter(decode_varints(data))
    events, ts, ptr = [], first_ns, 0
    for op_thread in v:
        op = op_thread & 0xF
        ts += next(v)
        ptr += unptr(next(v))
        size = 0 if op == FREE else next(v)
        stack = next(v)
        if op in (REALLOC, 4):
            aux = ptr + unptr(next(v))
        else:
            aux = 0 if op in (MALLOC, CALLOC, FREE) else next(v)
        events.append(dict(op=op, thread=op_thread >> 4, ts=ts, ptr=ptr, size=size, stack=stack, aux=aux))
    return events


def sizes_of(db, proc_id):
    """(size, allocs, live_at_exit) ascending, from size_counts (format 2)."""
    out = []
    for count, data in db.execute("SELECT count, data FROM size_counts WHERE proc_id=?", (proc_id,)):
        v = iter(decode_varints(data))
        size = 0
        for _ in range(count):
            size += next(v)
            packed = next(v)
            out.append((size, packed >> 1, next(v) if packed & 1 else 0))
    return sorted(out)


def events_of(db, proc_id):
    out = []
    rows = db.execute("SELECT first_seq, count, first_ns, data FROM event_chunks WHERE proc_id=? "
                      "ORDER BY first_seq", (proc_id,))
    for first_seq, count, first_ns, data in rows:
        assert first_seq == len(out)
        chunk = decode_chunk(first_ns, data)
        assert len(chunk) == count
        out += chunk
    return out


def innermost(db):
    """stack_id -> name of the function at position 0."""
    rows = db.execute("SELECT s.stack_id, f.function FROM stacks s JOIN stack_nodes n USING(node_id) "
                      "JOIN frames f ON f.frame_id = n.frame_id")
    names = {sid: fn for sid, fn in rows}
    names[0] = None
    return names


@pytest.fixture(scope="module")
def scenario(build, tmp_path_factory):
    out = tmp_path_factory.mktemp("collector") / "t.db"
    res = run([str(build / "mtrace-run"), "--no-preload", "-o", str(out), "--",
               str(build / "progs" / "fake_producer")], timeout=60)
    db = sqlite3.connect(str(out))
    yield res, db
    db.close()


def test_exit_status_and_summary(scenario):
    res, _ = scenario
    # The last image exits with 3 (after exec); the summary counts all three images.
    assert res.returncode == 3, res.stderr
    assert re.fullmatch(rb"mtrace-run: 19 events from 3 processes in \S+ \(\d+\.\d MiB\)\n", res.stderr)


def test_schema_and_pragmas(scenario):
    _, db = scenario
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == set(SCHEMA)
    for table, columns in SCHEMA.items():
        assert [r[1] for r in db.execute(f"PRAGMA table_info({table})")] == columns, table
    views = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='view'")}
    assert views == {"stack_frames"}
    assert [r[1] for r in db.execute("PRAGMA table_info(stack_frames)")] == ["stack_id", "pos", "frame_id"]
    assert db.execute("PRAGMA application_id").fetchone()[0] == 1836348003
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3


def test_meta(scenario, build):
    _, db = scenario
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert meta["complete"] == 1
    assert meta["format_version"] == 3
    assert meta["events"] == 19
    assert meta["dropped"] == 0
    assert meta["page_size"] == 4096
    assert json.loads(meta["small_classes"]) == [16, 32, 48]
    assert json.loads(meta["command"]) == [str(build / "progs" / "fake_producer")]
    options = json.loads(meta["options"])
    assert options["MTRACE_DEPTH"] == 64 and options["MTRACE_LEAK_SCAN"] == "on"
    assert meta["duration_ns"] > 0 and meta["start_unix_ns"] > 1_600_000_000 * 10**9
    assert meta["stack_depth"] == 64


def test_processes(scenario):
    _, db = scenario
    rows = db.execute("SELECT proc_id, parent_proc_id, end_reason, exit_code, exit_signal, events, peak_bytes, "
                      "leak_scan, json_extract(argv, '$[1]'), pid FROM processes ORDER BY proc_id").fetchall()
    (p1, p2, p3) = rows
    assert p1[:9] == (1, None, "exec", None, None, 8, 500, 1, None)
    # The forked child was SIGKILLed: no exit record, not the launched program.
    assert p2[:9] == (2, 1, "lost", None, None, 2, 134, 0, None)
    # The exec'd image: same pid, its parent is the image it replaced.
    assert p3[:9] == (3, 1, "exit", 3, None, 9, 186, 1, "--exec-image")
    assert p3[9] == p1[9] and p2[9] != p1[9]
    times = dict((r[0], r[1:]) for r in db.execute("SELECT proc_id, start_ns, end_ns FROM processes"))
    assert all(0 < start <= end for start, end in times.values())
    assert times[1][1] == times[3][0]  # the replaced image ends when the new one starts
    duration = dict(db.execute("SELECT key, value FROM meta"))["duration_ns"]
    assert duration == max(end for _, end in times.values())
    threads = db.execute("SELECT proc_id, thread_idx, name, events FROM threads ORDER BY 1, 2").fetchall()
    assert threads == [(1, 0, "main", 7), (1, 1, "worker", 1), (2, 0, "child", 2), (3, 0, "main", 9)]
    spans = db.execute("SELECT start_ns, end_ns FROM threads").fetchall()
    assert all(0 < start <= end for start, end in spans)


def test_events_decode(scenario):
    _, db = scenario
    names = innermost(db)
    ev = [(e["op"], e["thread"], e["ptr"], e["size"], names[e["stack"]], e["aux"]) for e in events_of(db, 1)]
    assert ev == [
        (MALLOC, 0, 0x1000, 100, "site_alpha", 0),
        (MALLOC, 0, 0x2000, 200, "beta_inner", 0),
        (FREE, 0, 0x1000, 0, "site_gamma", 0),
        (MALLOC, 0, 0x3000, 300, "site_alpha", 0),
        (FREE, 0, 0x3000, 0, "site_gamma", 0),
        (REALLOC, 0, 0x4000, 400, "site_alpha", 0x2000),
        (MALLOC, 1, 0x5000, 50, "site_delta", 0),
        (REALLOC, 0, 0x6000, 16, None, 0),  # realloc(NULL, 16): old pointer 0
    ]
    times = [e["ts"] for e in events_of(db, 1)]
    assert times == sorted(times)
    child = [(e["op"], e["ptr"], e["size"]) for e in events_of(db, 2)]
    assert child == [(MALLOC, 0x7000, 70), (CALLOC, 0x7100, 64)]


def test_op_counts_and_sizes(scenario):
    _, db = scenario
    assert db.execute("SELECT op, calls, bytes FROM op_counts WHERE proc_id=1 ORDER BY op").fetchall() == [
        (MALLOC, 4, 650), (REALLOC, 2, 416), (FREE, 2, 0)]
    assert sizes_of(db, 1) == [
        (16, 1, 1), (50, 1, 1), (100, 1, 0), (200, 1, 0), (300, 1, 0), (400, 1, 1)]


def test_stack_stats(scenario):
    _, db = scenario
    names = innermost(db)
    rows = db.execute("SELECT * FROM stack_stats WHERE proc_id=1").fetchall()
    stats = {names[r[1]]: r[2:] for r in rows}
    # allocs, alloc_bytes, frees, freed_bytes, free_calls, reallocs, peak_bytes, at_peak_bytes,
    # temporary, min_size, max_size, leaked_blocks, leaked_bytes, reachable_blocks, reachable_bytes
    assert stats == {
        # A (freed later), C (freed before the next allocation: temporary), D by realloc
        # (leaked). Peak of the process (500) was A gone, B and C live.
        "site_alpha": (3, 800, 2, 400, 0, 1, 400, 300, 1, 100, 400, 1, 400, 0, 0),
        "beta_inner": (1, 200, 1, 200, 0, 0, 200, 200, 0, 200, 200, 0, 0, 0, 0),
        "site_gamma": (0, 0, 0, 0, 2, 0, 0, 0, 0, None, None, 0, 0, 0, 0),
        "site_delta": (1, 50, 0, 0, 0, 0, 50, 0, 0, 50, 50, 0, 0, 1, 50),
        None: (1, 16, 0, 0, 0, 1, 16, 0, 0, 16, 16, 0, 0, 1, 16),
    }
    assert db.execute("SELECT peak_bytes FROM processes WHERE proc_id=1").fetchone() == (500,)
    # After exec: two mallocs, free of the first, free of the second (temporary: freeing
    # another block in between does not matter, only an allocation would); a malloc; three
    # region pushes and a pop that frees two of them (one call).
    assert db.execute("SELECT allocs, frees, free_calls, temporary FROM stack_stats WHERE proc_id=3").fetchall() == [
        (6, 4, 3, 1)]
    assert db.execute("SELECT op, calls, bytes FROM op_counts WHERE proc_id=3 ORDER BY op").fetchall() == [
        (MALLOC, 3, 247), (FREE, 2, 0), (11, 3, 96), (12, 1, 0)]


def test_live_at_exit(scenario):
    _, db = scenario
    rows = db.execute("SELECT proc_id, ptr, size, thread_idx, seq, status FROM live_at_exit ORDER BY 1, 2").fetchall()
    assert rows == [
        (1, 0x4000, 400, 0, 5, "leaked"),
        (1, 0x5000, 50, 1, 6, "reachable"),
        (1, 0x6000, 16, 0, 7, "reachable"),
        (2, 0x7000, 70, 0, 0, "unknown"),
        (2, 0x7100, 64, 0, 1, "unknown"),
        (3, 0x9000, 90, 0, 4, "reachable"),
        (3, 0xA000, 32, 0, 5, "reachable"),  # the region push below the pop's position
    ]


def test_symbols(scenario, build):
    _, db = scenario
    modules = dict(db.execute("SELECT module_id, path FROM modules"))
    exe_module = [m for m, p in modules.items() if p == str(build / "progs" / "fake_producer")]
    assert len(exe_module) == 1
    build_id = db.execute("SELECT build_id FROM modules WHERE module_id=?", exe_module).fetchone()[0]
    assert build_id and re.fullmatch(r"[0-9a-f]{40}", build_id)

    def stack_of(first_function):
        sid = [s for s, n in innermost(db).items() if n == first_function][0]
        return db.execute("SELECT f.function, f.file, f.line, f.inlined, f.module_id FROM stack_frames sf "
                          "JOIN frames f USING(frame_id) WHERE sf.stack_id=? ORDER BY pos", (sid,)).fetchall()

    src = "tests/progs/fake_producer.c"
    alpha = stack_of("site_alpha")
    assert alpha[0] == ("site_alpha", src, site_line("alpha"), 0, exe_module[0])
    assert alpha[1][0] == "scenario" and alpha[1][3] == 0
    # An always_inline function: the inlined frame first, then the function it is in.
    beta = stack_of("beta_inner")
    assert beta[0] == ("beta_inner", src, site_line("beta_inner"), 1, exe_module[0])
    assert beta[1] == ("site_beta", src, site_line("beta"), 0, exe_module[0])
    # The fork child's stacks are the parent's code: shared stack ids across processes.
    child_stacks = {r[0] for r in db.execute("SELECT stack_id FROM stack_stats WHERE proc_id=2")}
    parent_stacks = {r[0] for r in db.execute("SELECT stack_id FROM stack_stats WHERE proc_id=1")}
    assert len(child_stacks) == 2 and child_stacks & parent_stacks == set()  # other caller line
    assert db.execute("SELECT count(*) FROM stacks s WHERE depth != "
                      "(SELECT count(*) FROM stack_frames f WHERE f.stack_id = s.stack_id)").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM mappings WHERE proc_id=1 AND module_id=?", exe_module).fetchone() == (1,)


def test_stack_trie(scenario):
    """Format v3 stores stacks as a prefix trie: one node per distinct (caller's node,
    frame), each stack naming its innermost node; the stack_frames view unfolds it."""
    _, db = scenario
    nodes = db.execute("SELECT node_id, parent_id, frame_id FROM stack_nodes").fetchall()
    assert len({(p, f) for _, p, f in nodes}) == len(nodes)
    assert all(p is None or p < n for n, p, _ in nodes)  # a caller's node is created first
    node_of = {n: (p, f) for n, p, f in nodes}
    used = {n for (n,) in db.execute("SELECT node_id FROM stacks")} | {p for _, p, _ in nodes if p}
    assert used == set(node_of)  # no node lies on no stack
    for sid, depth, node in db.execute("SELECT stack_id, depth, node_id FROM stacks").fetchall():
        walked = []
        while node is not None:
            node, frame = node_of[node]
            walked.append(frame)
        assert len(walked) == depth
        assert walked == [f for (f,) in db.execute(
            "SELECT frame_id FROM stack_frames WHERE stack_id = ? ORDER BY pos", (sid,))]


def test_snapshot_mark_error(scenario):
    _, db = scenario
    snap = db.execute("SELECT snap_id, seq, requested, blocks, in_use, mapped, committed, free_bytes, largest_free "
                      "FROM snapshots WHERE proc_id=1").fetchall()
    assert snap == [(1, 6, 400, 1, 1024, 1 << 20, 65536, 4096, 2048)]
    assert db.execute("SELECT block_size, live, capacity FROM snapshot_classes WHERE proc_id=1 ORDER BY 1").fetchall() \
        == [(16, 1, 256), (48, 2, 85), (4096, 1, None)]
    assert db.execute("SELECT bucket, live, bytes FROM snapshot_sizes WHERE proc_id=1").fetchall() == [(9, 1, 400)]
    assert db.execute("SELECT label FROM marks WHERE proc_id=1").fetchall() == [("phase two",)]
    names = innermost(db)
    err = db.execute("SELECT kind, ptr, size, function, detail, stack_id, alloc_stack_id, free_stack_id, thread_idx "
                     "FROM errors").fetchall()
    assert len(err) == 1
    kind, ptr, size, function, detail, stack, alloc_stack, free_stack, thread = err[0]
    assert (kind, ptr, size, function, detail, thread) == ("double free", 0x1000, 100, "free()", "second", 0)
    assert (names[stack], names[alloc_stack], names[free_stack]) == ("site_gamma", "site_alpha", "site_gamma")


def test_block_query_answer(scenario):
    res, _ = scenario
    text = res.stdout.decode()
    info = text.split("BLOCK_INFO_BEGIN\n")[1].split("BLOCK_INFO_END")[0].splitlines()
    alpha, gamma = site_line("alpha"), site_line("gamma")
    assert re.fullmatch(rf"    allocated by thread 0 at 0x[0-9a-f]+ in site_alpha \(tests/progs/fake_producer.c:{alpha}\)",
                        info[0])
    freed = [line for line in info if line.startswith("    freed by")]
    assert len(freed) == 1
    assert re.fullmatch(rf"    freed by thread 0 at 0x[0-9a-f]+ in site_gamma \(tests/progs/fake_producer.c:{gamma}\)",
                        freed[0])


def test_block_query_unknown_block(scenario):
    res, _ = scenario
    assert b"UNKNOWN_BLOCK found=0 len=0\n" in res.stdout


def test_depth_option_reaches_program_and_meta(build, tmp_path):
    out = tmp_path / "d.db"
    res = run([str(build / "mtrace-run"), "--no-preload", "--depth=8", "-q", "-o", str(out), "--", "sh", "-c",
               'test "$MTRACE_DEPTH" = 8 && test -n "$MTRACE_SOCKET" && test -n "$MTRACE_CONN_FD"'])
    assert res.returncode == 0, res.stderr
    db = sqlite3.connect(str(out))
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert meta["stack_depth"] == 8 and json.loads(meta["options"])["MTRACE_DEPTH"] == 8


def test_missing_library_is_an_error(build, tmp_path):
    res = run([str(build / "mtrace-run"), "-o", str(tmp_path / "t.db"), "--", "true"],
              env_extra={"MTRACE_LIB": str(tmp_path / "nope.so")})
    assert res.returncode == 127
    assert res.stderr == f"mtrace-run: error: MTRACE_LIB={tmp_path / 'nope.so'}: No such file or directory\n".encode()


def test_out_of_order_records_in_one_ring_are_applied_in_seq_order(build, tmp_path):
    out = tmp_path / "o.db"
    res = run([str(build / "mtrace-run"), "--no-preload", "-q", "-o", str(out), "--",
               str(build / "progs" / "fake_producer"), "--nested"], timeout=60)
    assert res.returncode == 0, res.stderr
    db = sqlite3.connect(str(out))
    got = [(e["op"], e["ptr"], e["size"], e["thread"]) for e in events_of(db, 1)]
    expected = []
    for r in range(1, 4):
        p = 0x100000 * r
        expected += [(MALLOC, p + 0x100, 2, 0), (FREE, p + 0x100, 0, 0), (MALLOC, p, 1, 0), (MALLOC, p + 0x200, 3, 0)]
    # (Both rings are the same thread's: one tid, one thread_idx.)
    assert got == expected
    # The handler's block was freed before the interrupted malloc: a temporary, not live.
    assert db.execute("SELECT count(*), sum(size) FROM live_at_exit").fetchone() == (6, 12)


def test_trace_readable_while_recording(build, tmp_path):
    """A reader may open the trace while it is written: schema there, complete = 0; and
    the reader's open connection does not stop the collector from finishing it."""
    import subprocess
    out = tmp_path / "h.db"
    proc = subprocess.Popen([str(build / "mtrace-run"), "--no-preload", "-q", "-o", str(out), "--",
                             str(build / "progs" / "fake_producer"), "--hold"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        reader = sqlite3.connect(str(out))
        meta = dict(reader.execute("SELECT key, value FROM meta"))
        assert meta["complete"] == 0
        assert reader.execute("PRAGMA application_id").fetchone()[0] == 1836348003
        # A quiet process's events reach the file within a second or so, chunk not full.
        deadline = time.monotonic() + 30
        while not reader.execute("SELECT count(*) FROM event_chunks").fetchone()[0]:
            assert time.monotonic() < deadline, "the partial chunk never reached the file"
            time.sleep(0.05)
        assert reader.execute("SELECT proc_id, first_seq, count FROM event_chunks").fetchall() == [(1, 0, 1)]
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        assert dict(reader.execute("SELECT key, value FROM meta"))["complete"] == 1
        assert reader.execute("SELECT events FROM processes").fetchall() == [(1,)]
        reader.close()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigkill_keeps_every_published_event(build, tmp_path):
    out = tmp_path / "k.db"
    n = 200_000  # several times the ring: the producer waits for the collector on the way
    res = run([str(build / "mtrace-run"), "--no-preload", "-q", "-o", str(out), "--",
               str(build / "progs" / "fake_producer"), "--flood", str(n)], timeout=60)
    assert res.returncode == 128 + signal.SIGKILL
    assert res.stderr == b""
    db = sqlite3.connect(str(out))
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert (meta["complete"], meta["events"], meta["dropped"], meta["unrecorded"]) == (1, n, 7, 2)
    assert db.execute("SELECT events, dropped, end_reason, exit_signal, exit_code FROM processes").fetchall() == [
        (n, 7, "signal", signal.SIGKILL, None)]
    events = events_of(db, 1)
    assert len(events) == n
    assert [e["ptr"] for e in events[-2:]] == [0x10000 + (n // 2 - 1) * 64] * 2
    assert db.execute("SELECT count(*) FROM live_at_exit").fetchone() == (0,)


def test_corrupt_records_do_not_crash_the_collector(build, tmp_path):
    out = tmp_path / "g.db"
    res = run([str(build / "mtrace-run"), "--no-preload", "-q", "-o", str(out), "--",
               str(build / "progs" / "fake_producer"), "--garbage", "20000"], timeout=120)
    assert res.returncode == 128 + signal.SIGKILL, res.stderr
    db = sqlite3.connect(str(out))
    assert dict(db.execute("SELECT key, value FROM meta"))["complete"] == 1
    assert db.execute("SELECT count(*) FROM processes").fetchone() == (1,)


def test_gap_that_never_fills_does_not_deadlock_the_program(build, tmp_path):
    """A number taken and never published (a signal handler left its record by longjmp)
    while the process lives and waits for ring space behind it: the collector gives the
    gap up rather than wait forever."""
    out = tmp_path / "gap.db"
    n = 100_000  # more than the fake's 64K-cell ring: the producer must wait for us
    res = run([str(build / "mtrace-run"), "--no-preload", "-q", "-o", str(out), "--",
               str(build / "progs" / "fake_producer"), "--gap", str(n)], timeout=120)
    assert res.returncode == 0, res.stderr
    db = sqlite3.connect(str(out))
    assert db.execute("SELECT events, end_reason FROM processes").fetchall() == [(n + 1, "exit")]
    assert db.execute("SELECT count(*), sum(size) FROM live_at_exit").fetchone() == (1, 12)


def test_missing_program(build, tmp_path):
    res = run([str(build / "mtrace-run"), "--no-preload", "-o", str(tmp_path / "t.db"), "--",
               "no-such-program-mtrace"])
    assert res.returncode == 127
    assert res.stderr == b"mtrace-run: error: cannot run 'no-such-program-mtrace': No such file or directory\n"
    assert not (tmp_path / "t.db").exists()


def test_unwritable_output(build, tmp_path):
    marker = tmp_path / "ran"
    res = run([str(build / "mtrace-run"), "--no-preload", "-o", str(tmp_path / "no" / "dir" / "t.db"), "--",
               "touch", str(marker)])
    assert res.returncode == 1
    assert res.stderr.count(b"\n") == 1
    assert res.stderr.startswith(b"mtrace-run: error: cannot write '") and b"t.db" in res.stderr
    assert not marker.exists(), "the program must not run when the trace cannot be written"


def test_usage_errors(build):
    res = run([str(build / "mtrace-run")])
    assert res.returncode == 2 and res.stderr.startswith(b"mtrace-run: error: no program given")
    res = run([str(build / "mtrace-run"), "--depth", "0", "--", "true"])
    assert res.returncode == 2
    assert res.stderr == b"mtrace-run: error: --depth 0: expected a whole number from 1 to 256\n"
    res = run([str(build / "mtrace-run"), "--frobnicate", "--", "true"])
    assert res.returncode == 2 and b"unknown option '--frobnicate'" in res.stderr


def test_help_lists_every_option(build, root):
    res = run([str(build / "mtrace-run"), "--help"])
    assert res.returncode == 0
    names = set(re.findall(r'"(MTRACE_[A-Z_]+)"', (root / "common" / "options.h").read_text()))
    missing = [n for n in names if n.encode() not in res.stdout]
    assert not missing


def test_untraced_program_status(build, tmp_path):
    """A program that never says HELLO: the trace is still complete, the status passed on."""
    out = tmp_path / "u.db"
    res = run([str(build / "mtrace-run"), "--no-preload", "-q", "-o", str(out), "--", "sh", "-c", "exit 7"])
    assert res.returncode == 7
    db = sqlite3.connect(str(out))
    assert dict(db.execute("SELECT key, value FROM meta"))["complete"] == 1
    assert db.execute("SELECT count(*) FROM processes").fetchone() == (0,)


def test_no_follow_traces_only_the_first_image(build, tmp_path):
    out = tmp_path / "n.db"
    res = run([str(build / "mtrace-run"), "--no-preload", "--no-follow", "-q", "-o", str(out), "--",
               str(build / "progs" / "fake_producer"), "--rejectable"], timeout=60)
    assert res.returncode == 4, res.stderr  # the exec'd image was refused and said so
    db = sqlite3.connect(str(out))
    assert db.execute("SELECT proc_id, end_reason, events FROM processes").fetchall() == [(1, "exec", 8)]
    assert json.loads(dict(db.execute("SELECT key, value FROM meta"))["options"])["MTRACE_FOLLOW_CHILDREN"] == "off"


def test_recorder_of_another_wire_version_is_refused_not_left_waiting(build, tmp_path):
    out = tmp_path / "v.db"
    res = run([str(build / "mtrace-run"), "--no-preload", "-q", "-o", str(out), "--",
               str(build / "progs" / "fake_producer"), "--rejectable"],
              env_extra={"FAKE_WIRE_VERSION": "1"}, timeout=60, text=True)
    assert res.returncode == 4, res.stderr  # refused: it ran untraced
    assert "mtrace: warning: a traced process speaks trace wire version 1, this collector" in res.stderr
    db = sqlite3.connect(str(out))
    assert db.execute("SELECT count(*) FROM processes").fetchone() == (0,)


def test_skip_pattern_refuses_matching_executables(build, tmp_path):
    out = tmp_path / "s.db"
    res = run([str(build / "mtrace-run"), "--no-preload", "--skip", "nothing*", "--skip", "fake_*", "-q",
               "-o", str(out), "--", str(build / "progs" / "fake_producer"), "--rejectable"], timeout=60)
    assert res.returncode == 4, res.stderr
    db = sqlite3.connect(str(out))
    assert db.execute("SELECT count(*) FROM processes").fetchone() == (0,)
    assert json.loads(dict(db.execute("SELECT key, value FROM meta"))["options"])["MTRACE_SKIP"] == "nothing*:fake_*"


def test_collector_fd_mode_trace_final_before_program_returns(build, tmp_path):
    """A plain LD_PRELOAD run: the program starts `mtrace-run --collector-fd N` on its own
    listening socket; being the root, it waits at exit until the trace is final."""
    import os
    import socket
    import subprocess
    out = tmp_path / "p.db"
    name = f"@mtrace-test-{os.getpid()}-{id(tmp_path)}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind("\0" + name[1:])
    listener.listen(16)
    collector = subprocess.Popen([str(build / "mtrace-run"), "--collector-fd", str(listener.fileno()), "-q",
                                  "-o", str(out)], pass_fds=[listener.fileno()])
    listener.close()
    try:
        res = run([str(build / "progs" / "fake_producer"), "--preload-mode"], env_extra={"MTRACE_SOCKET": name},
                  timeout=60)
        assert res.returncode == 5, res.stderr
        # No waiting for the collector: the program returned, so the trace is final.
        db = sqlite3.connect(str(out))
        assert dict(db.execute("SELECT key, value FROM meta"))["complete"] == 1
        assert db.execute("SELECT end_reason, exit_code, events FROM processes").fetchall() == [("exit", 5, 1)]
        db.close()
        assert collector.wait(timeout=60) == 0
    finally:
        if collector.poll() is None:
            collector.kill()


def test_trace_bigger_than_the_wal_bound_is_whole(build, tmp_path):
    """~100 MiB of event chunks: the WAL reaches the writer's 64 MiB bound (sink.c), so the
    checkpointer thread, the writer's own catch-up checkpoint and the final TRUNCATE all
    run; every event must be in the file, which ends as one rollback-journal file."""
    n = 12_000_000
    out = tmp_path / "t.db"
    res = run([str(build / "mtrace-run"), "--no-preload", "-q", "-o", str(out), "--",
               str(build / "progs" / "fake_producer"), "--bench", str(n), "2"], timeout=120)
    assert res.returncode == 0, res.stderr
    assert out.stat().st_size > 64 << 20
    assert not (tmp_path / "t.db-wal").exists()
    db = sqlite3.connect(str(out))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT value FROM meta WHERE key = 'complete'").fetchone()[0] == 1
    events = db.execute("SELECT events FROM processes").fetchone()[0]
    assert events >= n
    assert db.execute("SELECT SUM(count) FROM event_chunks").fetchone()[0] == events
    (first, last), = db.execute("SELECT MIN(first_seq), MAX(first_seq + count) FROM event_chunks")
    assert (first, last) == (0, events)
    db.close()
