"""External and internal fragmentation and overhead over time (from the allocator
snapshots), with the worst moment."""
from ..analysis.series import frag_report
from ..reporters.charts import frag_figure
from ..reporters.text import render_frag
from .common import add_charts, add_trace, emit, open_selected, window, write_charts

NAME = "frag"


def add_arguments(parser):
    add_trace(parser, window=True)
    add_charts(parser)


def run(args):
    trace, procs = open_selected(args)
    lo, hi = window(args)
    data = frag_report(trace, procs, lo, hi)
    write_charts(args, frag_figure, data)
    emit(args, data, render_frag)
    return 0
