#!/usr/bin/env python3
"""mtrace benchmarks: our allocator against glibc and the others, our tracer against
heaptrack. Standard library only. Normally run through `make bench` (top directory),
which builds the libraries and the workloads first:

    make bench                                   full scale, best of 5 (a few minutes on 2 cores)
    make bench BENCH_SCALE=0.1 BENCH_REPEAT=1    quick look (numbers are indicative only)
    make bench BENCH_ONLY=churn,large            some workloads only
    make bench BENCH_ARGS='--json out.json --no-profilers'

or directly: /usr/bin/python3 bench/run.py --build build --scale 0.1 (see --help).

Workloads (bench/workloads/*.c, built with plain `cc -O2 -pthread`, each prints only a
checksum of what it wrote, plus `key=value` metrics for some; seeded, so every allocator
serves exactly the same requests and must print the same checksum):
    churn     small-object churn: 16-256 B, a 64K-slot working set, 20M replacements
    realloc   strings (exact growth) and vectors (doubling) grown by realloc, 64 B-256 KiB
    xthread   producer/consumer on 2 threads: one allocates, the other frees (lock-free ring)
    large     128 KiB-8 MiB blocks, every page written, 16 live
    fragment  mixed sizes, free every other, allocate bigger ones, free all; 30 rounds;
              reports the resident set after the last free (rss_after_free_kib)
    aligned   posix_memalign / aligned_alloc, 32 B-4 KiB alignment, 16 B-8 KiB
    loop      10M tight malloc(n)/free pairs, n = 16..256 B

Configurations: every allocator present is chosen with LD_PRELOAD: glibc (no preload),
ours (build/libmtalloc.so), ours-nohard (build/libmtalloc-nohard.so: the same without the
always-on integrity checks, so ours/ours-nohard is what the checks cost), ours-debug
(build/libmtalloc.so with MTRACE_DEBUG=1: the debug allocator of docs/hardening.md), jemalloc,
mimalloc, tcmalloc (found in the system library directories; skipped when absent).
Profilers, when present: mtrace (`build/mtrace-run -o trace.db -- prog`, else
LD_PRELOAD=build/libmtrace.so MTRACE_OUT=trace.db), mtrace-tsc (the same with
MTRACE_CLOCK=tsc: what an exact TSC read on every event costs) and heaptrack
(`heaptrack -o X prog`).

Method: for each repetition, for each workload, every configuration runs once (profilers
only in the first --profile-repeat repetitions, default 1: their slowdowns are large and
they dominate the run time), in a seeded random order that differs between repetitions
and workloads, so that no configuration always runs first, last or after the same one.
Times are the fastest run of each configuration, and ratios are of fastest runs: on this
kind of VM (virtio balloon), memory-heavy runs fall into a slow mode with extra system time
about every other run, whatever the allocator, which a median of a few runs does not filter
out and a fixed rotation turned into a bias against whichever configuration always ran at
the slow parity. Each run goes through build/bench-launch (launch.c), which times the command and
takes its ru_maxrss from wait4: Python's own resident set would otherwise count in every
child's peak (for a profiler, the peak is that of the largest process of its tree). A run
that fails, times out or prints a different checksum than glibc is reported as such, never
averaged in, and listed under the tables.

Output (stdout, markdown, to paste into README.md):
    header     cores, CPU, kernel, glibc, load average, scale, repetitions, versions
    time       per workload: glibc's fastest seconds, then each allocator's time relative
               to glibc (< 1 is faster), the hardening cost (ours / ours-nohard, fastest
               wall times), and a geometric-mean row
    memory     per workload: median peak RSS in MiB per allocator, the fragment
               workload's RSS after freeing everything, and a geometric-mean row
    profilers  per workload: slowdown vs untraced glibc, trace bytes per event (file size
               / events; mtrace: meta.events of trace.db, heaptrack: its + and - records)
               and mtrace's time / heaptrack's, and mtrace's waits (median over repetitions
               of meta.ring_waits: times the program found a ring full and waited for the
               collector; 0 = it never waited); skipped cleanly when neither exists
The same tables and every raw run are written to bench/results/<UTC time>.md and .json;
`--json FILE` writes the JSON there too. Progress goes to stderr.
"""

