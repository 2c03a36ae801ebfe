"""The hottest allocation sites: by calls, bytes, contribution to the peak, or temporary
allocations (freed by the same thread before its next allocation)."""
from ..analysis.top import ORDER, top_sites
from ..reporters.json_ import write_json
from ..reporters.text import render_top, write
from .common import add_trace, open_selected, positive_int

NAME = "top"
DEFAULT_LIMIT = 10


def add_arguments(parser):
    add_trace(parser)
    parser.add_argument("--by", choices=sorted(ORDER), default="bytes",
                        help="what to rank by (default bytes)")
    parser.add_argument("--limit", type=positive_int, default=DEFAULT_LIMIT,
                        help=f"sites shown (default {DEFAULT_LIMIT}; 0: all)")
    parser.add_argument("--full", action="store_true", help="show whole stacks")


def run(args):
    trace, procs = open_selected(args)
    data = top_sites(trace, procs, args.by, args.limit)
    if args.json:
        write_json(data)
    else:
        write(render_top(data, args.full))
    return 0
