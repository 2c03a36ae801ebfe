"""The validated unwind cache (trace/unwind.h) never hands out a wrong stack.

tests/progs/stack_cache_prog.c reaches one call site into malloc and free through random
paths built so that the cache's key (call site, stack pointer, frame pointer) repeats for
different stacks: identical sibling functions (same frame sizes, so [fa, fb] and [fb, fa]
meet malloc at the same stack pointer), recursion to varying depths, and alloca frames of
varying sizes, with and without frame pointers. Every event's stack in trace.db must be the
one the program expected; an unvalidated cache keyed like ours fails this at once."""
import sqlite3
import subprocess
import sys

import pytest

from conftest import BUILD, ROOT

sys.path.insert(0, str(ROOT / "tools"))
from mtrace_report.events import OP_FREE, OP_MALLOC, decode_chunk  # noqa: E402

MTRACE_RUN = BUILD / "mtrace-run"
PROG = BUILD / "progs" / "stack_cache_prog"
EVENTS = 3000  # ~250 distinct paths, each seen often enough to be cached and reused


def stack_names(db, stack_id):
    """Function names innermost first: up the stack_nodes trie from the stack's node."""
    names = []
    node = db.execute("SELECT node_id FROM stacks WHERE stack_id = ?", (stack_id,)).fetchone()[0]
    while node is not None:
        node, name = db.execute("SELECT n.parent_id, f.function FROM stack_nodes n JOIN frames f "
                                "ON f.frame_id = n.frame_id WHERE n.node_id = ?", (node,)).fetchone()
        names.append(name)
    return names


@pytest.mark.parametrize("seed", [1, 2])
def test_every_stack_is_exact(tmp_path, seed):
    out = tmp_path / "trace.db"
    res = subprocess.run([str(MTRACE_RUN), "-o", str(out), "--", str(PROG), str(EVENTS), str(seed)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    expected = {}
    for line in res.stdout.splitlines():
        size, *names = line.split()
        expected[int(size)] = names
    assert len(expected) == EVENTS
    db = sqlite3.connect(out)
    events = []
    for count, first_ns, data in db.execute(
            "SELECT count, first_ns, data FROM event_chunks ORDER BY proc_id, first_seq"):
        events.extend(decode_chunk(data, count, first_ns))
    names_of = {}
    checked = 0
    previous_size = None
    for op, _thread, _ts, _ptr, size, stack_id, _aux in events:
        if op == OP_MALLOC and size in expected:
            want, previous_size = expected[size], size
        elif op == OP_FREE and previous_size is not None:
            want, previous_size = expected[previous_size], None  # leaf frees right after
        else:
            previous_size = None
            continue
        if stack_id not in names_of:
            names_of[stack_id] = stack_names(db, stack_id)
        got = names_of[stack_id][:len(want)]
        assert got == want, (op, size, stack_id)
        checked += 1
    assert checked == 2 * EVENTS
    # The paths repeat: far fewer distinct stacks than events (each path's malloc and free
    # share one stack, since they come from the same line's neighbourhood of leaf).
    assert len(names_of) < EVENTS