import argparse
import glob
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))

from mtrace_report.db import open_trace  # noqa: E402
from mtrace_report.errors import ReportError  # noqa: E402

# Canonical order of the workloads in the tables; any other program found in the bin
# directory is run after these.
WORKLOADS = ["churn", "realloc", "xthread", "large", "fragment", "aligned", "loop"]

# Other allocators: name and the library file patterns to look for, first match wins.
SYSTEM_ALLOCATORS = [
    ("jemalloc", ["libjemalloc.so.2"]),
    ("mimalloc", ["libmimalloc.so.2", "libmimalloc.so.2*"]),
    ("tcmalloc", ["libtcmalloc_minimal.so.4"]),
]

KIB_PER_MIB = 1024
# A run longer than this is killed and reported as a timeout (heaptrack on the largest
# workload takes well under a minute on the reference machine).
DEFAULT_TIMEOUT_S = 300
# After a timeout's SIGTERM, how long the run has to exit before SIGKILL.
KILL_GRACE_S = 5
# How often to look whether a timed-out run's process group is gone.
GROUP_POLL_S = 0.01
# Where heaptrack's script makes its FIFO, named after its pid.
HEAPTRACK_FIFOS = "/tmp/heaptrack_fifo*"
# Bytes read at a time when counting heaptrack's records.
COUNT_CHUNK = 1 << 20


class Config:
    """One way of running a workload: an allocator, or a profiler writing a trace."""

    def __init__(self, name, kind, preload=None, describe="", trace=None, env=None):
        self.name = name
        self.kind = kind          # "alloc" or "profiler"
        self.preload = preload    # library for LD_PRELOAD, or None
        self.describe = describe  # shown in the header
        self.trace = trace        # profiler only: "mtrace-run", "libmtrace" or "heaptrack"
        self.env = env or {}      # further variables for this configuration's runs


def library_dirs():
    dirs = []
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        dirs += ["/usr/lib/" + multiarch, "/lib/" + multiarch]
    dirs += ["/usr/lib64", "/usr/lib", "/usr/local/lib"]
    return [d for d in dirs if os.path.isdir(d)]


def find_library(patterns):
    for d in library_dirs():
        for pat in patterns:
            hits = sorted(glob.glob(os.path.join(d, pat)))
            if hits:
                return hits[0]
    return None


def package_version(path):
    """Debian package and version owning a file, or "" (dpkg only: a local query)."""
    if not shutil.which("dpkg-query"):
        return ""
    try:
        owner = subprocess.run(["dpkg-query", "-S", os.path.realpath(path)],
                               capture_output=True, text=True, timeout=10)
        if owner.returncode != 0:
            owner = subprocess.run(["dpkg-query", "-S", path],
                                   capture_output=True, text=True, timeout=10)
        if owner.returncode != 0:
            return ""
        pkg = owner.stdout.split(":")[0].strip()
        ver = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg],
                             capture_output=True, text=True, timeout=10)
        return f"{pkg} {ver.stdout.strip()}" if ver.returncode == 0 else pkg
    except (OSError, subprocess.SubprocessError):
        return ""


