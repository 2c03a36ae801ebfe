"""The producer side of the tracer (libmtrace.so) end to end, against the fake collector
(tests/progs/fake_collector.c) instead of mtrace-run: plain LD_PRELOAD mode starts it
through MTRACE_COLLECTOR, and it writes what it read from the rings as JSON.

Completion is waited for without sleeping: the test passes a pipe's write end to the traced
program; every process of the tree and the collector (started by it) inherit it, so EOF on
the read end means all of them, the collector included, are gone and the JSON is final."""
import json
import os
import signal
import subprocess

import pytest

from conftest import BUILD

TAG = 1234  # the size producer_prog uses for the calls it counts (FAKE_TAG_SIZE default)
LIB = BUILD / "libmtrace.so"
PROG = BUILD / "progs" / "producer_prog"
FAKE = BUILD / "progs" / "fake_collector"


def trace(tmp_path, *args, env=None, timeout=60, want_output=True):
    """Run producer_prog under libmtrace.so; returns (CompletedProcess, [process dicts])."""
    out = tmp_path / "fake.json"
    environ = dict(os.environ)
    for name in list(environ):
        if name.startswith("MTRACE_"):
            del environ[name]
    environ.update({"LD_PRELOAD": str(LIB), "MTRACE_OUT": str(out),
                    "MTRACE_COLLECTOR": str(FAKE)})
    environ.update(env or {})
    done_r, done_w = os.pipe()
    try:
        proc = subprocess.run([str(PROG), *args], env=environ, capture_output=True, text=True,
                              timeout=timeout, pass_fds=(done_w,))
    finally:
        os.close(done_w)
    with os.fdopen(done_r, "rb") as done:
        done.read()  # EOF: the whole tree and the collector have exited
    return proc, json.loads(out.read_text()) if want_output else None


def check_stream(p):
    """Every record arrived whole, and the sequence numbers are dense."""
    assert p["bad"] == 0
    assert p["missing"] == 0
    assert p["dup"] == 0
    assert p["seqs"] == p["records"]
    assert p["unrecorded"] == 0
    assert p["dropped"] == 0


def test_threads_exact_counts(tmp_path):
    n, threads = 2000, 8
    res, procs = trace(tmp_path, "threads", str(n), str(threads))
    assert res.returncode == 0, res.stderr
    assert len(procs) == 1
    p = procs[0]
    check_stream(p)
    assert p["tagged_allocs"] == n * threads
    assert p["tagged_frees"] == n * threads
    ops = p["ops"]
    # The family calls of mode_threads, once each (libc makes none of these).
    assert ops["5"] == 1 and ops["6"] == 1 and ops["7"] == 1 and ops["8"] == 1
    assert p["realloc_moves"] >= 1
    assert p["rings"] == threads + 1
    assert p["closed_rings"] == threads  # the main thread's stays open until the end
    assert p["exe"] == str(PROG) and p["argv0"] == str(PROG)
    assert 1 < p["max_depth"] <= 64
    assert p["end"] == "goodbye" and p["exit_how"] == 1 and p["exit_code"] == 0
    assert p["flags"] & 4  # it started the collector itself
    assert p["kinds"]["2"] >= 1  # a snapshot, at least the final one
    assert p["snapshot_classes"] > 0


def test_depth_option(tmp_path):
    res, procs = trace(tmp_path, "threads", "100", "2", env={"MTRACE_DEPTH": "2"})
    assert res.returncode == 0, res.stderr
    assert procs[0]["max_depth"] == 2


def test_fork_tree(tmp_path):
    res, procs = trace(tmp_path, "fork", "2")
    assert res.returncode == 0, res.stderr
    assert len(procs) == 3
    root, child, grandchild = procs
    for p in procs:
        check_stream(p)
    assert child["ppid"] == root["pid"] and grandchild["ppid"] == child["pid"]
    assert not root["flags"] & 2 and child["flags"] & 2 and grandchild["flags"] & 2
    assert [p["tagged_allocs"] for p in procs] == [10 + 3, 5 + 10 + 3, 5 + 10]
    assert [p["tagged_frees"] for p in procs] == [13, 18, 15]
    assert all(p["exit_how"] == 1 for p in procs)


