#!/usr/bin/python3
"""How fast and how lean mtrace-report is on a big trace.

    /usr/bin/python3 bench/report_bench.py [--events 20000000] [--keep FILE]

Fabricates a format-3 trace of that many events (bulk SQL inside SQLite: seconds, not
minutes), then runs summary, leaks, top, hist, hist --at, frag, timeline and html on it,
each in its own child process, and prints the wall time and the child's peak RSS (from
wait4's rusage). The target: seconds each, under 200 MiB.

The shape of the trace, scaled from the event count: 4 processes; 20000 distinct stacks of
16 frames over 5000 frames; 50000 distinct sizes; a snapshot per 1000 events (with 24
size buckets and 40 classes each, every row stored: the reader's worst case); 1 event in 40 still live at exit (half leaked); every
event chunk holds 4096 real encoded events (one chunk encoded once, its blob stored for
every chunk: the reports read chunk metadata, and hist --exact decodes them).
"""
import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "py"))

from tracefab import APPLICATION_ID, FORMAT_VERSION, SCHEMA, encode_chunk, encode_sizes  # noqa: E402

PROCESSES = 4
STACKS = 20000
FRAMES = 5000
DEPTH = 16
SIZES = 50000
EVENTS_PER_SNAPSHOT = 1000
LIVE_AT_EXIT_EVERY = 40
CHUNK_EVENTS = 4096
NS_PER_EVENT = 500           # 2M events per second of program time
MIB = 1024 * 1024


