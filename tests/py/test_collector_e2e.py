"""The collector on real recordings: tests/progs/collector_e2e.c run under mtrace-run with
libmtrace.so (skipped until the producer is built). Counts are checked per allocation site,
so the allocations libc makes on its own do not disturb them."""
import json
import sqlite3

import pytest

from conftest import BUILD, run

MTRACE_RUN = BUILD / "mtrace-run"
PROG = BUILD / "progs" / "collector_e2e"


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "t.db"
    res = run([str(MTRACE_RUN), "-o", str(out), "--", str(PROG)], timeout=120)
    db = sqlite3.connect(str(out))
    yield res, db
    db.close()


def site_stats(db, proc_id):
    """Innermost function -> (allocs, alloc_bytes, frees, leaked_blocks, reachable_blocks)."""
    rows = db.execute(
        "SELECT f.function, s.allocs, s.alloc_bytes, s.frees, s.leaked_blocks, s.reachable_blocks "
        "FROM stack_stats s JOIN stacks st ON st.stack_id = s.stack_id "
        "JOIN stack_nodes n ON n.node_id = st.node_id JOIN frames f ON f.frame_id = n.frame_id "
        "WHERE s.proc_id = ?", (proc_id,))
    out = {}
    for fn, *vals in rows:
        prev = out.get(fn, (0, 0, 0, 0, 0))
        out[fn] = tuple(a + b for a, b in zip(prev, vals))
    return out


def test_exit_status_and_complete(recording):
    res, db = recording
    assert res.returncode == 9, res.stderr
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert meta["complete"] == 1 and meta["dropped"] == 0
    assert json.loads(meta["command"]) == [str(PROG)]


def test_process_tree(recording):
    _, db = recording
    rows = db.execute("SELECT proc_id, parent_proc_id, end_reason, exit_code, json_extract(argv, '$[1]') "
                      "FROM processes ORDER BY proc_id").fetchall()
    assert rows == [(1, None, "exec", None, None), (2, 1, "exit", 0, None), (3, 1, "exit", 9, "after-exec")]


def test_sites_in_each_process(recording):
    _, db = recording
    root = site_stats(db, 1)
    assert root["keep_alloc"] == (1, 100, 0, 0, 0)  # live at exec: not classified
    assert root["worker_alloc"] == (50, 50 * 24, 50, 0, 0)
    assert site_stats(db, 2)["child_alloc"] == (5, 5 * 56, 5, 0, 0)
    after_exec = site_stats(db, 3)
    assert after_exec["exec_alloc"] == (7, 7 * 70, 7, 0, 0)
    assert after_exec["leaky_alloc"] == (3, 3 * 48, 0, 3, 0)
    assert after_exec["keep_alloc"] == (1, 100, 0, 0, 1)
    statuses = dict(db.execute("SELECT proc_id, group_concat(DISTINCT status) FROM live_at_exit l "
                               "JOIN stacks st ON st.stack_id = l.stack_id JOIN stack_nodes n "
                               "ON n.node_id = st.node_id JOIN frames f ON f.frame_id = n.frame_id WHERE f.function = 'keep_alloc' GROUP BY proc_id"))
    assert statuses == {1: "unknown", 3: "reachable"}


def test_worker_thread_and_symbols(recording):
    _, db = recording
    threads = db.execute("SELECT count(*) FROM threads WHERE proc_id = 1").fetchone()[0]
    assert threads >= 2
    row = db.execute("SELECT f.file, f.line, m.path FROM frames f JOIN modules m USING(module_id) "
                     "WHERE f.function = 'leaky_alloc'").fetchone()
    assert row[0].endswith("collector_e2e.c") and row[1] > 0 and row[2] == str(PROG)
    # mtrace's own frames never appear in stacks (every trie node is a frame of some stack).
    own = db.execute("SELECT count(*) FROM stack_nodes JOIN frames USING(frame_id) JOIN modules USING(module_id) "
                     "WHERE path LIKE '%libmtrace%' OR path LIKE '%libmtalloc%'").fetchone()[0]
    assert own == 0
    # Every stack runs under main (or the thread's start): the trie stores shared outer
    # frames once, so it has fewer nodes than the stacks have frames.
    nodes = db.execute("SELECT count(*) FROM stack_nodes").fetchone()[0]
    assert nodes < db.execute("SELECT sum(depth) FROM stacks").fetchone()[0]


def test_events_match_aggregates(recording):
    _, db = recording
    for proc_id, events in db.execute("SELECT proc_id, events FROM processes"):
        chunked = db.execute("SELECT coalesce(sum(count), 0) FROM event_chunks WHERE proc_id = ?",
                             (proc_id,)).fetchone()[0]
        calls = db.execute("SELECT sum(calls) FROM op_counts WHERE proc_id = ?", (proc_id,)).fetchone()[0]
        assert chunked == events == calls


def test_plain_preload_run_is_complete_when_the_program_returns(tmp_path):
    """LD_PRELOAD=libmtrace.so MTRACE_OUT=...: the program starts `mtrace-run --collector-fd`
    itself and, being the root, waits at exit until the trace is final."""
    out = tmp_path / "p.db"
    res = run([str(PROG)], env_extra={"LD_PRELOAD": str(BUILD / "libmtrace.so"), "MTRACE_OUT": str(out)},
              timeout=120)
    assert res.returncode == 9, res.stderr
    db = sqlite3.connect(str(out))
    assert dict(db.execute("SELECT key, value FROM meta"))["complete"] == 1
    rows = db.execute("SELECT parent_proc_id, end_reason, exit_code FROM processes ORDER BY proc_id").fetchall()
    assert rows == [(None, "exec", None), (1, "exit", 0), (1, "exit", 9)]
    assert site_stats(db, 3)["leaky_alloc"] == (3, 3 * 48, 0, 3, 0)
    db.close()