def discover_configs(build, want_profilers):
    glibc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else "glibc"
    configs = [Config("glibc", "alloc", None, glibc or "glibc")]
    for name, lib, what, env in [
            ("ours", "libmtalloc.so", "build/libmtalloc.so", None),
            ("ours-nohard", "libmtalloc-nohard.so",
             "build/libmtalloc-nohard.so (no integrity checks)", None),
            ("ours-debug", "libmtalloc.so",
             "MTRACE_DEBUG=1 build/libmtalloc.so (the debug allocator, docs/hardening.md)",
             {"MTRACE_DEBUG": "1"})]:
        path = os.path.join(build, lib)
        if os.path.exists(path):
            configs.append(Config(name, "alloc", path, what, env=env))
    for name, patterns in SYSTEM_ALLOCATORS:
        path = find_library(patterns)
        if path:
            ver = package_version(path)
            configs.append(Config(name, "alloc", path, f"{path}" + (f" ({ver})" if ver else "")))
    notes = []
    if want_profilers:
        run = os.path.join(build, "mtrace-run")
        lib = os.path.join(build, "libmtrace.so")
        if os.access(run, os.X_OK):
            configs.append(Config("mtrace", "profiler", None, "build/mtrace-run -o trace.db --",
                                  "mtrace-run"))
            # The same with a TSC read on every event (MTRACE_CLOCK=tsc) instead of the
            # default's one in 8: what exact timestamps cost, side by side.
            configs.append(Config("mtrace-tsc", "profiler", None,
                                  "MTRACE_CLOCK=tsc build/mtrace-run -o trace.db --",
                                  "mtrace-run", env={"MTRACE_CLOCK": "tsc"}))
        elif os.path.exists(lib):
            configs.append(Config("mtrace", "profiler", lib,
                                  "LD_PRELOAD=build/libmtrace.so MTRACE_OUT=trace.db", "libmtrace"))
        else:
            notes.append("mtrace tracer not built (no build/mtrace-run nor build/libmtrace.so)")
        heaptrack = shutil.which("heaptrack")
        if heaptrack:
            ver = package_version(heaptrack)
            configs.append(Config("heaptrack", "profiler", None,
                                  "heaptrack -o X" + (f" ({ver})" if ver else ""), "heaptrack"))
        else:
            notes.append("heaptrack not installed")
    return configs, notes


def base_environment():
    """The environment of every run: ours, without any preload or mtrace option that
    would change what is measured."""
    return {k: v for k, v in os.environ.items()
            if k != "LD_PRELOAD" and not k.startswith("MTRACE_") and k != "BENCH_SCALE"}


def command_for(cfg, argv, trace_base):
    """Command line running argv under cfg, and the variables to set for it only;
    trace_base is where a profiler writes its trace (without extension for heaptrack)."""
    settings = {}
    cmd = list(argv)
    if cfg.kind == "alloc":
        if cfg.preload:
            settings["LD_PRELOAD"] = cfg.preload
        settings.update(cfg.env)
    elif cfg.trace == "mtrace-run":
        cmd = [os.path.join(ARGS.build, "mtrace-run"), "-o", trace_base + ".db", "--"] + cmd
        settings.update(cfg.env)
    elif cfg.trace == "libmtrace":
        settings["LD_PRELOAD"] = cfg.preload
        settings["MTRACE_OUT"] = trace_base + ".db"
    elif cfg.trace == "heaptrack":
        cmd = ["heaptrack", "-o", trace_base] + cmd
    return cmd, settings


def run_once(cmd, settings, cwd, timeout):
    """Runs cmd through bench-launch (see launch.c: why not measure from here); returns
    wall seconds, peak RSS (KiB), status text ("ok", "exit N", "signal N", "timeout"),
    stdout and the tail of stderr."""
    result_file = os.path.join(cwd, "launch-result")
    if os.path.exists(result_file):
        os.remove(result_file)
    launch = [ARGS.launcher, result_file] + [f"{k}={v}" for k, v in settings.items()] + ["--"]
    out = tempfile.TemporaryFile(dir=cwd)
    err = tempfile.TemporaryFile(dir=cwd)
    timed_out = threading.Event()
    proc = subprocess.Popen(launch + cmd, env=base_environment(), cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                            start_new_session=True)

    def signal_tree(sig):
        try:
            os.killpg(proc.pid, sig)  # the group we created, nothing else
        except ProcessLookupError:
            pass

    def stop_tree():
        # SIGTERM first, so that a profiler may stop its helpers; SIGKILL after the grace.
        killer.start()
        timed_out.set()
        signal_tree(signal.SIGTERM)

    killer = threading.Timer(KILL_GRACE_S, signal_tree, (signal.SIGKILL,))
    timer = threading.Timer(timeout, stop_tree)
    timer.start()
    try:
        proc.wait()
    finally:
        timer.cancel()
        timer.join()  # if it fired, stop_tree has finished
        if timed_out.is_set():
            # Some of the group may outlive the launcher (or be zombies until their new
            # parent reaps them): the SIGKILL stays armed until the group is gone.
            deadline = time.monotonic() + KILL_GRACE_S
            while killer.is_alive() and time.monotonic() < deadline:
                try:
                    os.killpg(proc.pid, 0)
                except ProcessLookupError:
                    killer.cancel()
                    break
                time.sleep(GROUP_POLL_S)
            killer.join()
    out.seek(0)
    err.seek(0)
    stdout = out.read().decode(errors="replace")
    stderr = err.read().decode(errors="replace")[-2000:]
    out.close()
    err.close()
    measured = {}
    try:
        with open(result_file) as f:
            measured = dict(kv.split("=", 1) for kv in f.read().split())
    except (OSError, ValueError):
        pass
    if timed_out.is_set():
        return float(timeout), 0.0, 0, "timeout", stdout, stderr
    if "status" not in measured:
        return 0.0, 0.0, 0, f"launcher failed ({proc.returncode})", stdout, stderr
    code = os.waitstatus_to_exitcode(int(measured["status"]))
    state = "ok" if code == 0 else f"signal {-code}" if code < 0 else f"exit {code}"
    return (int(measured["wall_ns"]) / 1e9, int(measured["user_ns"]) / 1e9, int(measured["maxrss_kib"]),
            state, stdout, stderr)


