"""mtrace-report on real recordings: tests/progs/report_*.c recorded with build/mtrace-run,
checked against what each program does on purpose (see the comment at the top of each).

Skipped until the collector exists (build/mtrace-run)."""
import json
import subprocess
import xml.etree.ElementTree as ET

import pytest

from conftest import BUILD
from reportfab import run_tool

MTRACE_RUN = BUILD / "mtrace-run"
PROGS = BUILD / "progs"


def record(tmp_path_factory, prog):
    exe = PROGS / prog
    if not (BUILD / "libmtrace.so").exists():
        pytest.fail("build/libmtrace.so is missing: run make test-build")
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run make test-build")
    out = tmp_path_factory.mktemp(prog) / "t.db"
    r = subprocess.run([str(MTRACE_RUN), "-o", str(out), "--", str(exe)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def leaks_db(tmp_path_factory):
    return record(tmp_path_factory, "report_leaks")


@pytest.fixture(scope="module")
def sizes_db(tmp_path_factory):
    return record(tmp_path_factory, "report_sizes")


@pytest.fixture(scope="module")
def frag_db(tmp_path_factory):
    return record(tmp_path_factory, "report_frag")


def json_of(*argv):
    r = run_tool(*argv, "--json")
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def by_function(entries):
    return {e["frames"][0]["function"]: e for e in entries if e["frames"]}


def test_leaks_exact_at_their_stacks(leaks_db):
    report = json_of("leaks", leaks_db, "--show-reachable", "--limit", "0")
    stacks = by_function(report["stacks"])
    small, big = stacks["leak_small_blocks"], stacks["leak_one_big_block"]
    assert (small["leaked_blocks"], small["leaked_bytes"]) == (4, 96)
    assert (big["leaked_blocks"], big["leaked_bytes"]) == (1, 5000)
    assert [f["function"] for f in small["frames"][:2]] == ["leak_small_blocks", "main"]
    assert small["frames"][0]["file"].endswith("report_leaks.c")
    assert small["frames"][0]["line"] and small["frames"][0]["module"].endswith("report_leaks")
    config = stacks["keep_config"]
    assert (config["reachable_blocks"], config["reachable_bytes"]) == (1, 300)
    assert config["leaked_blocks"] == 0
    assert "make_temporaries" not in stacks


def test_temporaries_rank_first(leaks_db):
    top = json_of("top", leaks_db, "--by", "temporary", "--limit", "1")
    site = top["sites"][0]
    assert site["frames"][0]["function"] == "make_temporaries"
    assert site["temporary"] == 100 and site["allocs"] == 100


def test_gate_on_a_real_recording(leaks_db, tmp_path):
    assert run_tool("gate", leaks_db).returncode == 1
    assert run_tool("gate", leaks_db, "--max-stack-bytes", "5000").returncode == 0
    assert run_tool("gate", leaks_db, "--max-stack-bytes", "4999").returncode == 1
    supp = tmp_path / "known.supp"
    supp.write_text("leak:leak_small_blocks\n{\n  big\n  Memcheck:Leak\n  fun:malloc\n"
                    "  fun:leak_one_big_block\n  fun:main\n}\n")
    junit = tmp_path / "gate.xml"
    r = run_tool("gate", leaks_db, "--suppressions", supp, "--junit", junit)
    assert r.returncode == 0, r.stdout
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"
    assert run_tool("leaks", leaks_db, "--fail-on-leak").returncode == 1


def test_size_mix(sizes_db):
    top = json_of("top", sizes_db, "--limit", "0")
    site = by_function(top["sites"])["alloc_mix"]
    assert site["allocs"] == 38
    assert site["alloc_bytes"] == 10 * 777 + 20 * 1234 + 5 * 4321 + 3 * 70001
    assert (site["min_size"], site["max_size"]) == (777, 70001)
    hist = json_of("hist", sizes_db)
    counts = {b["bucket"]: b["count"] for b in hist["buckets"]}
    assert counts[10] >= 10 and counts[11] >= 20 and counts[13] >= 5
    assert counts[17] == 3


def test_fragmenting_phase(frag_db, tmp_path):
    timeline = json_of("timeline", frag_db)
    proc = timeline["processes"][0]
    assert [m["label"] for m in proc["marks"]] == ["fill", "checkerboard", "release"]
    assert proc["peak"]["bytes"] >= 4000 * 2000
    frag = json_of("frag", frag_db)
    worst = frag["processes"][0]["worst"]
    assert worst["mapped"] > worst["requested"]
    png = tmp_path / "frag.png"
    assert run_tool("frag", frag_db, "--png", png).returncode == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    html = tmp_path / "r.html"
    assert run_tool("html", frag_db, "-o", html).returncode == 0
    assert "http://" not in html.read_text() and "https://" not in html.read_text()


def test_diff_between_recordings(leaks_db, sizes_db):
    d = json_of("diff", leaks_db, sizes_db, "--limit", "0")
    fixed = {e["frames"][0]["function"] for e in d["fixed_leaks"] if e["frames"]}
    assert {"leak_small_blocks", "leak_one_big_block"} <= fixed
    assert d["counts"]["new_leaks"] == 0
    same = json_of("diff", leaks_db, leaks_db)
    assert same["counts"]["new_leaks"] == 0 and same["counts"]["grew"] == 0


FAKE_PRODUCER = PROGS / "fake_producer"


@pytest.fixture(scope="module")
def collector_db(tmp_path_factory):
    """The collector's own test scenario (fake_producer speaks the wire protocol by hand:
    three processes, exec, fork, a lost child, a double free, a mark), recorded without
    the preload library."""
    if not FAKE_PRODUCER.exists():
        pytest.fail(f"{FAKE_PRODUCER} is missing: run make test-build")
    out = tmp_path_factory.mktemp("collector") / "t.db"
    subprocess.run([str(MTRACE_RUN), "--no-preload", "-o", str(out), "--", str(FAKE_PRODUCER)],
                   capture_output=True, timeout=120)
    assert out.exists()
    return out


@pytest.mark.parametrize("argv", [["summary"], ["leaks", "--show-reachable", "--full"],
                                  ["hist"], ["frag"], ["timeline"], ["top", "--by", "calls"],
                                  ["top", "--by", "temporary"], ["gate", "--count-unknown"]])
def test_every_report_reads_the_collectors_trace(collector_db, argv):
    r = run_tool(argv[0], collector_db, *argv[1:])
    assert r.returncode in (0, 1), r.stderr
    assert "Traceback" not in r.stderr and r.stdout
    j = run_tool(argv[0], collector_db, *argv[1:], "--json")
    json.loads(j.stdout)


def test_leak_totals_match_the_raw_table(collector_db):
    import sqlite3
    conn = sqlite3.connect(str(collector_db))
    raw = dict(conn.execute("SELECT status, count(*) FROM live_at_exit GROUP BY status"))
    raw_bytes = dict(conn.execute("SELECT status, sum(size) FROM live_at_exit GROUP BY status"))
    conn.close()
    totals = json_of("leaks", collector_db)["totals"]
    assert totals["leaked_blocks"] == raw.get("leaked", 0)
    assert totals["leaked_bytes"] == (raw_bytes.get("leaked") or 0)
    assert totals["reachable_blocks"] == raw.get("reachable", 0)
    assert totals["unknown_blocks"] == raw.get("unknown", 0)


def test_html_and_diff_on_the_collectors_trace(collector_db, tmp_path):
    out = tmp_path / "r.html"
    assert run_tool("html", collector_db, "-o", out).returncode == 0
    assert "https://" not in out.read_text() and "http://" not in out.read_text()
    d = json_of("diff", collector_db, collector_db)
    assert d["counts"]["new_leaks"] == 0 and d["counts"]["grew"] == 0
