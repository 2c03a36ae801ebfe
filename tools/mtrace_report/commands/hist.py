"""show_alloc_hist: requested sizes as a histogram in power-of-two buckets and in the
allocator's size classes, for every allocation or (--at) for the blocks live at a time."""
from ..analysis.hist import alloc_hist, live_hist
from ..db import NS_PER_S
from ..errors import ReportError
from ..reporters.charts import hist_figure
from ..reporters.text import render_hist
from .common import add_charts, add_trace, emit, open_selected, progress, seconds, write_charts

NAME = "hist"


def add_arguments(parser):
    add_trace(parser)
    parser.add_argument("--at", type=seconds, metavar="SECONDS",
                        help="blocks live at this time (from the last snapshot at or before it)")
    parser.add_argument("--exact", action="store_true",
                        help="with --at: replay the events up to that time instead of using "
                        "a snapshot (slower, exact)")
    add_charts(parser)


def run(args):
    trace, procs = open_selected(args)
    if args.exact and args.at is None:
        raise ReportError("--exact needs --at SECONDS", "add the time of interest")
    if args.at is not None:
        if args.at < 0:
            raise ReportError(f"--at {args.at} is negative", "give seconds since the trace started")
        prog = progress(args, "replaying events")
        data = live_hist(trace, procs, int(args.at * NS_PER_S), args.exact, prog)
        prog.done()
    else:
        data = alloc_hist(trace, procs)
    write_charts(args, hist_figure, data)
    emit(args, data, render_hist)
    return 0
