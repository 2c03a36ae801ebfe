"""Compare two traces per call stack (matched by symbolized frames): new leak stacks,
leaks that grew or were fixed, allocations that grew or shrank, stacks that disappeared."""
from ..analysis.diff import diff_traces
from ..db import open_trace
from ..reporters.text import render_diff
from .common import emit, positive_int, progress

NAME = "diff"
DEFAULT_LIMIT = 10


def add_arguments(parser):
    parser.add_argument("a", metavar="A.db", help="the old trace")
    parser.add_argument("b", metavar="B.db", help="the new trace")
    parser.add_argument("--limit", type=positive_int, default=DEFAULT_LIMIT,
                        help=f"stacks shown per section (default {DEFAULT_LIMIT}; 0: all)")
    parser.add_argument("--full", action="store_true", help="show whole stacks")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--progress", action="store_true", help="show progress on stderr")


def run(args):
    a = open_trace(args.a)
    b = open_trace(args.b)
    prog = progress(args, "")
    prog.step("matching stacks by symbols")
    data = diff_traces(a, b, args.limit)
    prog.done()
    emit(args, data, lambda d: render_diff(d, args.full))
    return 0