def fabricate(path, events):
    if os.path.exists(path):
        os.unlink(path)
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    per_proc = events // PROCESSES
    duration = per_proc * NS_PER_EVENT
    meta = {"format_version": FORMAT_VERSION, "mtrace_version": "bench", "start_unix_ns": 0,
            "duration_ns": duration, "command": '["./big"]', "cwd": "/", "hostname": "bench",
            "options": "{}", "complete": 1, "events": events, "dropped": 0,
            "stack_depth": DEPTH, "page_size": 4096,
            "small_classes": "[" + ",".join(str(16 * i) for i in range(1, 33)) + "]"}
    conn.executemany("INSERT INTO meta VALUES(?, ?)", meta.items())
    gen = "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {}) "
    conn.execute("INSERT INTO modules VALUES(1, '/usr/bin/big', 'ab'), (2, '/usr/lib/libbig.so', 'cd')")
    conn.execute(gen.format(FRAMES - 1) + "INSERT INTO frames SELECT i + 1, 1 + i % 2, i * 16, "
                 "'function_' || i, 'src' || (i % 97) || '.c', 1 + i % 800, 0 FROM n")
    # Stacks that share no frame: a chain of DEPTH trie nodes each (format 3), node i + 1
    # k = i % DEPTH steps in from the outermost frame, so at pos DEPTH - 1 - k.
    conn.execute(gen.format(STACKS - 1) + f"INSERT INTO stacks SELECT i + 1, {DEPTH}, (i + 1) * {DEPTH} FROM n")
    conn.execute(gen.format(STACKS * DEPTH - 1) + "INSERT INTO stack_nodes SELECT "
                 f"i + 1, CASE WHEN i % {DEPTH} = 0 THEN NULL ELSE i END, "
                 f"1 + (((i / {DEPTH}) * {DEPTH} + {DEPTH} - 1 - i % {DEPTH}) * 7919 + i / {DEPTH}) % {FRAMES} FROM n")
    for p in range(1, PROCESSES + 1):
        live = per_proc // LIVE_AT_EXIT_EVERY
        conn.execute("INSERT INTO processes VALUES(?, ?, 1, NULL, './big', '[\"./big\"]', 0, ?, 0, "
                     "NULL, 'exit', ?, 0, ?, ?, 1)", (p, 1000 + p, duration, per_proc,
                                                      live * 300, duration // 2))
        conn.execute("INSERT INTO threads VALUES(?, 0, ?, 'main', 0, ?, ?)",
                     (p, 1000 + p, duration, per_proc))
        conn.executemany("INSERT INTO op_counts VALUES(?, ?, ?, ?)",
                         [(p, 1, per_proc // 2, per_proc * 150), (p, 10, per_proc // 2, 0)])
        conn.execute(gen.format(STACKS - 1) + "INSERT INTO stack_stats SELECT ?, i + 1, "
                     f"{per_proc // 2} / {STACKS} + i % 7, ({per_proc // 2} / {STACKS}) * 300, "
                     f"{per_proc // 2} / {STACKS}, 0, 0, i % 3, 4096 + i, i * 10, i % 50, "
                     "8, 4000, i % 5, (i % 5) * 300, i % 3, (i % 3) * 64 FROM n", (p,))
        sizes = [(i + 1, 1 + per_proc // 2 // SIZES, i % 3) for i in range(SIZES)]
        conn.execute("INSERT INTO size_counts VALUES(?, ?, ?)", (p, SIZES, encode_sizes(sizes)))
        snaps = max(1, per_proc // EVENTS_PER_SNAPSHOT)
        conn.execute(gen.format(snaps - 1) + "INSERT INTO snapshots SELECT ?, i + 1, "
                     f"i * {EVENTS_PER_SNAPSHOT * NS_PER_EVENT}, i * {EVENTS_PER_SNAPSHOT}, "
                     "1000000 + (i % 1000) * 1000, 5000 + i % 1000, 1200000 + (i % 1000) * 1100, "
                     "4000000 + (i % 500) * 4096, 3500000, 900000, 100000 + (i % 77) * 1000 FROM n",
                     (p,))
        conn.execute(gen.format(snaps * 24 - 1) + "INSERT INTO snapshot_sizes SELECT ?, i / 24 + 1, "
                     "i % 24, 10 + i % 13, (10 + i % 13) * (1 << (i % 24)) FROM n", (p,))
        conn.execute(gen.format(snaps * 40 - 1) + "INSERT INTO snapshot_classes SELECT ?, "
                     "i / 40 + 1, 16 * (1 + i % 40), 5 + i % 11, CASE WHEN i % 40 < 32 "
                     "THEN 64 ELSE NULL END FROM n", (p,))
        conn.execute(gen.format(live - 1) + "INSERT INTO live_at_exit SELECT ?, 4096 + i * 64, "
                     f"8 + i % 500, 1 + i % {STACKS}, 0, i * 100, i * 40, "
                     "CASE i % 2 WHEN 0 THEN 'leaked' ELSE 'reachable' END FROM n", (p,))
        conn.execute(gen.format(99) + "INSERT INTO marks SELECT ?, i * ?, 'mark ' || i FROM n",
                     (p, duration // 100))
        chunk = [(1 if i % 2 == 0 else 10, 0, i * NS_PER_EVENT, 0x7F0000000000 + (i // 2) * 64,
                  (i % 500) + 8 if i % 2 == 0 else 0, 1 + i % STACKS, 0)
                 for i in range(CHUNK_EVENTS)]
        blob = encode_chunk(chunk, 0)
        chunk_span = CHUNK_EVENTS * NS_PER_EVENT
        conn.executemany(
            "INSERT INTO event_chunks(proc_id, first_seq, count, first_ns, last_ns, data) "
            "VALUES(?, ?, ?, ?, ?, ?)",
            ((p, c * CHUNK_EVENTS, CHUNK_EVENTS, c * chunk_span, c * chunk_span + chunk_span - NS_PER_EVENT, blob)
             for c in range(per_proc // CHUNK_EVENTS)))
        conn.commit()
    conn.close()


def measure(argv):
    """Run mtrace-report in a child; (seconds, peak RSS in MiB, exit code)."""
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tools"))
    start = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "mtrace_report"] + argv, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.monotonic() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode()
    if child.returncode not in (0, 1):
        print(err, file=sys.stderr)
    return elapsed, usage.ru_maxrss / 1024, child.returncode  # ru_maxrss is KiB on Linux


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=20_000_000)
    ap.add_argument("--keep", metavar="FILE", help="fabricate into FILE and keep it")
    args = ap.parse_args()
    tmpdir = tempfile.mkdtemp(prefix="mtrace-report-bench-")
    path = args.keep or os.path.join(tmpdir, "big.db")
    t0 = time.monotonic()
    if not (args.keep and os.path.exists(path)):
        fabricate(path, args.events)
    print(f"fabricated {args.events} events in {time.monotonic() - t0:.1f} s: "
          f"{os.path.getsize(path) / MIB:.0f} MiB")
    html_out = os.path.join(tmpdir, "report.html")
    mid = args.events // PROCESSES // 2 * NS_PER_EVENT / 1e9
    runs = [["summary", path], ["leaks", path], ["top", path], ["hist", path],
            ["hist", path, "--at", f"{mid:.3f}"], ["frag", path], ["timeline", path],
            ["gate", path], ["html", path, "-o", html_out],
            ["hist", path, "--proc", "1", "--at", "0.05", "--exact"]]
    print(f"{'command':<40} {'seconds':>8} {'peak RSS MiB':>13}")
    for argv in runs:
        seconds, rss, code = measure(argv)
        label = " ".join(a if a != path else "big.db" for a in argv).replace(html_out, "r.html")
        print(f"{label:<40} {seconds:>8.2f} {rss:>13.1f}" + ("" if code in (0, 1) else f"  exit {code}"))
    if not args.keep:
        os.unlink(path)
        if os.path.exists(html_out):
            os.unlink(html_out)
        os.rmdir(tmpdir)


if __name__ == "__main__":
    main()