def test_exec_chain_hello_on_the_inherited_connection(tmp_path):
    res, procs = trace(tmp_path, "exec", "2", "0")
    assert res.returncode == 0, res.stderr
    # One pid, three images, in order on one connection: the first two end by exec.
    assert [p["pid"] for p in procs] == [procs[0]["pid"]] * 3
    assert [p["end"] for p in procs] == ["exec", "exec", "eof"]
    assert [p["tagged_allocs"] for p in procs] == [7, 7, 7]
    for p in procs:
        check_stream(p)
    assert procs[2]["exit_how"] == 1


def test_fork_then_exec(tmp_path):
    res, procs = trace(tmp_path, "exec", "2", "1")
    assert res.returncode == 0, res.stderr
    images = [p for p in procs if p["tagged_allocs"]]
    assert [p["tagged_allocs"] for p in images] == [7, 7, 7]
    forked = [p for p in procs if p["flags"] & 2]
    assert len(forked) == 2 and all(p["end"] == "exec" for p in forked)
    for p in procs:
        check_stream(p)


def test_posix_spawn_child_gets_its_own_connection(tmp_path):
    """A child started without fork handlers must not take over its parent's stream."""
    res, procs = trace(tmp_path, "spawn")
    assert res.returncode == 0, res.stderr
    assert len(procs) == 2
    parent, child = procs
    assert parent["end"] == "goodbye" and parent["tagged_allocs"] == 8
    assert child["ppid"] == parent["pid"] and child["tagged_allocs"] == 6
    assert child["flags"] == 0
    for p in procs:
        check_stream(p)


def test_vfork_child_exit_leaves_the_parent_alone(tmp_path):
    res, procs = trace(tmp_path, "vfork")
    assert res.returncode == 0, res.stderr
    (p,) = procs
    check_stream(p)
    assert p["tagged_allocs"] == 5 and p["exit_how"] == 1 and p["exit_code"] == 0


@pytest.mark.parametrize("how,sig", [("abort", signal.SIGABRT), ("segv", signal.SIGSEGV),
                                     ("kill", signal.SIGKILL)])
def test_events_survive_death(tmp_path, how, sig):
    res, procs = trace(tmp_path, "die", how, "300")
    assert res.returncode == -sig
    (p,) = procs
    check_stream(p)
    assert p["end"] == "eof"
    assert p["tagged_allocs"] == 300 and p["tagged_frees"] == 300
    assert p["exit_how"] == 0  # no exit record: it died


def test_immediate_exit_is_recorded(tmp_path):
    res, procs = trace(tmp_path, "die", "_exit", "20")
    assert res.returncode == 3
    (p,) = procs
    check_stream(p)
    assert p["exit_how"] == 2 and p["exit_code"] == 3
    assert p["kinds"]["6"] == 0  # no leak scan after _exit


def test_exit_code_from_main(tmp_path):
    res, procs = trace(tmp_path, "exitcode")
    assert res.returncode == 42
    assert procs[0]["exit_how"] == 1 and procs[0]["exit_code"] == 42


def test_signal_handler_that_mallocs(tmp_path):
    n = 20000
    res, procs = trace(tmp_path, "signal", str(n))
    assert res.returncode == 0, res.stderr
    handled = int(res.stdout.split()[-1])
    (p,) = procs
    check_stream(p)
    assert p["tagged_allocs"] == n + handled
    assert p["tagged_frees"] == n + handled


def test_ring_growth_under_a_signal_storm(tmp_path):
    """Rings grow while a 50 us timer interrupts the thread with handlers that malloc:
    growth happens with the thread's signals blocked, so no handler's record lands in a
    half-switched ring, and the stream stays whole and in order across the rings."""
    n = 20000
    res, procs = trace(tmp_path, "signal", str(n),
                       env={"MTRACE_RING_SIZE": "64K", "MTRACE_RING_MAX": "8M", "FAKE_NO_DRAIN": "1"})
    assert res.returncode == 0, res.stderr
    handled = int(res.stdout.split()[-1])
    (p,) = procs
    check_stream(p)
    assert p["tagged_allocs"] == n + handled and p["tagged_frees"] == n + handled
    assert p["ring_waits"] == 0 and p["dropped"] == 0
    assert p["ring_grows"] >= 4  # 40000 events: rings of 2048..16384 cells hold 30720


def test_program_using_libunwind(tmp_path):
    res, procs = trace(tmp_path, "unwind", "200")
    assert res.returncode == 0, res.stderr
    (p,) = procs
    check_stream(p)
    assert p["tagged_allocs"] == 200 and p["tagged_frees"] == 200


