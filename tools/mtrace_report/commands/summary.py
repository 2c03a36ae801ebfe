"""Processes, calls by operation, peak heap, bytes allocated, dropped events, heap errors
and leaks, on one screen."""
from ..analysis.summary import summarize
from ..reporters.json_ import write_json
from ..reporters.text import render_summary, write
from .common import add_trace, open_selected

NAME = "summary"


def add_arguments(parser):
    add_trace(parser)


def run(args):
    trace, procs = open_selected(args)
    data = summarize(trace, procs)
    if args.json:
        write_json(data)
    else:
        write(render_summary(data))
    return 0
