"""The one error type of mtrace-report: what went wrong, what to do, and the exit code.

Every failure a user can cause (bad file, bad option value, unknown pid) is raised as a
ReportError and printed by cli.main() as one line, never as a traceback.
"""

# Exit codes: 0 success (and the gate holds), 1 the gate or --fail-on-leak found a problem,
# 2 bad input (the report could not be made).
EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2


class ReportError(Exception):
    """A user-facing failure: `what` happened; `hint` says what to do about it."""

    def __init__(self, what, hint=None, exit_code=EXIT_BAD_INPUT):
        super().__init__(what)
        self.what = what
        self.hint = hint
        self.exit_code = exit_code

    def line(self):
        text = f"mtrace-report: error: {self.what}"
        if self.hint:
            text += f"; {self.hint}"
        return text