def test_leak_scan(tmp_path):
    res, procs = trace(tmp_path, "leak")
    assert res.returncode == 0, res.stderr
    (p,) = procs
    check_stream(p)
    assert sorted(p["leaked_sizes"]) == [333] * 5, res.stderr
    assert p["scan_leaked"] == 5 and p["kinds"]["6"] == 1
    assert p["scan_live"] >= 7


def test_leak_scan_debug_mode(tmp_path):
    """The debug allocator's block table lists every block: it must not be a root."""
    res, procs = trace(tmp_path, "leak", env={"MTRACE_DEBUG": "1"})
    assert res.returncode == 0, res.stderr
    (p,) = procs
    assert sorted(s for s in p["leaked_sizes"] if s == 333) == [333] * 5
    assert 16 not in p["leaked_sizes"] and 222 not in p["leaked_sizes"]


def test_leak_scan_off(tmp_path):
    res, procs = trace(tmp_path, "leak", env={"MTRACE_LEAK_SCAN": "off"})
    (p,) = procs
    assert p["kinds"]["5"] == 0 and p["kinds"]["6"] == 0 and p["exit_how"] == 1


def test_realloc_forms(tmp_path):
    res, procs = trace(tmp_path, "realloc")
    assert res.returncode == 0, res.stderr
    (p,) = procs
    check_stream(p)
    # realloc(NULL, n), a move, a failure (a skip record holds its number), realloc(p, 0).
    assert p["ops"]["3"] == 2 and p["skips"] == 1 and p["ops"]["10"] >= 1
    assert p["realloc_moves"] == 1


def test_regions(tmp_path):
    res, procs = trace(tmp_path, "regions")
    assert res.returncode == 0, res.stderr
    (p,) = procs
    check_stream(p)
    assert p["ops"]["11"] == 3 and p["ops"]["12"] == 2


def test_pause_resume_mark(tmp_path):
    res, procs = trace(tmp_path, "marks")
    assert res.returncode == 0, res.stderr
    assert "active 1" in res.stdout
    (p,) = procs
    check_stream(p)
    assert p["tagged_allocs"] == 5  # the 100 made while paused are not recorded
    assert p["marks"] == "start;end;"
    assert p["kinds"]["8"] == 1 and p["kinds"]["9"] == 1


def test_first_frame_is_the_call_site(tmp_path):
    res, procs = trace(tmp_path, "callsite")
    assert res.returncode == 0, res.stderr
    marker = int(res.stdout.split()[-1])
    # The return address of the call into malloc lies inside call_site_marker (a few dozen
    # bytes of code), not in libmtrace.so.
    assert any(marker < f < marker + 64 for f in procs[0]["frame0"]), (marker, procs[0]["frame0"])


def test_heap_error_asks_the_collector(tmp_path):
    res, procs = trace(tmp_path, "double_free", env={"MTRACE_ON_ERROR": "continue"})
    assert "double free" in res.stderr
    assert "fake collector: block 0x" in res.stderr
    (p,) = procs
    assert p["kinds"]["4"] == 1 and p["queries"] == 1


def test_heap_error_inside_realloc_is_answered(tmp_path):
    """The realloc's record is open when the error is detected: it must not hold back the
    error record the collector is asked about."""
    res, procs = trace(tmp_path, "realloc_freed")
    assert res.returncode == -signal.SIGABRT
    assert "realloc of freed block" in res.stderr
    assert "fake collector: block 0x" in res.stderr
    (p,) = procs
    check_stream(p)
    assert p["kinds"]["4"] == 1 and p["queries"] == 1 and p["skips"] == 1


def test_snapshots_by_volume(tmp_path):
    n = 4000
    res, procs = trace(tmp_path, "threads", str(n), "2",
                       env={"MTRACE_SNAPSHOT_BYTES": "64K", "MTRACE_SNAPSHOT_MS": "0"})
    assert res.returncode == 0, res.stderr
    (p,) = procs
    check_stream(p)
    allocated = 2 * n * TAG
    # One per 64 KiB allocated, give or take the per-thread batching, plus the final one.
    assert allocated // 65536 // 2 <= p["kinds"]["2"] <= allocated // 65536 + 2


def test_snapshots_off_but_the_final_one(tmp_path):
    res, procs = trace(tmp_path, "threads", "4000", "2",
                       env={"MTRACE_SNAPSHOT_BYTES": "0", "MTRACE_SNAPSHOT_MS": "0"})
    assert procs[0]["kinds"]["2"] == 1


