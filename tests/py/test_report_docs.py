"""README.md documents every mtrace-report command and every option of each."""
import argparse

from reportfab import ROOT

from mtrace_report.cli import build_parser


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_command_and_option_is_in_readme():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## mtrace-report", 1)[1].split("\n## Layout", 1)[0]
    commands = subcommands()
    assert {"summary", "leaks", "hist", "frag", "timeline", "top", "diff", "html", "gate"} <= set(commands)
    missing = []
    for name, parser in commands.items():
        if f"`{name} " not in section:
            missing.append(name)
        for action in parser._actions:
            flags = [o for o in action.option_strings if o not in ("-h", "--help")]
            if flags and not any(f"`{f}" in section for f in flags):
                missing.append(f"{name} {flags[-1]}")
    assert not missing, f"README.md's mtrace-report section does not document: {missing}"
