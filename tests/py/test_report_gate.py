"""The CI leak gate: exit codes around each threshold, both suppression formats, the
baseline, JUnit output, and `leaks --fail-on-leak`.

The trace (reportfab.leaky_app) leaks 3 x 100 bytes at leak_a (app.c, /usr/bin/app) and
2 x 1000 bytes at leak_b <- helper <- main (util.c, /usr/lib/libutil.so.1): 2300 bytes in
5 blocks from 2 stacks; 64 bytes stay reachable."""
import xml.etree.ElementTree as ET

import pytest

from reportfab import LEAK_A, leaky_app, run_main
from tracefab import TraceFab


@pytest.fixture
def app(tmp_path):
    return leaky_app(tmp_path / "app.db")


def gate(capsys, *args):
    return run_main(capsys, "gate", *args)


def test_default_gate_fails_on_any_leak(app, capsys):
    code, out, _ = gate(capsys, app)
    assert code == 1
    assert "FAIL leaked bytes: 2300 (limit 0)" in out
    assert "2000 bytes in 2 blocks, pid 100" in out and "#0 leak_b at util.c:20" in out
    assert "gate: FAILED" in out


@pytest.mark.parametrize("option,limit,expected", [
    ("--max-leak-bytes", 2300, 0), ("--max-leak-bytes", 2299, 1),
    ("--max-leaks", 5, 0), ("--max-leaks", 4, 1),
    ("--max-stack-bytes", 2000, 0), ("--max-stack-bytes", 1999, 1),
])
def test_thresholds(app, capsys, option, limit, expected):
    code, out, _ = gate(capsys, app, option, limit)
    assert code == expected, out


def test_stack_limit_names_only_the_stack_over_it(app, capsys):
    code, out, _ = gate(capsys, app, "--max-stack-bytes", 300)
    assert code == 1
    offending = out.split("offending stacks:")[1]
    assert "leak_b" in offending and "leak_a" not in offending


def test_reachable_blocks_never_fail_the_gate(tmp_path, capsys):
    fab = TraceFab()
    p = fab.process(pid=3)
    keep = p.malloc(64, LEAK_A)
    p.exit(0, status={keep: "reachable"})
    code, _, _ = gate(capsys, fab.write(str(tmp_path / "r.db")))
    assert code == 0


def test_unclassified_blocks_count_only_when_asked(tmp_path, capsys):
    fab = TraceFab()
    p = fab.process(pid=3)
    p.malloc(64, LEAK_A)
    p.exit(0, leak_scan=False)
    path = fab.write(str(tmp_path / "u.db"))
    code, out, _ = gate(capsys, path)
    assert code == 0 and "not classified" in out
    code, _, _ = gate(capsys, path, "--count-unknown")
    assert code == 1


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("pattern,suppressed", [
    ("leak_b", True),           # function, unanchored
    ("libutil.so", True),       # module
    ("util.c", True),           # source file
    ("^leak_$", False),         # anchored: no function is exactly leak_
    ("leak_*", "both"),         # wildcard: both stacks
    ("^main$", "both"),         # an outer frame matches too
    ("nothing_like_it", False),
])
def test_lsan_suppressions(app, capsys, tmp_path, pattern, suppressed):
    supp = write(tmp_path, "lsan.supp", f"# comment\n\nleak:{pattern}\ncalled_from_lib:x\n")
    code, out, _ = gate(capsys, app, "--suppressions", supp, "--max-leak-bytes", 300)
    if suppressed == "both":
        assert code == 0 and "counted: 0 bytes" in out
    elif suppressed:
        assert code == 0 and "counted: 300 bytes in 3 blocks" in out
    else:
        assert code == 1 and "counted: 2300 bytes" in out


VALGRIND_OK = """
{
   leak_b_via_helper
   Memcheck:Leak
   match-leak-kinds: definite
   fun:malloc
   fun:leak_b
   ...
   fun:main
}
"""
VALGRIND_GAP = """
{
   no_frames_between
   Memcheck:Leak
   fun:malloc
   fun:leak_b
   fun:main
}
"""
VALGRIND_OBJ = """
{
   anything_in_libutil
   Memcheck:Leak
   fun:*alloc
   obj:*/libutil.so*
}
"""
VALGRIND_REACHABLE_ONLY = """
{
   only_reachable
   Memcheck:Leak
   match-leak-kinds: reachable
   fun:leak_b
}
"""
VALGRIND_OTHER_KIND = """
{
   not_a_leak
   Memcheck:Free
   fun:free
   fun:leak_b
}
"""
VALGRIND_SRC = """
{
   by_source_line
   Memcheck:Leak
   src:util.c:20
}
"""


