"""The whole recording pipeline end to end: real programs under build/mtrace-run (which
preloads build/libmtrace.so), checked exactly from the trace.db it writes.

The programs (tests/progs/e2e_*) make a known number of calls of each malloc-family
function with marker sizes that libc never uses, so the decoded events can be counted
exactly among libc's own calls. Every recording is also checked for what must hold of any
trace: SQLite's integrity check passes, meta.complete = 1, nothing dropped or unrecorded,
and each process's event count is the same in processes, op_counts and event_chunks.
"""
import collections
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys

import pytest

import realprogs
from conftest import BUILD, ROOT

sys.path.insert(0, str(ROOT / "tools"))
from mtrace_report.db import decode_size_counts  # noqa: E402
from mtrace_report.events import decode_chunk  # noqa: E402

MTRACE_RUN = BUILD / "mtrace-run"
PROGS = BUILD / "progs"
CALLS = PROGS / "e2e_calls"
TIMEOUT = 120

# op numbers (docs/trace-format.md, "Operations")
MALLOC, CALLOC, REALLOC, REALLOCARRAY, POSIX_MEMALIGN, ALIGNED_ALLOC, MEMALIGN, VALLOC, PVALLOC = range(1, 10)
FREE = 10

# e2e_calls.c: CALLS_PER_FUNCTION calls of each function at its marker size, once per
# make_calls(); every block freed but SIZE_KEPT and SIZE_LEAKED.
PER_FUNCTION = 100
SIZE_KEPT, SIZE_LEAKED = 40021, 40023
MAKE_CALLS = {
    (MALLOC, 40001): PER_FUNCTION,
    (CALLOC, 40005): PER_FUNCTION,
    (REALLOC, 40007): PER_FUNCTION,
    (REALLOC, 40009): PER_FUNCTION,
    (REALLOCARRAY, 40011): PER_FUNCTION,
    (POSIX_MEMALIGN, 40013): PER_FUNCTION,
    (ALIGNED_ALLOC, 40064): PER_FUNCTION,
    (MEMALIGN, 40015): PER_FUNCTION,
    (VALLOC, 40017): PER_FUNCTION,
    (PVALLOC, 40019): PER_FUNCTION,
    (MALLOC, SIZE_KEPT): 1,
    (MALLOC, SIZE_LEAKED): 1,
    # one free per chain: 9 functions (realloc's two calls make one chain)
    (FREE, "marker"): 9 * PER_FUNCTION,
}
THREADS, THREAD_PAIRS, SIZE_THREAD = 8, 125000, 40025
TREE_BASE = 40100


# ---- helpers ---------------------------------------------------------------------------------

def record(tmp_path, argv, env=None, options=(), **kw):
    """Run argv under mtrace-run -q -o tmp_path/t.db; returns (CompletedProcess, db)."""
    out = tmp_path / "t.db"
    res = subprocess.run([str(MTRACE_RUN), "-q", *options, "-o", str(out), "--", *map(str, argv)],
                         env=realprogs.clean_env(env), capture_output=True, timeout=TIMEOUT, **kw)
    assert out.exists(), res.stderr
    return res, sqlite3.connect(str(out))


def check_trace_whole(db):
    """What holds of every finished trace, whatever the program did."""
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert meta["complete"] == 1
    assert meta["dropped"] == 0 and meta["unrecorded"] == 0
    # The collector did the work of every event: its CPU is measured, not left out.
    assert isinstance(meta["collector_cpu_ns"], int) and meta["collector_cpu_ns"] > 0
    total = 0
    for proc_id, events, dropped in db.execute("SELECT proc_id, events, dropped FROM processes"):
        chunked = db.execute("SELECT coalesce(sum(count), 0) FROM event_chunks WHERE proc_id = ?",
                             (proc_id,)).fetchone()[0]
        calls = db.execute("SELECT coalesce(sum(calls), 0) FROM op_counts WHERE proc_id = ?",
                           (proc_id,)).fetchone()[0]
        assert chunked == events == calls, f"proc {proc_id}: chunks {chunked}, processes {events}, op_counts {calls}"
        assert dropped == 0
        total += events
    assert meta["events"] == total
    return meta


