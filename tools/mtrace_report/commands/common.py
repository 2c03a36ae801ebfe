"""Options and steps the subcommands share: the trace argument, --pid/--proc, the time
window, --json, chart outputs and progress."""
import math
import os

from ..db import open_trace, window_ns
from ..errors import ReportError
from ..progress import Progress
from ..reporters import charts
from ..reporters.json_ import write_json
from ..reporters.text import write


def add_trace(parser, filters=True, window=False, json_out=True):
    parser.add_argument("trace", help="the trace.db written by mtrace-run")
    if filters:
        parser.add_argument("--pid", type=int, action="append", metavar="PID",
                            help="only this process id (every image of it after exec; repeatable)")
        parser.add_argument("--proc", type=int, action="append", metavar="PROC_ID",
                            help="only this process by its proc_id in the trace (repeatable)")
        parser.add_argument("--exe", action="append", metavar="PATTERN",
                            help="only processes whose executable (path or base name) matches "
                            "this shell pattern, e.g. 'test_*' (repeatable)")
    if window:
        parser.add_argument("--from", dest="t_from", type=seconds, metavar="SECONDS",
                            help="start of the time window, seconds since the trace started")
        parser.add_argument("--to", dest="t_to", type=seconds, metavar="SECONDS",
                            help="end of the time window")
    if json_out:
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--progress", action="store_true",
                        help="show progress on stderr even when it is not a terminal")


def add_charts(parser):
    parser.add_argument("--png", metavar="FILE", help="also write the chart as PNG")
    parser.add_argument("--svg", metavar="FILE", help="also write the chart as SVG")


def open_selected(args):
    trace = open_trace(args.trace)
    procs = trace.select(getattr(args, "pid", None), getattr(args, "proc", None),
                         getattr(args, "exe", None))
    return trace, procs


def window(args):
    return window_ns(getattr(args, "t_from", None), getattr(args, "t_to", None))


def progress(args, label):
    return Progress(label, enabled=True if args.progress else None)


def write_charts(args, figure, data):
    """Write the --png/--svg files asked for; figure(data) draws a fresh figure for each
    (matplotlib is imported only then, by reporters/charts.py)."""
    for fmt in ("png", "svg"):
        path = getattr(args, fmt, None)
        if not path:
            continue
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise ReportError(f"cannot write {path}: no directory {parent}", "create it first")
        charts.save(figure(data), path, fmt)


def emit(args, data, render):
    """Print a report: data as JSON with --json, else the text render(data) makes."""
    if args.json:
        write_json(data)
    else:
        write(render(data))


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise ReportError(f"{text!r} is not a whole number", "give a number such as 10")
    if value < 0:
        raise ReportError(f"{value} is negative", "give 0 or more")
    return value


def seconds(text):
    """A --from/--to value: a finite number of seconds (float() alone lets nan and inf
    through, which the conversion to ns then fails on with a traceback)."""
    try:
        value = float(text)
    except ValueError:
        raise ReportError(f"{text!r} is not a number of seconds", "give a time such as 1.5")
    if not math.isfinite(value):
        raise ReportError(f"{text!r} is not a finite time", "give a time such as 1.5")
    return value
