"""Heap over time: requested bytes, bytes in use and bytes mapped, the peak and the marks
(mt_trace_mark)."""
from ..analysis.series import timeline_report
from ..reporters.charts import timeline_figure
from ..reporters.text import render_timeline
from .common import add_charts, add_trace, emit, open_selected, window, write_charts

NAME = "timeline"


def add_arguments(parser):
    add_trace(parser, window=True)
    add_charts(parser)


def run(args):
    trace, procs = open_selected(args)
    lo, hi = window(args)
    data = timeline_report(trace, procs, lo, hi)
    write_charts(args, timeline_figure, data)
    emit(args, data, render_timeline)
    return 0