def events(db, proc_id):
    rows = db.execute("SELECT count, first_ns, data FROM event_chunks WHERE proc_id = ? ORDER BY first_seq",
                      (proc_id,))
    for count, first_ns, data in rows:
        yield from decode_chunk(data, count, first_ns)


def marker_counts(db, proc_id, is_marker):
    """(op, size) -> calls for allocations whose size is_marker(size), and (FREE, "marker")
    for frees of blocks allocated at a marker size in this process."""
    counts = collections.Counter()
    live = set()
    for op, _thread, _ts, ptr, size, _stack, aux in events(db, proc_id):
        if op == FREE:
            if ptr in live:
                live.discard(ptr)
                counts[(FREE, "marker")] += 1
            continue
        if op in (REALLOC, REALLOCARRAY):
            live.discard(aux)
        if is_marker(size):
            counts[(op, size)] += 1
            live.add(ptr)
    return counts


def is_calls_marker(size):
    return 40000 <= size < 40100


def processes(db):
    return db.execute("SELECT proc_id, parent_proc_id, end_reason, exit_code, exit_signal, leak_scan, argv "
                      "FROM processes ORDER BY proc_id").fetchall()


def site_stats(db, proc_id):
    """Innermost function -> (allocs, alloc_bytes, leaked_blocks, leaked_bytes, reachable_blocks,
    reachable_bytes), summed over the stacks whose innermost frame is that function."""
    rows = db.execute(
        "SELECT f.function, s.allocs, s.alloc_bytes, s.leaked_blocks, s.leaked_bytes, s.reachable_blocks, "
        "s.reachable_bytes FROM stack_stats s JOIN stacks st ON st.stack_id = s.stack_id "
        "JOIN stack_nodes n ON n.node_id = st.node_id JOIN frames f ON f.frame_id = n.frame_id "
        "WHERE s.proc_id = ?", (proc_id,))
    out = {}
    for fn, *vals in rows:
        prev = out.get(fn, (0,) * len(vals))
        out[fn] = tuple(a + b for a, b in zip(prev, vals))
    return out


# ---- 1. nothing lost, however the process ends -----------------------------------------------

ENDINGS = {
    # mode: (mtrace-run's status, end_reason, exit_code, exit_signal, leak scan ran)
    "return": (5, "exit", 5, None, True),
    "exit": (6, "exit", 6, None, True),
    "_exit": (7, "exit", 7, None, False),
    "abort": (128 + 6, "signal", None, 6, False),
    "segv": (128 + 11, "signal", None, 11, False),
    "sigkill": (128 + 9, "signal", None, 9, False),
}


@pytest.mark.parametrize("mode", list(ENDINGS))
def test_every_call_recorded_however_the_process_ends(tmp_path, mode):
    status, reason, code, sig, scanned = ENDINGS[mode]
    res, db = record(tmp_path, [CALLS, mode])
    assert res.returncode == status, res.stderr
    check_trace_whole(db)
    assert processes(db) == [(1, None, reason, code, sig, int(scanned), json.dumps([str(CALLS), mode],
                                                                                    separators=(",", ":")))]
    assert marker_counts(db, 1, is_calls_marker) == MAKE_CALLS
    statuses = dict(db.execute("SELECT size, status FROM live_at_exit WHERE proc_id = 1 AND size IN (?, ?)",
                               (SIZE_KEPT, SIZE_LEAKED)))
    every_status = {s for (s,) in db.execute("SELECT DISTINCT status FROM live_at_exit WHERE proc_id = 1")}
    if scanned:
        assert statuses == {SIZE_KEPT: "reachable", SIZE_LEAKED: "leaked"}
        assert "unknown" not in every_status
    else:
        assert statuses == {SIZE_KEPT: "unknown", SIZE_LEAKED: "unknown"}
        assert every_status == {"unknown"}