def parse_metrics(stdout):
    """The workload's key=value lines (checksum and metrics); profilers' own lines, which
    have no '=' at the start of a word, are ignored."""
    metrics = {}
    for line in stdout.splitlines():
        line = line.strip()
        key, sep, value = line.partition("=")
        if sep and key and key.replace("_", "").isalnum() and " " not in line:
            metrics[key] = value
    return metrics


def mtrace_meta(db, key):
    """An integer of an mtrace trace's meta, or None when it cannot be read (missing,
    incomplete or of another format): mtrace-report's own validating reader."""
    try:
        trace = open_trace(db, warn=lambda _text: None)
    except ReportError:
        return None
    try:
        return trace.meta_int(key, None)
    finally:
        trace.close()


def mtrace_events(db):
    """meta.events of an mtrace trace, or None."""
    return mtrace_meta(db, "events")


def heaptrack_events(path):
    """Allocation (+) and deallocation (-) records in a heaptrack file, or None. A realloc
    is one of each, where mtrace counts one event: heaptrack's per-event figure is for its
    own event granularity."""
    if path.endswith(".zst"):
        if not shutil.which("zstd"):
            return None
        reader = subprocess.Popen(["zstd", "-dc", path], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        stream = reader.stdout
    elif path.endswith(".gz"):
        import gzip
        reader, stream = None, gzip.open(path, "rb")
    else:
        reader, stream = None, open(path, "rb")
    count, prev = 0, b"\n"
    with stream:
        while True:
            chunk = stream.read(COUNT_CHUNK)
            if not chunk:
                break
            data = prev + chunk
            count += data.count(b"\n+") + data.count(b"\n-")
            prev = chunk[-1:]
    if reader:
        reader.wait()
    return count


def trace_size_and_events(cfg, trace_base):
    """(bytes, events) of the trace a profiler wrote; None for what is unknown."""
    if cfg.trace in ("mtrace-run", "libmtrace"):
        db = trace_base + ".db"
        if not os.path.exists(db):
            return None, None
        size = sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))
        return size, mtrace_events(db)
    if cfg.trace == "heaptrack":
        files = sorted(glob.glob(trace_base + ".*"))
        if not files:
            return None, None
        return os.path.getsize(files[0]), heaptrack_events(files[0])
    return None, None


def remove_dead_fifos(existing):
    """heaptrack's script removes its FIFO (/tmp/heaptrack_fifo<its pid>) only when it
    exits normally; after a timeout or a crash, remove the ones this run left behind, i.e.
    new since the run started and whose process is gone."""
    for path in set(glob.glob(HEAPTRACK_FIFOS)) - existing:
        pid = path[len(HEAPTRACK_FIFOS) - 1:]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                os.remove(path)
            except OSError:
                pass


