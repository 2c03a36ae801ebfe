"""Progress of long steps on stderr: only when stderr is a terminal or --progress asked,
so logs and pipes stay clean. Updates are throttled to a few per second."""
import sys
import time

# Seconds between two redraws: often enough to look alive, rare enough to cost nothing.
REDRAW_INTERVAL_S = 0.2


class Progress:
    def __init__(self, label, enabled=None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.last = 0.0
        self.shown = False

    def update(self, done, total=None):
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < REDRAW_INTERVAL_S and done != total:
            return
        self.last = now
        what = f"{100 * done // total}%" if total else str(done)
        self.stream.write(f"\rmtrace-report: {self.label} {what}   ")
        self.stream.flush()
        self.shown = True

    def step(self, label):
        """A new named step (html: one per section)."""
        self.label = label
        if self.enabled:
            self.stream.write(f"\rmtrace-report: {label}…" + " " * 20)
            self.stream.flush()
            self.shown = True

    def done(self):
        if self.shown:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()
            self.shown = False