@pytest.mark.parametrize("clock", ["tsc", "sampled", "coarse"])
def test_every_clock_records_every_call_in_time_order(tmp_path, clock):
    """MTRACE_CLOCK=tsc (a TSC read per event), sampled (the default: one read in 8 events,
    the others reuse it) and coarse (CLOCK_MONOTONIC_COARSE, ts_ticks 0): only the
    timestamps' precision changes."""
    status, _reason, _code, _sig, _scanned = ENDINGS["return"]
    env = {"MTRACE_CLOCK": clock} if clock != "sampled" else {}
    res, db = record(tmp_path, [CALLS, "return"], env=env)
    assert res.returncode == status, res.stderr
    meta = check_trace_whole(db)
    assert json.loads(meta["options"])["MTRACE_CLOCK"] == clock
    assert marker_counts(db, 1, is_calls_marker) == MAKE_CALLS
    times = [ts for _op, _thread, ts, _ptr, _size, _stack, _aux in events(db, 1)]
    assert times == sorted(times)
    assert 0 <= times[0] and times[-1] <= meta["duration_ns"]
    distinct = len(set(times))
    if clock == "tsc":
        assert distinct > 0.9 * len(times)
    elif clock == "sampled":
        # A fresh reading for at least one event in 8 of each thread, reused by the others.
        threads = len({thread for _op, thread, *_rest in events(db, 1)})
        assert len(times) // 8 - threads <= distinct < len(times)


def test_fork_then_exec_in_the_child(tmp_path):
    res, db = record(tmp_path, [CALLS, "fork-exec"])
    assert res.returncode == 0, res.stderr
    check_trace_whole(db)
    rows = [(p, parent, reason, code, sig, scan, json.loads(argv)[1])
            for p, parent, reason, code, sig, scan, argv in processes(db)]
    assert rows == [(1, None, "exit", 0, None, 1, "fork-exec"),  # the parent
                    (2, 1, "exec", None, None, 0, "fork-exec"),  # the forked child, until exec
                    (3, 2, "exit", 5, None, 1, "return")]  # the image it exec'd
    pids = [pid for (pid,) in db.execute("SELECT pid FROM processes ORDER BY proc_id")]
    assert pids[1] == pids[2] != pids[0]
    for proc_id in (1, 2, 3):
        assert marker_counts(db, proc_id, is_calls_marker) == MAKE_CALLS, f"proc {proc_id}"
    # Live at exec: not classified; at exit: classified.
    assert {s for (s,) in db.execute("SELECT DISTINCT status FROM live_at_exit WHERE proc_id = 2")} == {"unknown"}
    assert dict(db.execute("SELECT size, status FROM live_at_exit WHERE proc_id = 3 AND size IN (?, ?)",
                           (SIZE_KEPT, SIZE_LEAKED))) == {SIZE_KEPT: "reachable", SIZE_LEAKED: "leaked"}


@pytest.mark.parametrize("rings", ["default", "small"])
def test_millions_of_calls_from_eight_threads(tmp_path, rings):
    # "small": 64K rings that fill and grow up to 1M (then wait): a thread's events come
    # from several rings in turn, and still make one thread with all of them.
    env = {"MTRACE_RING_SIZE": "64K", "MTRACE_RING_MAX": "1M"} if rings == "small" else None
    res, db = record(tmp_path, [CALLS, "threads"], env=env)
    assert res.returncode == 0, res.stderr
    meta = check_trace_whole(db)
    assert meta["events"] >= 2 * THREADS * THREAD_PAIRS
    assert marker_counts(db, 1, lambda size: size == SIZE_THREAD) == {
        (MALLOC, SIZE_THREAD): THREADS * THREAD_PAIRS, (FREE, "marker"): THREADS * THREAD_PAIRS}
    # The workers make no other call: each one's events are exactly its own.
    per_thread = [n for (n,) in db.execute("SELECT events FROM threads WHERE proc_id = 1 AND thread_idx > 0")]
    assert per_thread == [2 * THREAD_PAIRS] * THREADS
    sizes = {}
    for count, data in db.execute("SELECT count, data FROM size_counts WHERE proc_id = 1"):
        sizes.update((s, a) for s, a, _ in decode_size_counts(data, count))
    assert sizes[SIZE_THREAD] == THREADS * THREAD_PAIRS


