"""The CI leak gate: exit 0 when the trace's leaks are within the limits, 1 when not
(printing the offending stacks), 2 when the trace cannot be read. Suppressions in
LeakSanitizer or Valgrind format; --baseline fails only on leak stacks the old trace did
not have; --junit writes the result for CI test dashboards."""
from ..analysis.gate import DEFAULT_SHOW, baseline_leak_keys, run_gate
from ..analysis.suppressions import parse_suppressions
from ..db import open_trace
from ..errors import EXIT_GATE_FAILED
from ..reporters.junit import write_junit
from ..reporters.text import render_gate
from .common import add_trace, emit, open_selected, positive_int, progress

NAME = "gate"


def add_arguments(parser):
    add_trace(parser)
    parser.add_argument("--max-leak-bytes", type=positive_int, metavar="N",
                        help="most leaked bytes allowed in total (default 0 when no limit is given)")
    parser.add_argument("--max-leaks", type=positive_int, metavar="N",
                        help="most leaked blocks allowed in total")
    parser.add_argument("--max-stack-bytes", type=positive_int, metavar="N",
                        help="most leaked bytes allowed from any one stack")
    parser.add_argument("--max-errors", type=positive_int, metavar="N",
                        help="most heap errors (double free, ...) allowed (default: not checked)")
    parser.add_argument("--suppressions", metavar="FILE", action="append",
                        help="LeakSanitizer (leak:PATTERN) or Valgrind ({ ... Memcheck:Leak ... }) "
                        "suppressions (repeatable)")
    parser.add_argument("--baseline", metavar="OLD.db",
                        help="only leak stacks absent from this older trace count")
    parser.add_argument("--count-unknown", action="store_true",
                        help="also count blocks live at exit that no leak scan classified")
    parser.add_argument("--junit", metavar="FILE", help="also write the result as JUnit XML")
    parser.add_argument("--full", action="store_true", help="show whole stacks")
    parser.add_argument("--limit", type=positive_int, default=DEFAULT_SHOW,
                        help=f"offending stacks listed (default {DEFAULT_SHOW}; 0: all; all are counted)")


def run(args):
    trace, procs = open_selected(args)
    supps = [s for path in args.suppressions or () for s in parse_suppressions(path)]
    baseline = None
    if args.baseline:
        prog = progress(args, "reading the baseline's leak stacks")
        baseline = baseline_leak_keys(open_trace(args.baseline), args.count_unknown, prog)
        prog.done()
    prog = progress(args, "checking leak stacks")
    result = run_gate(trace, procs, args.max_leak_bytes, args.max_leaks, args.max_stack_bytes,
                      args.max_errors, supps, baseline, args.count_unknown, args.limit, prog)
    prog.done()
    if args.junit:
        write_junit(result, args.junit)
    emit(args, result, lambda r: render_gate(r, args.full))
    return 0 if result["passed"] else EXIT_GATE_FAILED
