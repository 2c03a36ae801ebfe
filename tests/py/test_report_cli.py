"""mtrace-report as a user runs it (through tools/mtrace-report): every bad input is one
line on stderr and exit 2, never a traceback; charts are real PNG/SVG with their axis
labels; the HTML report is one file that references nothing outside itself."""
import os
import re
import sqlite3
import xml.etree.ElementTree as ET

import pytest

from reportfab import frag_app, leaky_app, run_main, run_tool
from tracefab import TraceFab

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRACE_COMMANDS = ("summary", "leaks", "hist", "frag", "timeline", "top", "html", "gate")


def assert_bad_input(result, *words):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mtrace-report: error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for w in words:
        assert w in lines[0]


@pytest.fixture
def app(tmp_path):
    return leaky_app(tmp_path / "app.db")


@pytest.mark.parametrize("command", TRACE_COMMANDS)
def test_missing_file(tmp_path, command):
    assert_bad_input(run_tool(command, tmp_path / "none.db"), "no such file", "mtrace-run")


def test_directory(tmp_path):
    assert_bad_input(run_tool("summary", tmp_path), "is a directory")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    assert_bad_input(run_tool("leaks", path), "is empty")


def test_not_sqlite(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("hello, I am text\n" * 20)
    assert_bad_input(run_tool("summary", path), "not an SQLite database")


def test_sqlite_but_not_a_trace(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    assert_bad_input(run_tool("summary", path), "not an mtrace trace")


def test_newer_format(tmp_path):
    fab = TraceFab()
    fab.process().exit(0)
    path = fab.write(str(tmp_path / "new.db"), user_version=4)
    r = run_tool("leaks", path)
    assert_bad_input(r)
    assert r.stderr.strip() == ("mtrace-report: error: trace format 4 is newer than this "
                                "mtrace-report (3); upgrade mtrace")


def test_format_zero_is_being_created(tmp_path):
    fab = TraceFab()
    fab.process().exit(0)
    assert_bad_input(run_tool("summary", fab.write(str(tmp_path / "z.db"), user_version=0)),
                     "no trace format version")


def test_missing_table(tmp_path):
    fab = TraceFab()
    fab.process().exit(0)
    path = fab.write(str(tmp_path / "m.db"))
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE stack_stats")
    conn.commit()
    conn.close()
    assert_bad_input(run_tool("summary", path), "stack_stats")


def big_trace(path):
    """Enough events for a multi-page file, so that cutting it loses pages."""
    fab = TraceFab(chunk_events=64)
    p = fab.process(pid=11)
    stacks = [[(f"f{i}", "big.c", i, "/usr/bin/big"), ("main", "big.c", 1, "/usr/bin/big")]
              for i in range(50)]
    for i in range(3000):
        p.malloc(16 + i % 500, stacks[i % 50])
    p.exit(0)
    return fab.write(str(path))


def test_truncated(tmp_path):
    path = big_trace(tmp_path / "t.db")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    assert_bad_input(run_tool("leaks", path), "truncated")


def test_corrupt_pages(tmp_path):
    path = big_trace(tmp_path / "c.db")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(4096)                      # page 2 onwards: the schema's tables
        f.write(b"\xff" * (size - 8192))
    r = run_tool("summary", path)
    assert_bad_input(r)
    assert "corrupt" in r.stderr or "not a complete" in r.stderr or "malformed" in r.stderr


def test_corrupt_table_in_diff_names_the_bad_trace(tmp_path):
    """Validation passes (the schema is intact) and the failure comes from a query:
    SQLite's error does not say which file, so the line must name A as well as B."""
    good = big_trace(tmp_path / "good.db")
    bad = big_trace(tmp_path / "bad.db")
    conn = sqlite3.connect(bad)
    root, = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'stack_stats'").fetchone()
    page_size, = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with open(bad, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)
    assert_bad_input(run_tool("diff", bad, good), "bad.db", "corrupt")


def test_truncated_size_counts_blob(tmp_path):
    """A size table cut inside a value: one line naming it, not a traceback."""
    path = big_trace(tmp_path / "t.db")
    conn = sqlite3.connect(path)
    (blob,) = conn.execute("SELECT data FROM size_counts").fetchone()
    conn.execute("UPDATE size_counts SET data = ?", (blob[:-1] + b"\xff",))
    conn.commit()
    conn.close()
    assert_bad_input(run_tool("hist", path), "size_counts", "corrupt")


def test_incomplete_trace_warns_and_reports(tmp_path):
    fab = TraceFab()
    p = fab.process(pid=77)
    p.malloc(10, [("f", "a.c", 1, "/bin/a")])
    path = fab.write(str(tmp_path / "i.db"), complete=0, wal=True)
    r = run_tool("summary", path)
    assert r.returncode == 0
    assert r.stderr.startswith("mtrace-report: warning: ") and "incomplete" in r.stderr
    assert "INCOMPLETE" in r.stdout and "77" in r.stdout


def test_empty_trace(tmp_path):
    path = TraceFab().write(str(tmp_path / "none.db"))
    assert_bad_input(run_tool("summary", path), "is empty", "no process")


def test_unknown_pid_and_proc(app):
    assert_bad_input(run_tool("leaks", app, "--pid", "999"), "no process with pid 999", "100")
    assert_bad_input(run_tool("top", app, "--proc", "7"), "proc_id 7")


def test_usage_errors_are_one_line(app):
    assert_bad_input(run_tool("leaks", app, "--no-such-option"), "--no-such-option")
    assert_bad_input(run_tool("top", app, "--by", "color"), "--by")
    assert_bad_input(run_tool("top", app, "--limit", "-3"), "negative")
    assert_bad_input(run_tool("hist", app, "--exact"), "--exact needs --at")
    assert_bad_input(run_tool("timeline", app, "--from", "2", "--to", "1"), "before")
    assert_bad_input(run_tool("top", app, "--from", "nan"), "not a finite time")
    assert_bad_input(run_tool("frag", app, "--to", "inf"), "not a finite time")
    assert_bad_input(run_tool("hist", app, "--at", "nan"), "not a finite time")


def test_pid_filter_selects_a_process(tmp_path, capsys):
    fab = TraceFab()
    for pid, size in ((10, 111), (20, 222)):
        p = fab.process(pid=pid)
        p.malloc(size, [("f%d" % pid, "a.c", 1, "/bin/a")])
        p.exit(0)
    path = fab.write(str(tmp_path / "two.db"))
    code, out, _ = run_main(capsys, "leaks", path, "--pid", "20")
    assert code == 0 and "222 bytes" in out and "111 bytes" not in out
    code, out, _ = run_main(capsys, "summary", path)
    assert "leaks: 333 bytes in 2 blocks" in out


# Each chart's labels, for the files of --png/--svg and for the charts inside the HTML report.
CHART_LABELS = {
    "hist": ["Requested sizes, all allocations", "requested size (bytes, power-of-two buckets)",
             "allocator size class (bytes)", "blocks"],
    "frag": ["Heap fragmentation over time", "time (s)", "fragmentation (%)",
             "overhead (mapped / requested)", "worst"],
    "timeline": ["Heap over time", "time (s)", "heap (KiB)", "after setup", "peak 6364 B"],
}


def test_charts_are_png_and_svg_with_labels(tmp_path, capsys):
    app = leaky_app(tmp_path / "app.db")
    frag = frag_app(tmp_path / "frag.db")
    cases = [("hist", app, CHART_LABELS["hist"]), ("frag", frag, CHART_LABELS["frag"]),
             ("timeline", app, CHART_LABELS["timeline"])]
    for command, trace, labels in cases:
        png, svg = tmp_path / f"{command}.png", tmp_path / f"{command}.svg"
        code, _, err = run_main(capsys, command, trace, "--png", png, "--svg", svg)
        assert code == 0, err
        assert png.read_bytes()[:8] == PNG_MAGIC
        root = ET.parse(svg).getroot()
        assert root.tag.endswith("svg")
        text = " ".join(t for t in root.itertext())
        for label in labels:
            assert label in text, (command, label)


def no_matplotlib(tmp_path):
    """Environment in which importing matplotlib fails."""
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    return {"PYTHONPATH": str(fake)}


def test_chart_without_matplotlib_is_one_clear_line(app, tmp_path):
    r = run_tool("hist", app, "--png", tmp_path / "h.png", env_extra=no_matplotlib(tmp_path))
    assert_bad_input(r, "apt-get install python3-matplotlib")


def test_html_is_one_self_contained_file(app, tmp_path):
    out = tmp_path / "report.html"
    r = run_tool("html", app, "-o", out)
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    assert not re.search(r"https?://", page)
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    assert page.count("<svg") == 3
    for title in ("Summary", "Leaks", "Heap errors", "Heap over time", "Top allocation sites",
                  "Allocation sizes", "Fragmentation"):
        assert f">{title}</h2>" in page
    assert "leak_b at util.c:20" in page
    assert sorted(os.listdir(tmp_path)) == ["app.db", "report.html"]


def html_charts(page):
    """The inline <svg> charts of a report, each parsed as XML, by their title."""
    charts = [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", page, re.S)]
    return {c.find("title").text: " ".join(c.itertext()) for c in charts}


def test_html_charts_are_svg_with_labels_without_matplotlib(tmp_path):
    """The report draws its charts itself: they are there, with their labels, even when
    matplotlib cannot be imported (and so never costs its import time)."""
    env = no_matplotlib(tmp_path)
    for trace, kinds in ((leaky_app(tmp_path / "app.db"), ("hist", "timeline")),
                         (frag_app(tmp_path / "frag.db"), ("frag",))):
        out = tmp_path / "report.html"
        r = run_tool("html", trace, "-o", out, env_extra=env)
        assert r.returncode == 0, r.stderr
        charts = html_charts(out.read_text())
        assert len(charts) == 3
        for kind in kinds:
            title = CHART_LABELS[kind][0]
            assert title in charts, (kind, list(charts))
            for label in CHART_LABELS[kind]:
                assert label in charts[title], (kind, label)


def test_progress_only_when_asked(app, tmp_path):
    quiet = run_tool("hist", app, "--at", "0.0001", "--exact")
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = run_tool("hist", app, "--at", "0.0001", "--exact", "--progress")
    assert "mtrace-report: replaying events" in loud.stderr


def test_installed_layout(app, tmp_path):
    """`make install` copies the package and find-python.sh to PREFIX/lib/mtrace and
    rewrites the launcher's MTRACE_PYDIR line: the copy must run from anywhere."""
    import shutil
    from reportfab import LAUNCHER, ROOT
    lib = tmp_path / "prefix" / "lib" / "mtrace"
    bin_dir = tmp_path / "prefix" / "bin"
    shutil.copytree(ROOT / "tools" / "mtrace_report", lib / "mtrace_report")
    shutil.copy(ROOT / "tools" / "find-python.sh", lib / "find-python.sh")
    bin_dir.mkdir()
    text = LAUNCHER.read_text()
    assert re.search(r"^MTRACE_PYDIR=", text, re.M)
    installed = bin_dir / "mtrace-report"
    installed.write_text(re.sub(r"^MTRACE_PYDIR=.*$", f"MTRACE_PYDIR={lib}", text, flags=re.M))
    installed.chmod(0o755)
    import subprocess
    r = subprocess.run([str(installed), "summary", str(app)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "leaks: 2300 bytes in 5 blocks" in r.stdout


def test_missing_column(tmp_path):
    fab = TraceFab()
    fab.process().exit(0)
    path = fab.write(str(tmp_path / "col.db"))
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE processes DROP COLUMN peak_ns")
    conn.commit()
    conn.close()
    assert_bad_input(run_tool("summary", path), "processes lacks column(s) peak_ns")


def test_exe_filter_and_quiet_processes(tmp_path, capsys):
    fab = TraceFab()
    for pid, exe, size in ((10, "/usr/bin/make", 0), (20, "/src/tests/test_list", 48),
                           (30, "/src/tests/test_map", 0)):
        p = fab.process(pid=pid, argv=[exe])
        if size:
            p.malloc(size, [("list_push", "list.c", 3, exe)])
        p.exit(0)
    path = fab.write(str(tmp_path / "check.db"))
    code, out, _ = run_main(capsys, "leaks", path)
    assert "== pid 20 /src/tests/test_list" in out and "== pid 10" not in out
    assert "2 other processes: nothing to list" in out
    code, out, _ = run_main(capsys, "gate", path, "--exe", "test_map")
    assert code == 0
    code, out, _ = run_main(capsys, "gate", path, "--exe", "test_*")
    assert code == 1 and "48 bytes in 1 blocks, pid 20" in out
    code, out, _ = run_main(capsys, "gate", path, "--exe", "*/make")
    assert code == 0
    assert_bad_input(run_tool("summary", path, "--exe", "nothing*"), "nothing*")


def test_time_charts_draw_the_busiest_processes(tmp_path, capsys):
    fab = TraceFab()
    for i in range(10):
        p = fab.process(pid=1000 + i, start_ns=0)
        p.malloc(100 * (i + 1), [("work", "w.c", 1, "/bin/w")])
        p.snapshot(at=1_000_000)
        p.exit(0, at=2_000_000)
    path = fab.write(str(tmp_path / "many.db"))
    svg = tmp_path / "t.svg"
    code, _, err = run_main(capsys, "timeline", path, "--svg", svg)
    assert code == 0, err
    text = " ".join(ET.parse(svg).getroot().itertext())
    assert "Heap over time (8 of 10 processes)" in text
    assert "pid 1009" in text and "pid 1000" not in text and "pid 1001" not in text


def test_html_lists_heap_errors_with_stacks(tmp_path):
    path = leaky_app(tmp_path / "e.db", with_error=True)
    out = tmp_path / "e.html"
    assert run_tool("html", path, "-o", out).returncode == 0
    page = out.read_text()
    section = page.split("id='errors'>Heap errors</h2>")[1].split("<h2")[0]
    assert "double free of 0x1234 (size 48) in free()" in section
    assert "make_temp at app.c:30" in section