def measure(cfg, workload, argv, rep, tmpdir):
    trace_base = os.path.join(tmpdir, f"{workload}-{cfg.name}-{rep}")
    cmd, settings = command_for(cfg, argv, trace_base)
    fifos_before = set(glob.glob(HEAPTRACK_FIFOS)) if cfg.trace == "heaptrack" else set()
    wall, user, rss, state, stdout, stderr = run_once(cmd, settings, tmpdir, ARGS.timeout)
    if cfg.trace == "heaptrack" and state != "ok":
        remove_dead_fifos(fifos_before)
    metrics = parse_metrics(stdout)
    result = {"config": cfg.name, "workload": workload, "rep": rep, "wall_s": wall,
              "user_s": user, "maxrss_kib": rss, "state": state, "checksum": metrics.pop("checksum", None),
              "metrics": {k: int(v) if v.isdigit() else v for k, v in metrics.items()}}
    if state == "ok" and result["checksum"] is None:
        result["state"] = "no checksum"
    if state != "ok":
        result["stderr"] = stderr
    if cfg.kind == "profiler":
        # Deterministic workloads: the trace's size and events are measured once.
        if rep == 0 and state == "ok":
            result["trace_bytes"], result["events"] = trace_size_and_events(cfg, trace_base)
        # Waits for the collector depend on timing: every repetition's.
        if state == "ok" and cfg.trace in ("mtrace-run", "libmtrace"):
            result["ring_waits"] = mtrace_meta(trace_base + ".db", "ring_waits")
            cpu_ns = mtrace_meta(trace_base + ".db", "collector_cpu_ns")
            result["collector_cpu_s"] = None if cpu_ns is None else cpu_ns / 1e9
        for path in glob.glob(trace_base + "*"):
            os.remove(path)
    return result


