"""mtrace-report: reports on a trace.db written by mtrace-run (docs/trace-format.md).

Layers: commands/ (thin subcommands: options and wiring), analysis/ (pure functions over
SQL results; the heavy aggregation runs inside SQLite), reporters/ (text, JSON, charts,
HTML), db.py (opening and validating a trace), events.py (streaming decoder of the raw
event chunks, used only when a report needs per-event data).
"""

# The trace format this reader understands (PRAGMA user_version); newer ones are refused.
FORMAT_VERSION = 3
