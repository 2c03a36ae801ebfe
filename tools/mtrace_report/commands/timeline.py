"""Heap over time: requested bytes, bytes in use and bytes mapped, the peak and the marks
(mt_trace_mark)."""
from ..analysis.series import timeline_report
from ..reporters.json_ import write_json
from ..reporters.text import render_timeline, write
from .common import add_charts, add_trace, open_selected, window, write_charts

NAME = "timeline"


def add_arguments(parser):
    add_trace(parser, window=True)
    add_charts(parser)


def run(args):
    trace, procs = open_selected(args)
    lo, hi = window(args)
    data = timeline_report(trace, procs, lo, hi)
    if args.png or args.svg:
        from ..reporters import charts
        write_charts(args, lambda: charts.timeline_figure(data))
    if args.json:
        write_json(data)
    else:
        write(render_timeline(data))
    return 0
