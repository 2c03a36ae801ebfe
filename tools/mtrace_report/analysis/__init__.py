"""Pure analyses: each takes an open Trace (and plain options) and returns plain data
(dicts, lists, numbers) that any reporter can render. Aggregation runs as SQL inside
SQLite; Python only shapes the (small) results."""
