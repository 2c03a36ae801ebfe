"""The hottest allocation sites: by calls, bytes, contribution to the peak, or temporary
allocations (freed by the same thread before its next allocation); with --from/--to,
only the allocations made in that window (decoded from the events)."""
from ..analysis.top import ORDER, top_sites, top_sites_window
from ..reporters.text import render_top
from .common import add_trace, emit, open_selected, positive_int, progress, window

NAME = "top"
DEFAULT_LIMIT = 10


def add_arguments(parser):
    add_trace(parser, window=True)
    parser.add_argument("--by", choices=sorted(ORDER), default="bytes",
                        help="what to rank by (default bytes)")
    parser.add_argument("--limit", type=positive_int, default=DEFAULT_LIMIT,
                        help=f"sites shown (default {DEFAULT_LIMIT}; 0: all)")
    parser.add_argument("--full", action="store_true", help="show whole stacks")


def run(args):
    trace, procs = open_selected(args)
    lo, hi = window(args)
    if lo is None and hi is None:
        data = top_sites(trace, procs, args.by, args.limit)
    else:
        prog = progress(args, "reading events")
        data = top_sites_window(trace, procs, args.by, args.limit, lo, hi, prog)
        prog.done()
    emit(args, data, lambda d: render_top(d, args.full))
    return 0
