"""External and internal fragmentation and overhead over time (from the allocator
snapshots), with the worst moment."""
from ..analysis.series import frag_report
from ..reporters.json_ import write_json
from ..reporters.text import render_frag, write
from .common import add_charts, add_trace, open_selected, window, write_charts

NAME = "frag"


def add_arguments(parser):
    add_trace(parser, window=True)
    add_charts(parser)


def run(args):
    trace, procs = open_selected(args)
    lo, hi = window(args)
    data = frag_report(trace, procs, lo, hi)
    if args.png or args.svg:
        from ..reporters import charts
        write_charts(args, lambda: charts.frag_figure(data))
    if args.json:
        write_json(data)
    else:
        write(render_frag(data))
    return 0
