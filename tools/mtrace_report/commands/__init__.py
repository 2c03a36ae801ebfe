"""The subcommands, one module each: a docstring (the help), add_arguments(parser) and
run(args) -> exit code. COMMANDS is the registry cli.py builds the parser from."""
from . import summary, leaks, hist, frag, timeline, top, diff, html, gate

COMMANDS = (summary, leaks, hist, frag, timeline, top, diff, html, gate)