@pytest.mark.parametrize("text,suppressed", [
    (VALGRIND_OK, True), (VALGRIND_GAP, False), (VALGRIND_OBJ, True),
    (VALGRIND_REACHABLE_ONLY, False), (VALGRIND_OTHER_KIND, False), (VALGRIND_SRC, True),
])
def test_valgrind_suppressions(app, capsys, tmp_path, text, suppressed):
    supp = write(tmp_path, "vg.supp", text)
    code, out, _ = gate(capsys, app, "--suppressions", supp, "--max-leak-bytes", 300)
    assert code == (0 if suppressed else 1), out


def test_both_formats_in_one_file_and_unused_listed(app, capsys, tmp_path):
    supp = write(tmp_path, "mix.supp", VALGRIND_OK + "leak:leak_a\nleak:never_used\n")
    code, out, _ = gate(capsys, app, "--suppressions", supp)
    assert code == 0
    assert "suppressed 2 stacks" in out
    assert "unused suppressions: leak:never_used" in out


@pytest.mark.parametrize("text", ["{\n  unterminated\n  Memcheck:Leak\n", "just words\n",
                                  "{\n  name\n  Memcheck:Leak\n  bogus:frame\n}\n"])
def test_bad_suppression_files_are_bad_input(app, capsys, tmp_path, text):
    supp = write(tmp_path, "bad.supp", text)
    code, out, err = gate(capsys, app, "--suppressions", supp)
    assert code == 2
    assert err.startswith("mtrace-report: error: ") and len(err.strip().splitlines()) == 1


def test_missing_suppression_file(app, capsys, tmp_path):
    code, _, err = gate(capsys, app, "--suppressions", tmp_path / "nope.supp")
    assert code == 2 and "nope.supp" in err


def test_baseline_fails_only_on_new_leak_stacks(app, capsys, tmp_path):
    fab = TraceFab()
    fab.stack([("unrelated", "x.c", 1, "/usr/bin/app")])   # shift the stack ids
    p = fab.process(pid=9)
    p.malloc(100, LEAK_A)
    p.exit(0)
    old = fab.write(str(tmp_path / "old.db"))
    code, out, _ = gate(capsys, app, "--baseline", old)
    assert code == 1
    assert "counted: 2000 bytes in 2 blocks from 1 stacks" in out
    assert "in baseline 1 stacks" in out
    code, _, _ = gate(capsys, app, "--baseline", app)
    assert code == 0


def test_junit_parses_and_counts_failures(app, capsys, tmp_path):
    out_xml = tmp_path / "gate.xml"
    code, _, _ = gate(capsys, app, "--max-stack-bytes", 300, "--junit", out_xml)
    assert code == 1
    root = ET.parse(out_xml).getroot()
    suite = root.find("testsuite")
    assert suite.get("failures") == "2" and suite.get("tests") == "2"
    failures = [c.find("failure") for c in suite.findall("testcase")]
    assert all(f is not None for f in failures)
    assert "leak_b" in failures[1].text
    code, _, _ = gate(capsys, app, "--max-leak-bytes", 5000, "--junit", out_xml)
    suite = ET.parse(out_xml).getroot().find("testsuite")
    assert code == 0 and suite.get("failures") == "0" and suite.get("tests") == "1"


def test_heap_errors_gate(tmp_path, capsys):
    path = leaky_app(tmp_path / "e.db", with_error=True)
    code, out, _ = gate(capsys, path, "--max-leak-bytes", 9999, "--max-errors", 0)
    assert code == 1 and "FAIL heap errors: 1 (limit 0)" in out and "double free" in out
    code, _, _ = gate(capsys, path, "--max-leak-bytes", 9999, "--max-errors", 1)
    assert code == 0


def test_leaks_fail_on_leak(app, capsys, tmp_path):
    code, out, _ = run_main(capsys, "leaks", app)
    assert code == 0
    code, out, _ = run_main(capsys, "leaks", app, "--fail-on-leak")
    assert code == 1 and "leak check: FAILED, 2300 bytes in 5 blocks" in out
    supp = write(tmp_path, "all.supp", "leak:main\n")
    code, out, _ = run_main(capsys, "leaks", app, "--fail-on-leak", "--suppressions", supp)
    assert code == 0 and "leak check: passed" in out