BURST_PAIRS, SIZE_BURST = 100000, 40009


def test_a_stopped_collector_does_not_stop_the_program(tmp_path):
    """With the collector stopped (SIGSTOP), a burst of 200000 events overfills a 64K ring
    (2048 records) a hundred times: the thread must move to bigger rings and finish without
    waiting; once the collector goes on, every event is in the trace and the summary says
    the rings grew."""
    out = tmp_path / "t.db"
    proc = subprocess.Popen([str(MTRACE_RUN), "--ring-size", "64K", "--ring-max=16M", "-o", str(out), "--",
                             str(CALLS), "burst", str(BURST_PAIRS)],
                            env=realprogs.clean_env(None), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        os.kill(proc.pid, signal.SIGSTOP)  # mtrace-run is the collector
        try:
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            # A program that waited for the stopped collector would never say this.
            ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
            assert ready, "the program is still waiting for the stopped collector"
            assert proc.stdout.readline() == b"done\n"
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert b"event rings grew" in err and b"waited" not in err
    db = sqlite3.connect(str(out))
    meta = check_trace_whole(db)
    assert meta["ring_waits"] == 0 and meta["ring_grows"] >= 6  # 2048 cells to 131072 at least
    options = json.loads(meta["options"])
    assert (options["MTRACE_RING_SIZE"], options["MTRACE_RING_MAX"]) == (64 << 10, 16 << 20)
    assert marker_counts(db, 1, lambda size: size == SIZE_BURST) == {
        (MALLOC, SIZE_BURST): BURST_PAIRS, (FREE, "marker"): BURST_PAIRS}


HANDOFF_BLOCKS, SIZE_HANDOFF = 200000, 40027


def test_free_on_one_thread_ordered_before_reuse_on_another(tmp_path):
    """The main thread records alone (sequence numbers without a locked instruction), then a
    worker appears and frees the main thread's blocks while the main thread's next mallocs
    get those addresses back: in the stream every free comes before the reuse of its
    address, across the switch to shared numbers."""
    res, db = record(tmp_path, [CALLS, "handoff"])
    assert res.returncode == 0, res.stderr
    check_trace_whole(db)
    live, freed_by = {}, {}
    mallocs = reused = over_live = 0
    for op, thread, _ts, ptr, size, _stack, _aux in events(db, 1):
        if op == MALLOC and size == SIZE_HANDOFF:
            mallocs += 1
            if ptr in live:
                over_live += 1
            if freed_by.get(ptr, 0) != thread:
                reused += ptr in freed_by
            live[ptr] = thread
        elif op == FREE and ptr in live:
            del live[ptr]
            freed_by[ptr] = thread
    assert mallocs == HANDOFF_BLOCKS
    assert over_live == 0
    assert not live
    assert reused > 0  # the test exercised reuse across threads at all


# ---- 2. exec chains and fork trees -----------------------------------------------------------

def test_chain_of_three_execs(tmp_path):
    res, db = record(tmp_path, [CALLS, "chain", "3"])
    assert res.returncode == 0, res.stderr
    check_trace_whole(db)
    rows = [(p, parent, reason, code, json.loads(argv)[1:]) for p, parent, reason, code, _s, _l, argv in processes(db)]
    assert rows == [(1, None, "exec", None, ["chain", "3"]),
                    (2, 1, "exec", None, ["chain", "2"]),
                    (3, 2, "exec", None, ["chain", "1"]),
                    (4, 3, "exit", 0, ["chain", "0"])]
    assert len({pid for (pid,) in db.execute("SELECT pid FROM processes")}) == 1
    for proc_id in range(1, 5):
        assert marker_counts(db, proc_id, is_calls_marker) == MAKE_CALLS, f"proc {proc_id}"


def test_fork_tree_of_depth_three(tmp_path):
    depth = 3
    res, db = record(tmp_path, [CALLS, "tree", depth])
    assert res.returncode == 0, res.stderr
    check_trace_whole(db)
    rows = processes(db)
    assert len(rows) == 2 ** (depth + 1) - 1
    level = {}
    for proc_id, *_ in rows:
        sizes = marker_counts(db, proc_id, lambda size: TREE_BASE <= size <= TREE_BASE + depth)
        assert len(sizes) == 2 and sizes[(FREE, "marker")] == 1, sizes  # one malloc and its free
        (level[proc_id],) = [size - TREE_BASE for op, size in sizes if op == MALLOC]
    children = collections.defaultdict(list)
    for proc_id, parent, reason, code, sig, _scan, _argv in rows:
        assert (reason, code, sig) == ("exit", 0, None)
        if parent is None:
            assert level[proc_id] == depth
        else:
            assert level[proc_id] == level[parent] - 1
            children[parent].append(proc_id)
    for proc_id, *_ in rows:
        assert len(children[proc_id]) == (2 if level[proc_id] > 0 else 0)
    assert [len([p for p in level if level[p] == d]) for d in range(depth, -1, -1)] == [1, 2, 4, 8]


def test_shell_child_exec_is_linked_to_its_fork(tmp_path):
    """bash forks a child for the first command, which execs with bash's own environment
    (not the one libmtrace updated at fork), and execs the last command itself. Each image
    follows the one it replaced."""
    res, db = record(tmp_path, ["bash", "-c", f"{CALLS} return; {CALLS} exit"])
    assert res.returncode == 6, res.stderr
    check_trace_whole(db)
    rows = [(p, parent, reason, code, json.loads(argv)[1:2]) for p, parent, reason, code, _s, _l, argv in processes(db)]
    assert rows == [(1, None, "exec", None, ["-c"]),  # bash, until it execs the last command
                    (2, 1, "exec", None, ["-c"]),  # its fork child, until it execs the first
                    (3, 2, "exit", 5, ["return"]),
                    (4, 1, "exit", 6, ["exit"])]
    for proc_id in (3, 4):
        assert marker_counts(db, proc_id, is_calls_marker) == MAKE_CALLS


# ---- 3. programs that use SQLite or libunwind themselves -------------------------------------

def untraced(argv, **kw):
    return subprocess.run([str(a) for a in argv], env=realprogs.clean_env(), capture_output=True, timeout=TIMEOUT,
                          **kw)


def test_program_using_sqlite_itself(tmp_path):
    prog = PROGS / "e2e_sqlite"
    plain = untraced([prog, tmp_path / "plain.sqlite"])
    assert plain.returncode == 0, plain.stderr
    res, db = record(tmp_path, [prog, tmp_path / "traced.sqlite"])
    assert (res.returncode, res.stdout, res.stderr) == (0, plain.stdout, plain.stderr)
    assert len(plain.stdout.splitlines()) == 7
    check_trace_whole(db)
    assert processes(db)[0][2:4] == ("exit", 0)
    # SQLite's own allocations are traced: plenty of them, from libsqlite3's frames.
    assert db.execute("SELECT sum(calls) FROM op_counts WHERE op != 10").fetchone()[0] > 1000
    # Through the stack_frames view, as an ad-hoc SQL user would.
    sqlite_stacks = db.execute(
        "SELECT count(DISTINCT sf.stack_id) FROM stack_frames sf JOIN frames USING(frame_id) "
        "JOIN modules USING(module_id) WHERE path LIKE '%libsqlite3%'").fetchone()[0]
    assert sqlite_stacks > 0
    check = sqlite3.connect(str(tmp_path / "traced.sqlite"))
    assert check.execute("SELECT count(*) FROM t").fetchone()[0] == 1000
    check.close()


def test_program_using_libunwind_itself(tmp_path):
    prog = PROGS / "e2e_unwind"
    plain = untraced([prog])
    assert plain.returncode == 0 and plain.stdout.startswith(b"levels 20\n"), plain.stderr
    res, db = record(tmp_path, [prog])
    assert (res.returncode, res.stdout, res.stderr) == (0, plain.stdout, plain.stderr)
    check_trace_whole(db)
    assert site_stats(db, 1)["descend"][0] == 20  # one copy of the backtrace per level


# ---- 4. malloc from signal handlers, constructors, destructors, atexit, TLS destructors -----

HOOK_SIZES = {"ctor": 30001, "dtor": 30003, "static_dtor": 30005, "atexit": 30007, "key_dtor": 30009,
              "tls_dtor": 30011, "loop": 1201, "signal": 2001}
HOOK_CALLS = 10


def test_malloc_from_hooks_and_signal_handlers(tmp_path):
    res, db = record(tmp_path, [PROGS / "e2e_hooks", "signal"])
    assert res.returncode == 0, res.stderr
    check_trace_whole(db)
    words = res.stdout.split()
    assert words[0] == b"loop" and words[2] == b"handler"
    loops, handled = int(words[1]), int(words[3])
    counts = marker_counts(db, 1, lambda size: size in HOOK_SIZES.values())
    assert handled >= 20 and loops > 0
    assert counts == {
        (MALLOC, HOOK_SIZES["ctor"]): HOOK_CALLS,
        (MALLOC, HOOK_SIZES["dtor"]): HOOK_CALLS,
        (MALLOC, HOOK_SIZES["static_dtor"]): HOOK_CALLS,
        (MALLOC, HOOK_SIZES["atexit"]): HOOK_CALLS,
        (MALLOC, HOOK_SIZES["key_dtor"]): HOOK_CALLS + 1,  # + the key's value, made by the worker
        (MALLOC, HOOK_SIZES["tls_dtor"]): 2 * HOOK_CALLS,  # the worker's object and main's
        (MALLOC, HOOK_SIZES["loop"]): loops,
        (MALLOC, HOOK_SIZES["signal"]): handled,
        (FREE, "marker"): sum(n for key, n in counts.items() if key[0] == MALLOC),  # all freed
    }


# ---- 6. leak classification (what test_report_integration.py does not cover) ----------------

def test_leak_classification_through_chains_and_thread_stacks(tmp_path):
    res, db = record(tmp_path, [PROGS / "e2e_leaks"])
    assert res.returncode == 0, res.stderr
    check_trace_whole(db)
    assert processes(db)[0][2:6] == ("exit", 0, None, 1)
    sites = site_stats(db, 1)
    # (allocs, alloc_bytes, leaked_blocks, leaked_bytes, reachable_blocks, reachable_bytes)
    # reachable only from a leaked block: leaked
    assert sites["leak_chain"] == (2, 1111 + 2222, 2, 1111 + 2222, 0, 0)
    # global -> block -> block -> block: all reachable
    assert sites["keep_chain"] == (3, 3331 + 3332 + 3333, 0, 0, 3, 3331 + 3332 + 3333)
    # only on the stack of a thread still running at exit: reachable
    assert sites["hold_on_stack"] == (1, 4441, 0, 0, 1, 4441)
    assert dict(db.execute("SELECT size, status FROM live_at_exit WHERE size IN (1111, 2222, 3331, 3332, 3333, 4441)")) \
        == {1111: "leaked", 2222: "leaked", 3331: "reachable", 3332: "reachable", 3333: "reachable",
            4441: "reachable"}


# ---- 7. bad input to mtrace-run: one clear line, the documented status ----------------------

EXIT_USAGE, EXIT_CANNOT_RUN, EXIT_CANNOT_RECORD = 2, 127, 1


def launcher(args, env=None, cwd=None):
    return subprocess.run([str(MTRACE_RUN), *map(str, args)], env=realprogs.clean_env(env), cwd=cwd,
                          capture_output=True, timeout=TIMEOUT)


def one_error_line(res, status, text):
    assert res.returncode == status, res.stderr
    assert res.stderr.count(b"\n") == 1 and res.stderr.startswith(b"mtrace-run: error: "), res.stderr
    assert text.encode() in res.stderr, res.stderr


def test_no_program(tmp_path):
    one_error_line(launcher(["-o", tmp_path / "t.db"]), EXIT_USAGE, "no program given")
    one_error_line(launcher(["-o", tmp_path / "t.db", "--"]), EXIT_USAGE, "no program given")
    one_error_line(launcher(["-o"]), EXIT_USAGE, "-o needs a file name")


def test_missing_or_unrunnable_program(tmp_path):
    one_error_line(launcher(["-o", tmp_path / "t.db", "--", tmp_path / "nope"]), EXIT_CANNOT_RUN,
                   f"cannot run '{tmp_path / 'nope'}': No such file or directory")
    one_error_line(launcher(["-o", tmp_path / "t.db", "--", "no-such-program-mtrace"]), EXIT_CANNOT_RUN,
                   "cannot run 'no-such-program-mtrace'")
    one_error_line(launcher(["-o", tmp_path / "t.db", "--", tmp_path]), EXIT_CANNOT_RUN, "Permission denied")


def test_output_in_an_unwritable_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores the mode: use a directory that cannot exist
            target = tmp_path / "missing" / "dir" / "t.db"
        else:
            target = locked / "t.db"
        marker = tmp_path / "ran"
        res = launcher(["-o", target, "--", "sh", "-c", f"touch {marker}"])
        one_error_line(res, EXIT_CANNOT_RECORD, f"cannot write '{target}'")
        assert not marker.exists(), "the program must not run when its trace cannot be written"
    finally:
        locked.chmod(0o700)


def test_unknown_option_and_bad_value():
    one_error_line(launcher(["--frobnicate", "--", "true"]), EXIT_USAGE, "unknown option '--frobnicate'")
    one_error_line(launcher(["--depth", "many", "--", "true"]), EXIT_USAGE, "--depth many")


def test_bad_environment_value_warns_once_and_keeps_the_default(tmp_path):
    """MTRACE_DEPTH=lots: one warning naming the variable and the default, from mtrace-run
    only (not once more per traced process), and the trace made with the default."""
    res, db = record(tmp_path, ["sh", "-c", f"{CALLS} return; {CALLS} exit"], env={"MTRACE_DEPTH": "lots"})
    assert res.returncode == 6, res.stderr
    assert res.stderr == (b"mtrace: warning: MTRACE_DEPTH=lots is not valid (expected a whole number from 1 to "
                          b"256); using the default 64\n")
    meta = check_trace_whole(db)
    assert meta["stack_depth"] == 64 and json.loads(meta["options"])["MTRACE_DEPTH"] == 64
    assert len(processes(db)) == 3


def test_options_record_the_output_given_with_o(tmp_path):
    _, db = record(tmp_path, [CALLS, "return"])
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert json.loads(meta["options"])["MTRACE_OUT"] == str(tmp_path / "t.db")


# ---- 5. real programs recorded: same behaviour, complete traces, plausible counts ------------

def traced_like_untraced(tmp_path, cmd, env=None, input=None, cwd_factory=None):
    """Run cmd untraced, then under mtrace-run; assert the same status and output; return
    the trace. cwd_factory(label) gives each run a fresh working directory."""
    runs = []
    for label in ("plain", "traced"):
        cwd = cwd_factory(label) if cwd_factory else None
        argv = list(cmd) if label == "plain" else [str(MTRACE_RUN), "-q", "-o", str(tmp_path / "t.db"), "--", *cmd]
        runs.append(subprocess.run(argv, env=realprogs.clean_env(env), cwd=cwd, input=input, capture_output=True,
                                   timeout=TIMEOUT))
    plain, traced = runs
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert traced.returncode == plain.returncode, traced.stderr[-2000:]
    assert traced.stdout == plain.stdout
    assert traced.stderr == plain.stderr
    db = sqlite3.connect(str(tmp_path / "t.db"))
    check_trace_whole(db)
    return db, traced


def allocations(db, proc_ids=None):
    where = "" if proc_ids is None else f"AND proc_id IN ({','.join(map(str, proc_ids))})"
    return db.execute(f"SELECT coalesce(sum(calls), 0) FROM op_counts WHERE op != {FREE} {where}").fetchone()[0]


def fresh_dirs(tmp_path):
    def make(label):
        d = tmp_path / label
        d.mkdir()
        return d
    return make


def test_real_python3(tmp_path):
    realprogs.need(realprogs.PYTHON)
    db, out = traced_like_untraced(tmp_path, [realprogs.PYTHON, "-c", realprogs.PYTHON_SCRIPT],
                                   env=realprogs.PYTHON_ENV)
    assert out.stdout.count(b"\n") == 8 + 17 + 1
    ((exe, argv, reason, code),) = db.execute("SELECT exe, argv, end_reason, exit_code FROM processes").fetchall()
    assert os.path.basename(exe).startswith("python3") and json.loads(argv)[:2] == [realprogs.PYTHON, "-c"]
    assert (reason, code) == ("exit", 0)
    # 200000 dict entries, each a key string and a list, with PYTHONMALLOC=malloc
    assert allocations(db) > 400000
    assert db.execute("SELECT count(*) FROM threads WHERE proc_id = 1").fetchone()[0] >= 1 + 8


def test_real_git(tmp_path):
    realprogs.need("git")
    db, out = traced_like_untraced(tmp_path, ["bash", "-c", realprogs.GIT_SCRIPT], env=realprogs.git_env(tmp_path),
                                   cwd_factory=fresh_dirs(tmp_path))
    assert out.stdout.count(b"commit ") >= 12
    argvs = [json.loads(a) for (a,) in db.execute("SELECT argv FROM processes")]
    # Images the shell's children exec'd (git's own fork children keep git's argv).
    from_shell = [json.loads(a) for (a,) in db.execute(
        "SELECT p.argv FROM processes p JOIN processes up ON up.proc_id = p.parent_proc_id "
        "WHERE p.exe LIKE '%/git' AND up.exe LIKE '%/bash'")]
    assert len([a for a in from_shell if a[:2] == ["git", "commit"]]) == 13  # 12 in the loop, 1 on topic
    assert ["git", "merge", "-q", "--no-edit", "topic"] in argvs
    assert ["git", "gc", "-q"] in argvs
    assert all(r == "exit" or r == "exec" for (r,) in db.execute("SELECT end_reason FROM processes"))
    git_procs = [p for (p,) in db.execute("SELECT proc_id FROM processes WHERE exe LIKE '%/git'")]
    assert len(git_procs) >= 13 and allocations(db, git_procs) > 1000


def test_real_sqlite3_shell(tmp_path):
    realprogs.need("sqlite3")
    db, out = traced_like_untraced(tmp_path, ["sqlite3", ":memory:"], input=realprogs.SQLITE_SCRIPT)
    assert len(out.stdout.splitlines()) == 37 + 1 + 1 + 5
    ((exe,),) = db.execute("SELECT exe FROM processes").fetchall()
    assert os.path.basename(exe) == "sqlite3"
    assert allocations(db) > 10000
    assert db.execute(f"SELECT calls FROM op_counts WHERE op = {FREE}").fetchone()[0] > 10000


def test_real_gcc_and_its_cc1_child(tmp_path):
    realprogs.need("gcc")
    cmd = ["gcc", "-std=gnu11", "-O2", "-c", str(ROOT / "tests" / "progs" / "e2e_leaks.c"), "-o", "out.o"]
    db, _ = traced_like_untraced(tmp_path, cmd, cwd_factory=fresh_dirs(tmp_path))
    assert (tmp_path / "plain" / "out.o").read_bytes() == (tmp_path / "traced" / "out.o").read_bytes()
    rows = db.execute("SELECT proc_id, parent_proc_id, exe, end_reason, exit_code FROM processes").fetchall()
    cc1 = [r for r in rows if os.path.basename(r[2]) == "cc1"]
    assert len(cc1) == 1 and cc1[0][1] == 1 and cc1[0][3:] == ("exit", 0)
    assert allocations(db, [cc1[0][0]]) > 10000


def test_real_perl_bash_awk(tmp_path):
    for program, cmd in (("perl", ["perl", "-e", realprogs.PERL_SCRIPT]),
                         ("bash", ["bash", "-c", realprogs.BASH_SCRIPT]),
                         ("awk", ["awk", realprogs.AWK_SCRIPT])):
        realprogs.need(program)
        where = tmp_path / program
        where.mkdir()
        db, _ = traced_like_untraced(where, cmd)
        assert allocations(db) > 1000, program
        db.close()
