"""Blocks still allocated at exit, grouped by allocation stack, leaked apart from still
reachable, per process. With --fail-on-leak it exits 1 when anything leaked (a gate with
--max-leak-bytes 0), so it can guard a CI job by itself."""
from ..analysis.gate import run_gate
from ..analysis.leaks import leak_report
from ..analysis.suppressions import parse_suppressions
from ..db import proc_label
from ..errors import EXIT_GATE_FAILED, ReportError
from ..reporters.json_ import write_json
from ..reporters.text import render_leaks, write
from .common import add_trace, open_selected, positive_int

NAME = "leaks"
DEFAULT_LIMIT = 20


def add_arguments(parser):
    add_trace(parser)
    parser.add_argument("--full", action="store_true", help="show whole stacks (default: the "
                        "innermost frames)")
    parser.add_argument("--show-reachable", action="store_true",
                        help="also list blocks still reachable at exit")
    parser.add_argument("--limit", type=positive_int, default=DEFAULT_LIMIT,
                        help=f"stacks listed per process (default {DEFAULT_LIMIT}; 0: all)")
    parser.add_argument("--fail-on-leak", action="store_true",
                        help="exit 1 when any block leaked (after --suppressions)")
    parser.add_argument("--suppressions", metavar="FILE", action="append",
                        help="with --fail-on-leak: LeakSanitizer or Valgrind suppressions")


def run(args):
    if args.suppressions and not args.fail_on_leak:
        raise ReportError("--suppressions only applies with --fail-on-leak",
                          "add --fail-on-leak, or use `mtrace-report gate`")
    trace, procs = open_selected(args)
    report = leak_report(trace, procs, args.show_reachable, args.limit)
    labels = {p: proc_label(trace.processes[p]) for p in procs}
    status = 0
    if args.fail_on_leak:
        supps = [s for path in args.suppressions or () for s in parse_suppressions(path)]
        gate = run_gate(trace, procs, max_leak_bytes=0, suppressions=supps)
        report["gate"] = dict(passed=gate["passed"], counted=gate["counted"],
                              suppressed_stacks=gate["suppressed"]["stacks"])
        if not gate["passed"]:
            status = EXIT_GATE_FAILED
    if args.json:
        write_json(report)
    else:
        write(render_leaks(report, args.full, labels))
        if args.fail_on_leak:
            g = report["gate"]
            write(("leak check: FAILED, " if status else "leak check: passed, ") +
                  f"{g['counted']['bytes']} bytes in {g['counted']['blocks']} blocks leaked "
                  f"outside suppressions\n")
    return status
