"""Every report of a trace in one self-contained HTML file (charts inline, no external
resources): summary, leaks, timeline, top sites, size histogram, fragmentation."""
import os

from ..analysis.hist import alloc_hist
from ..analysis.leaks import leak_report
from ..analysis.series import frag_report, timeline_report
from ..analysis.summary import error_list, summarize
from ..analysis.top import top_sites
from ..errors import ReportError
from ..reporters import htmlcharts
from ..reporters.html import render_html
from .common import add_trace, open_selected, progress

NAME = "html"
TOP_LIMIT = 10
# Leak stacks listed per process: the biggest; the totals count them all.
LEAK_LIMIT = 50


def add_arguments(parser):
    add_trace(parser, json_out=False)
    parser.add_argument("-o", "--output", metavar="FILE", default="report.html",
                        help="the HTML file to write (default report.html)")
    parser.add_argument("--show-reachable", action="store_true",
                        help="also list blocks still reachable at exit")


def run(args):
    trace, procs = open_selected(args)
    prog = progress(args, "")
    prog.step("summary")
    summary = summarize(trace, procs)
    errors = error_list(trace, procs)
    prog.step("leaks")
    leaks = leak_report(trace, procs, args.show_reachable, LEAK_LIMIT)
    prog.step("top sites")
    top_by = {by: top_sites(trace, procs, by, TOP_LIMIT) for by in ("bytes", "peak", "temporary", "calls")}
    prog.step("histogram")
    hist = alloc_hist(trace, procs)
    prog.step("fragmentation")
    frag = frag_report(trace, procs)
    prog.step("timeline")
    timeline = timeline_report(trace, procs)
    prog.step("charts")
    # svgchart, not matplotlib: importing matplotlib alone would cost more than the report
    figures = {"hist": htmlcharts.hist_svg(hist), "timeline": htmlcharts.timeline_svg(timeline)}
    if frag["processes"]:
        figures["frag"] = htmlcharts.frag_svg(frag)
    prog.done()
    page = render_html(trace.path, summary, leaks, top_by, hist, frag, timeline, figures, errors)
    try:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as e:
        raise ReportError(f"cannot write {args.output}: {e.strerror}", "check the output path")
    print(f"wrote {os.path.abspath(args.output)}")
    return 0
