"""Processes, calls by operation, peak heap, bytes allocated, dropped events, heap errors
and leaks, on one screen."""
from ..analysis.summary import summarize
from ..reporters.text import render_summary
from .common import add_trace, emit, open_selected

NAME = "summary"


def add_arguments(parser):
    add_trace(parser)


def run(args):
    trace, procs = open_selected(args)
    data = summarize(trace, procs)
    emit(args, data, render_summary)
    return 0
