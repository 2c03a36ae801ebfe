"""Scenarios shared by the mtrace-report tests: fabricated traces whose every number the
tests work out by hand (see each function's comment), and a way to run the tool."""
import os
import subprocess
import sys

from conftest import ROOT
from tracefab import TraceFab

sys.path.insert(0, str(ROOT / "tools"))

from mtrace_report.cli import main  # noqa: E402

LAUNCHER = ROOT / "tools" / "mtrace-report"

APP = "/usr/bin/app"
LIBUTIL = "/usr/lib/libutil.so.1"
LEAK_A = [("leak_a", "app.c", 10, APP), ("main", "app.c", 50, APP)]
LEAK_B = [("leak_b", "util.c", 20, LIBUTIL), ("helper", "util.c", 25, LIBUTIL),
          ("main", "app.c", 51, APP)]
TEMP = [("make_temp", "app.c", 30, APP), ("main", "app.c", 52, APP)]
KEEP = [("keep_config", "conf.c", 5, APP), ("main", "app.c", 53, APP)]
GROW = [("grow", "app.c", 40, APP), ("main", "app.c", 54, APP)]
SNAP_NS = 100_000
MARK_NS = 150_000


def leaky_app(path, with_error=False, format_version=None):
    """One process, pid 100, ./app --x:
    - 3 x malloc(100) at LEAK_A, 2 x malloc(1000) at LEAK_B: leaked (5 blocks, 2300 bytes)
    - 4 x (malloc(24) + free) at TEMP: temporaries
    - malloc(64) at KEEP: still reachable at exit
    - malloc(16) at GROW, realloc to 4000 at 90 us, snapshot at 100 us (the peak: 6364
      bytes live), then free
    - mark "after setup" at 150 us, calloc(10, 8) at TEMP + free.
    Calls: malloc 11 (2476 bytes), calloc 1 (80), realloc 1 (4000), free 6."""
    fab = TraceFab()
    p = fab.process(pid=100, argv=["./app", "--x"])
    for _ in range(3):
        p.malloc(100, LEAK_A)
    for _ in range(2):
        p.malloc(1000, LEAK_B)
    for _ in range(4):
        p.free(p.malloc(24, TEMP))
    keep = p.malloc(64, KEEP)
    g = p.malloc(16, GROW)
    g = p.realloc(g, 4000, GROW, at=90_000)
    p.snapshot(at=SNAP_NS)
    p.free(g)
    p.mark("after setup", at=MARK_NS)
    p.free(p.calloc(10, 8, TEMP))
    if with_error:
        p.error("double free", 0x1234, 48, "free()", stack=TEMP)
    p.exit(0, status={keep: "reachable"}, at=200_000)
    if format_version is None:
        return fab.write(str(path))
    return fab.write(str(path), format_version=format_version)


def frag_app(path):
    """pid 200: 4 x malloc(1000); snapshot A (in_use 5000, mapped 20000, free 8000, largest
    2000): external 0.75, internal 0.2, overhead 5.0, mapped - requested 16000; free two;
    snapshot B (in_use 2500, mapped 8000, free 4000, largest 4000): 0, 0.2, 4.0, 6000; the
    exit snapshot (2 blocks of class 1024: in use 2048, mapped 6144): 4144 held."""
    fab = TraceFab()
    p = fab.process(pid=200, argv=["./frag"])
    blocks = [p.malloc(1000, TEMP) for _ in range(4)]
    p.snapshot(in_use=5000, mapped=20000, free_bytes=8000, largest_free=2000, at=1_000_000)
    p.free(blocks[0])
    p.free(blocks[2])
    p.snapshot(in_use=2500, mapped=8000, free_bytes=4000, largest_free=4000, at=2_000_000)
    p.exit(0, at=3_000_000)
    return fab.write(str(path))


def run_main(capsys, *argv):
    """mtrace-report in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_tool(*argv, env_extra=None):
    """mtrace-report through its launcher, as a user runs it."""
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([str(LAUNCHER)] + [str(a) for a in argv], capture_output=True,
                          text=True, env=env, timeout=120)