def test_rejected_process_runs_untraced_but_its_children_are_asked(tmp_path):
    res, procs = trace(tmp_path, "fork", "1", env={"FAKE_REJECT": "producer_prog"})
    assert res.returncode == 0, res.stderr
    assert len(procs) == 2
    assert all(p["rejected"] and p["records"] == 0 for p in procs)


def test_missing_collector_warns_once_and_runs(tmp_path):
    env = dict(os.environ, LD_PRELOAD=str(LIB), MTRACE_OUT=str(tmp_path / "x.db"),
               MTRACE_COLLECTOR=str(tmp_path / "no-such-collector"))
    res = subprocess.run([str(PROG), "exec", "2", "1"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0
    lines = [l for l in res.stderr.splitlines() if "cannot start the collector" in l]
    assert len(lines) == 1
    assert lines[0].startswith("mtrace: warning: cannot start the collector (")
    assert lines[0].endswith("; not tracing")


def test_drop_mode_with_a_slow_collector(tmp_path):
    n = 20000
    res, procs = trace(tmp_path, "threads", str(n), "2",
                       env={"MTRACE_DROP": "1", "MTRACE_RING_SIZE": "64K", "MTRACE_RING_MAX": "64K",
                            "FAKE_SLOW_US": "2000"})
    assert res.returncode == 0, res.stderr
    (p,) = procs
    assert p["bad"] == 0 and p["missing"] == 0 and p["dup"] == 0
    assert p["dropped"] > 0
    assert p["tagged_allocs"] + p["tagged_frees"] + p["dropped"] >= 2 * n * 2


THREAD_PAIRS = 20000


def two_threads_whole(tmp_path, env):
    """producer_prog's 2 threads of THREAD_PAIRS malloc/free pairs each: the stream is
    whole and every tagged call is in it. Returns the fake collector's account."""
    res, procs = trace(tmp_path, "threads", str(THREAD_PAIRS), "2", env=env)
    assert res.returncode == 0, res.stderr
    (p,) = procs
    check_stream(p)
    assert p["tagged_allocs"] == 2 * THREAD_PAIRS and p["tagged_frees"] == 2 * THREAD_PAIRS
    return p


def test_wait_mode_with_a_slow_collector_loses_nothing(tmp_path):
    p = two_threads_whole(tmp_path, {"MTRACE_RING_SIZE": "64K", "MTRACE_RING_MAX": "64K", "FAKE_SLOW_US": "500"})
    assert p["ring_grows"] == 0


def test_full_rings_grow_instead_of_waiting(tmp_path):
    """A collector that reads nothing until the end: every thread's 64K ring (2048 cells)
    fills many times over, so each must move to bigger rings (64K -> ... -> 4M holds a
    thread's 40000+ records). A thread that waited instead would hang this test; the
    stream must still be whole and in order across each thread's rings."""
    p = two_threads_whole(tmp_path, {"MTRACE_RING_SIZE": "64K", "MTRACE_RING_MAX": "4M", "FAKE_NO_DRAIN": "1"})
    assert p["ring_waits"] == 0 and p["dropped"] == 0
    # A full ring keeps its records: the rings of 2048, 4096, 8192 and 16384 cells hold
    # 30720 of a thread's 40000 events, so each of the 2 threads grew at least 4 times.
    assert p["ring_grows"] >= 2 * 4
    assert p["rings"] >= 1 + 2 * 5
    # Every ring left behind was closed, but the live ones of the threads still running.
    assert p["closed_rings"] >= p["ring_grows"]


def test_growth_stops_at_the_budget_and_the_thread_waits(tmp_path):
    """MTRACE_RING_MAX bounds each ring: past it a full ring waits for the collector as
    before (here one that is slow but reads), losing nothing."""
    p = two_threads_whole(tmp_path, {"MTRACE_RING_SIZE": "64K", "MTRACE_RING_MAX": "128K", "FAKE_SLOW_US": "500"})
    # At most one doubling per ring: the main thread's and the 2 workers'.
    assert p["ring_grows"] <= 3


def test_collector_death_does_not_hang_the_program(tmp_path):
    """Wait mode with full rings: once the collector is gone the writers drop instead."""
    res, _ = trace(tmp_path, "threads", "20000", "2", want_output=False,
                   env={"MTRACE_RING_SIZE": "64K", "MTRACE_RING_MAX": "64K", "FAKE_DIE_AFTER": "3000"})
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "fake.json").exists()
