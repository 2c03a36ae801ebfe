"""Command line: builds one argparse subcommand per module of commands/ (its docstring is
the help), runs it, and turns every ReportError and SQLite failure into one line on stderr
with exit code 2. main() returns the exit code; it never lets a traceback reach the user
for a problem with the input."""
import argparse
import sqlite3
import sys

from .commands import COMMANDS
from .db import corrupt_error
from .errors import EXIT_BAD_INPUT, ReportError
from .events import EventFormatError

PROG = "mtrace-report"
# The argparse destinations that hold a trace.db path, in any command.
TRACE_ARGS = ("trace", "a", "b", "baseline")


class Parser(argparse.ArgumentParser):
    """argparse that reports usage mistakes as one ReportError line, not usage + error."""

    def error(self, message):
        raise ReportError(message, f"see `{self.prog} --help`")


def build_parser():
    parser = Parser(prog=PROG, description="Reports on a trace.db recorded by mtrace-run "
                    "(docs/trace-format.md).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMANDS:
        doc = (module.__doc__ or "").strip()
        first = doc.split(".")[0].replace("\n", " ") + "." if doc else None
        p = sub.add_parser(module.NAME, help=first, description=doc)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv=None):
    parser = build_parser()
    trace_path = None
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "run", None):
            parser.print_help(sys.stderr)
            return EXIT_BAD_INPUT
        # SQLite's errors do not say which file failed: name every trace the command
        # reads (diff's two, gate's --baseline), not only one of them.
        trace_path = " or ".join(getattr(args, name) for name in TRACE_ARGS
                                 if getattr(args, name, None))
        return args.run(args)
    except ReportError as e:
        print(e.line(), file=sys.stderr)
        return e.exit_code
    except sqlite3.DatabaseError as e:
        print(corrupt_error(trace_path or "the trace", e).line(), file=sys.stderr)
        return EXIT_BAD_INPUT
    except EventFormatError as e:
        print(ReportError(f"{trace_path}: {e}", "the trace is corrupt; record it again").line(),
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
