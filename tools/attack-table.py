#!/usr/bin/env python3
"""Run the heap attack programs (build/attacks/, sources in tests/attacks/) under several
allocators and print a markdown table of the outcomes.

    tools/attack-table.py [--build DIR] [--allocators glibc,mtrace,...] [--json]

Outcomes: "succeeded" (exit 0: the attack did what it wanted), "harmless" (exit 1: the
allocator survived and nothing happened), "detected" (SIGABRT: the allocator aborted; for
mtrace the bug named in its `mtrace: error:` line), "crashed" (another signal, e.g. SIGSEGV).
Allocators that are not installed are left out. tests/py/test_attacks.py imports this file
for the case list and the classification.
"""
import argparse
import json
import os
import pathlib
import re
import resource
import signal
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBDIR = pathlib.Path("/usr/lib/x86_64-linux-gnu")

# (program, tier, variant or None). One row of the table each.
CASES = [
    ("double_free", tier, variant)
    for variant in ("immediate", "delayed", "cross_thread")
    for tier in ("small", "medium")
] + [
    ("house_of_spirit", tier, variant) for variant in ("stack", "global") for tier in ("small", "medium")
] + [
    ("off_by_one_nul", tier, None) for tier in ("small", "medium")
] + [
    ("unsafe_unlink", tier, None) for tier in ("small", "medium")
] + [
    ("freelist_poison", tier, variant) for variant in ("mangled", "raw") for tier in ("small", "medium")
] + [
    (name, tier, None)
    for name in ("overlapping_chunks", "uaf_read", "invalid_free", "realloc_freed", "house_of_force",
                 "heap_overflow")
    for tier in ("small", "medium")
]

# Environment variables that would change how an allocator behaves: never inherited.
SCRUB_PREFIXES = ("MTRACE_", "MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD", "MIMALLOC_", "JE_MALLOC_", "TCMALLOC_")

# A hung attack is a bug in the attack program or an allocator, not an outcome: generous.
TIMEOUT_S = 60

MTRACE_ERROR = re.compile(r"^mtrace: error: (.+?) of (0x[0-9a-f]+|\(nil\))", re.M)


def case_name(case):
    program, tier, variant = case
    return f"{program} {variant} ({tier})" if variant else f"{program} ({tier})"


def allocators(build):
    """name -> extra environment, for every allocator available here."""
    found = {"glibc": {}}
    for name, lib in (("jemalloc", "libjemalloc.so.2"), ("mimalloc", "libmimalloc.so.2"),
                      ("tcmalloc", "libtcmalloc_minimal.so.4")):
        if (LIBDIR / lib).exists():
            found[name] = {"LD_PRELOAD": str(LIBDIR / lib)}
    mtalloc = pathlib.Path(build) / "libmtalloc.so"
    if mtalloc.exists():
        found["mtrace"] = {"LD_PRELOAD": str(mtalloc)}
        found["mtrace debug"] = {"LD_PRELOAD": str(mtalloc), "MTRACE_DEBUG": "1"}
    return found


def _no_core():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_case(build, case, env_extra):
    """Run one attack; returns a dict: outcome, bug (mtrace's error name or None), output."""
    program, tier, variant = case
    cmd = [str(pathlib.Path(build) / "attacks" / program), tier] + ([variant] if variant else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB_PREFIXES)}
    env.update(env_extra)
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, timeout=TIMEOUT_S, preexec_fn=_no_core)
    except subprocess.TimeoutExpired:
        return {"outcome": "hung", "bug": None, "output": ""}
    output = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    match = MTRACE_ERROR.search(output)
    bug = match.group(1) if match else None
    rc = proc.returncode
    if rc == 0:
        outcome = "succeeded"
    elif rc == 1:
        outcome = "harmless"
    elif rc == -signal.SIGABRT:
        outcome = "detected"
    elif rc < 0:
        outcome = "crashed"
    else:
        outcome = f"exit {rc}"
    if rc < 0 and rc != -signal.SIGABRT:
        output += f"\n[killed by {signal.Signals(-rc).name}]"
    return {"outcome": outcome, "bug": bug, "output": output}


def describe(result):
    """Table cell: the outcome, with mtrace's bug name or the crash signal."""
    if result["outcome"] == "detected" and result["bug"]:
        return f"detected: {result['bug']}"
    if result["outcome"] == "crashed":
        sig = re.search(r"\[killed by (SIG\w+)\]", result["output"])
        return f"crashed ({sig.group(1)})" if sig else "crashed"
    return result["outcome"]


def table(build, names=None):
    allocs = allocators(build)
    if names:
        allocs = {n: e for n, e in allocs.items() if n in names}
    rows = []
    for case in CASES:
        rows.append((case, {name: run_case(build, case, env) for name, env in allocs.items()}))
    return list(allocs), rows


def markdown(columns, rows):
    lines = ["| attack | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for case, results in rows:
        lines.append(f"| {case_name(case)} | " + " | ".join(describe(results[c]) for c in columns) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=str(ROOT / "build"), help="build directory (default: build/)")
    parser.add_argument("--allocators", help="comma-separated subset, e.g. glibc,mtrace")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = parser.parse_args(argv)
    if not (pathlib.Path(args.build) / "attacks").is_dir():
        print(f"attack-table: no {args.build}/attacks: run `make test-build` first", file=sys.stderr)
        return 2
    names = set(args.allocators.split(",")) if args.allocators else None
    columns, rows = table(args.build, names)
    if args.json:
        print(json.dumps([{"attack": case_name(c), **{n: describe(r[n]) for n in columns}} for c, r in rows],
                         indent=1))
    else:
        print(markdown(columns, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