def geomean(values):
    values = [v for v in values if v is not None and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Results:
    """Every run, and the paired summaries the tables show."""

    def __init__(self, configs, workloads):
        self.configs = configs
        self.workloads = workloads
        self.runs = []

    def add(self, run):
        self.runs.append(run)

    def of(self, workload, config):
        return [r for r in self.runs if r["workload"] == workload and r["config"] == config]

    def failure(self, workload, config):
        """Why a configuration has no valid figure for a workload, or None."""
        runs = self.of(workload, config)
        if not runs:
            return "–"
        reference = {r["checksum"] for r in self.of(workload, "glibc") if r["state"] == "ok"}
        for r in runs:
            if r["state"] != "ok":
                return r["state"]
            if reference and r["checksum"] not in reference:
                return "bad checksum"
        return None

    def times(self, workload, config, key="wall_s"):
        return {r["rep"]: r[key] for r in self.of(workload, config) if r["state"] == "ok"}

    def best_ratio(self, workload, num, den, key="wall_s"):
        """Fastest time of num / fastest time of den (wall time, or key="user_s": user CPU
        time). The fastest, not the median: on this kind of VM, memory-heavy runs fall
        into a slow mode (extra system time, ~every other run, whatever the allocator)
        that a median of a few runs cannot filter out, while the fastest run of each
        configuration is the one undisturbed by it."""
        if self.failure(workload, num) or self.failure(workload, den):
            return None
        a = self.times(workload, num, key).values()
        b = self.times(workload, den, key).values()
        if not a or not b or min(b) <= 0:
            return None
        return min(a) / min(b)

    def best_time(self, workload, config):
        if self.failure(workload, config):
            return None
        times = self.times(workload, config).values()
        return min(times) if times else None

    def median_rss_mib(self, workload, config):
        if self.failure(workload, config):
            return None
        return median([r["maxrss_kib"] / KIB_PER_MIB for r in self.of(workload, config)])

    def median_metric(self, workload, config, key):
        if self.failure(workload, config):
            return None
        return median([r["metrics"].get(key) for r in self.of(workload, config)
                       if isinstance(r["metrics"].get(key), int)])

    def median_waits(self, workload, config):
        if self.failure(workload, config):
            return None
        return median([r.get("ring_waits") for r in self.of(workload, config)])

    def collector_cpu(self, workload, config):
        """Median CPU seconds of mtrace's collector (meta.collector_cpu_ns)."""
        if self.failure(workload, config):
            return None
        return median([r.get("collector_cpu_s") for r in self.of(workload, config)])

    def collector_rate(self, workload, config):
        """Events per CPU second of the collector: the rate it sustains."""
        cpu = self.collector_cpu(workload, config)
        events = next((r["events"] for r in self.of(workload, config) if r.get("events")), None)
        return events / cpu if cpu and events else None

    def trace_per_event(self, workload, config):
        for r in self.of(workload, config):
            if r.get("trace_bytes") and r.get("events"):
                return r["trace_bytes"] / r["events"]
        return None


def fmt(value, digits=2, suffix=""):
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "--:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine_header(configs, notes, started):
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f", {kib / KIB_PER_MIB / KIB_PER_MIB:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    glibc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else "?"
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    lines = [
        "### mtrace benchmarks",
        "",
        f"- machine: {os.cpu_count()} cores ({cpu or platform.machine()}){mem}, "
        f"Linux {platform.release()}, {glibc}; load average {os.getloadavg()[0]:.2f} at start",
        f"- run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"scale {ARGS.scale:g}, best of {ARGS.repeat} interleaved repetitions"
        + (f" ({ARGS.profile_repeat} for profilers)" if any(c.kind == "profiler" for c in configs)
           and ARGS.profile_repeat != ARGS.repeat else "")
        + (f", mtrace {rev.stdout.strip()}" if rev.returncode == 0 else ""),
    ]
    for c in configs:
        lines.append(f"- {c.name}: {c.describe}")
    for n in notes:
        lines.append(f"- note: {n}")
    return "\n".join(lines)


def complete_workloads(results, workloads, names):
    """Workloads where every one of names has a valid figure: a geometric mean over
    different sets of workloads would compare nothing."""
    return [w for w in workloads if all(results.failure(w, n) is None for n in names)]


def mean_label(complete, workloads, what="geometric mean"):
    if len(complete) == len(workloads):
        return f"**{what}**"
    return f"**{what}** ({len(complete)} of {len(workloads)} workloads: all ran)"


def report(results, configs, notes, started, elapsed):
    allocs = [c.name for c in configs if c.kind == "alloc"]
    others = [a for a in allocs if a != "glibc"]
    profilers = [c.name for c in configs if c.kind == "profiler"]
    workloads = results.workloads
    out = [machine_header(configs, notes, started), ""]

    # Time.
    complete = complete_workloads(results, workloads, allocs)
    hard = "ours" in allocs and "ours-nohard" in allocs
    header = ["workload", "glibc (s)"] + others + (["hardening cost"] if hard else [])
    rows = []
    for w in workloads:
        row = [w, results.failure(w, "glibc") or fmt(results.best_time(w, "glibc"), 3)]
        row += [results.failure(w, a) or fmt(results.best_ratio(w, a, "glibc"))
                for a in others]
        if hard:
            row.append(fmt(results.best_ratio(w, "ours", "ours-nohard")))
        rows.append(row)
    row = [mean_label(complete, workloads), "1.00"]
    row += [fmt(geomean([results.best_ratio(w, a, "glibc") for w in complete]))
            for a in others]
    if hard:
        row.append(fmt(geomean([results.best_ratio(w, "ours", "ours-nohard")
                                for w in complete])))
    rows.append(row)
    out += ["**Time** relative to glibc (lower is faster; glibc column in seconds; "
            "hardening cost = ours / ours-nohard, fastest wall time of each: what the always-on "
            "checks cost)", "", table(header, rows), ""]

    # Memory.
    header = ["workload"] + allocs
    rows = [[w] + [results.failure(w, a) or fmt(results.median_rss_mib(w, a), 1)
                   for a in allocs] for w in workloads]
    if "fragment" in workloads:
        row = ["fragment: RSS after free"]
        for a in allocs:
            kib = results.median_metric("fragment", a, "rss_after_free_kib")
            row.append(fmt(None if kib is None else kib / KIB_PER_MIB, 1))
        rows.append(row)
    rows.append([mean_label(complete, workloads, "geometric mean of peaks")]
                + [fmt(geomean([results.median_rss_mib(w, a) for w in complete]), 1)
                   for a in allocs])
    out += ["**Peak RSS** in MiB (ru_maxrss of the process; lower is better)", "",
            table(header, rows), ""]

    # Profilers.
    if profilers:
        complete = complete_workloads(results, workloads, ["glibc"] + profilers)
        both = "mtrace" in profilers and "heaptrack" in profilers
        header = ["workload", "glibc (s)"]
        for p in profilers:
            header += [f"{p} slowdown", f"{p} B/event"]
        if both:
            header += ["mtrace / heaptrack", "target slowdown"]
        waits = "mtrace" in profilers
        if waits:
            header += ["mtrace waits", "collector CPU (s)", "collector Mevents/s"]
        rows = []
        for w in workloads:
            row = [w, fmt(results.best_time(w, "glibc"), 3)]
            for p in profilers:
                row += [results.failure(w, p) or fmt(results.best_ratio(w, p, "glibc"), 2),
                        fmt(results.trace_per_event(w, p), 2)]
            if both:
                row.append(fmt(results.best_ratio(w, "mtrace", "heaptrack")))
                hp = results.best_ratio(w, "heaptrack", "glibc")
                row.append(fmt(1 + (hp - 1) / 3, 2) if hp else "–")
            if waits:
                rate = results.collector_rate(w, "mtrace")
                row += [fmt(results.median_waits(w, "mtrace"), 0), fmt(results.collector_cpu(w, "mtrace"), 2),
                        fmt(None if rate is None else rate / 1e6, 1)]
            rows.append(row)
        row = [mean_label(complete, workloads), ""]
        for p in profilers:
            row += [fmt(geomean([results.best_ratio(w, p, "glibc") for w in complete]), 2),
                    fmt(geomean([results.trace_per_event(w, p) for w in complete]), 2)]
        if both:
            row += [fmt(geomean([results.best_ratio(w, "mtrace", "heaptrack")
                                 for w in complete])), ""]
        if waits:
            row += ["", "", ""]
        rows.append(row)
        out += ["**Profilers**: slowdown = traced time / untraced glibc time; B/event = trace "
                "file bytes / events recorded (heaptrack counts a realloc as two); mtrace = mtrace-run's default "
                "clock (MTRACE_CLOCK=sampled: the TSC read for one event in 8 of a thread and at every "
                "kernel tick); mtrace-tsc = a TSC read on every event (MTRACE_CLOCK=tsc); target slowdown = 1 + heaptrack's overhead / 3 (issue 3's limit); mtrace waits "
                "= times the traced program found a ring full and waited for the collector (median); "
                "collector CPU = the collector's user + system time (median, meta.collector_cpu_ns); "
                "collector Mevents/s = events / that CPU time, the rate it sustains", "",
                table(header, rows), ""]
    else:
        why = "; ".join(notes) if notes else "skipped (--no-profilers)"
        out += [f"**Profilers**: none run ({why})", ""]
    failures = []
    for w in workloads:
        for c in configs:
            why = results.failure(w, c.name)
            if why in (None, "–"):
                continue
            bad = [r for r in results.of(w, c.name) if r["state"] != "ok"]
            detail = bad[0].get("stderr", "").strip().splitlines() if bad else []
            failures.append(f"- {w} under {c.name}: {why}"
                            + (f": `{detail[0][:160]}`" if detail else ""))
    if failures:
        out += ["Failed runs (left out of the means):", ""] + failures + [""]
    out.append(f"_{len(results.runs)} runs in {elapsed:.0f} s._")
    return "\n".join(out) + "\n"


def parse_args(argv):
    p = argparse.ArgumentParser(description="mtrace benchmarks (see the top of this file)")
    p.add_argument("--build", default=os.path.join(ROOT, "build"),
                   help="build directory holding libmtalloc.so (default: %(default)s)")
    p.add_argument("--bin", help="directory of the workload programs (default: BUILD/bench)")
    p.add_argument("--scale", type=float, default=float(os.environ.get("BENCH_SCALE", 1)),
                   help="multiplies every workload's operation count (default 1)")
    p.add_argument("--repeat", type=int, default=5,
                   help="repetitions, the fastest reported (default 5: on this kind of VM a run falls "
                        "into a mode up to twice as slow now and then, and the hardening cost compares "
                        "two allocators a few percent apart)")
    p.add_argument("--profile-repeat", type=int, default=1,
                   help="repetitions for the profilers, at most --repeat (default 1: their "
                        "slowdowns are large and stable, and they dominate the run time)")
    p.add_argument("--only", help="comma-separated workloads to run")
    p.add_argument("--no-profilers", action="store_true", help="skip mtrace and heaptrack")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help="seconds before a run is killed (default %(default)s)")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument("--results", default=os.path.join(HERE, "results"),
                   help="directory for the timestamped .md and .json (default: %(default)s)")
    args = p.parse_args(argv)
    args.build = os.path.abspath(args.build)
    args.bin = os.path.abspath(args.bin or os.path.join(args.build, "bench"))
    args.launcher = os.path.join(args.build, "bench-launch")
    if not os.access(args.launcher, os.X_OK):
        p.error(f"{args.launcher} is missing: run `make bench` (or make -C bench workloads)")
    if args.scale <= 0 or args.repeat < 1:
        p.error("--scale must be positive and --repeat at least 1")
    args.profile_repeat = max(0, min(args.profile_repeat, args.repeat))
    return args


def select_workloads():
    found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ARGS.bin, "*"))
                   if os.path.isfile(p) and os.access(p, os.X_OK))
    ordered = [w for w in WORKLOADS if w in found] + [w for w in found if w not in WORKLOADS]
    if ARGS.only:
        wanted = [w.strip() for w in ARGS.only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in ordered]
        if unknown:
            sys.exit(f"bench: error: unknown workload(s) {', '.join(unknown)}; "
                     f"have: {', '.join(ordered)}")
        ordered = [w for w in ordered if w in wanted]
    if not ordered:
        sys.exit(f"bench: error: no workload programs in {ARGS.bin}; run `make bench`")
    return ordered


def main(argv):
    global ARGS
    ARGS = parse_args(argv)
    workloads = select_workloads()
    configs, notes = discover_configs(ARGS.build,
                                      not ARGS.no_profilers and ARGS.profile_repeat > 0)
    results = Results(configs, workloads)
    started = time.time()
    tmpdir = tempfile.mkdtemp(prefix="mtrace-bench-")
    try:
        for rep in range(ARGS.repeat):
            for wi, w in enumerate(workloads):
                argv_w = [os.path.join(ARGS.bin, w), f"{ARGS.scale:g}"]
                active = [c for c in configs
                          if c.kind == "alloc" or rep < ARGS.profile_repeat]
                # A seeded shuffle, not a rotation: a rotation keeps every configuration
                # behind the same neighbour and at the same parity, and this VM's
                # alternating slow runs (Results.best_ratio) then hit the same ones.
                order = list(active)
                random.Random(rep * 1000 + wi).shuffle(order)
                line = []
                for cfg in order:
                    r = measure(cfg, w, argv_w, rep, tmpdir)
                    results.add(r)
                    line.append(f"{cfg.name} {r['wall_s']:.2f}s"
                                + ("" if r["state"] == "ok" else f" ({r['state']})"))
                print(f"bench: [{rep + 1}/{ARGS.repeat}] {w}: " + ", ".join(line),
                      file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    elapsed = time.time() - started
    text = report(results, configs, notes, started, elapsed)
    print(text, end="")

    doc = {"started_unix": started, "elapsed_s": elapsed,
           "settings": {"scale": ARGS.scale, "repeat": ARGS.repeat,
                        "profile_repeat": ARGS.profile_repeat, "workloads": workloads},
           "machine": {"cores": os.cpu_count(), "kernel": platform.release(),
                       "glibc": os.confstr("CS_GNU_LIBC_VERSION"),
                       "loadavg": os.getloadavg()},
           "configs": [{"name": c.name, "kind": c.kind, "describe": c.describe} for c in configs],
           "notes": notes, "runs": results.runs, "markdown": text}
    os.makedirs(ARGS.results, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    base = os.path.join(ARGS.results, stamp)
    with open(base + ".md", "w") as f:
        f.write(text)
    paths = [base + ".json"] + ([ARGS.json] if ARGS.json else [])
    for path in paths:
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
    print(f"bench: results in {base}.md and .json" + (f", {ARGS.json}" if ARGS.json else ""),
          file=sys.stderr)
    # Fail when our own code failed (or miscomputed); another tool's failure only shows
    # in its column.
    ours = {"ours", "ours-nohard", "mtrace"}
    return 1 if any(results.failure(w, c) not in (None, "–") for w in workloads
                    for c in ours) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
