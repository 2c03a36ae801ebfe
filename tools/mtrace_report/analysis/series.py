"""Snapshot series over time, thinned inside SQLite to at most `max_points` per process
(each kept point is the maximum of its time slice, so peaks survive the thinning)."""
from ..db import proc_label

# Points per process a chart or sparkline needs; more only costs time and file size.
DEFAULT_MAX_POINTS = 1500

# Per-snapshot derived columns (docs/trace-format.md, "Fragmentation").
FRAG_COLUMNS = (
    "CASE WHEN free_bytes > 0 THEN 1.0 - CAST(largest_free AS REAL) / free_bytes ELSE 0.0 END",
    "CASE WHEN in_use > 0 THEN CAST(in_use - requested AS REAL) / in_use ELSE 0.0 END",
    "CASE WHEN requested > 0 THEN CAST(mapped AS REAL) / requested END",
)
BASE_COLUMNS = ("requested", "blocks", "in_use", "mapped", "committed", "free_bytes",
                "largest_free")
NAMES = BASE_COLUMNS + ("external", "internal", "overhead")


def _window(lo, hi):
    cond, params = "", []
    if lo is not None:
        cond += " AND ts_ns >= ?"
        params.append(lo)
    if hi is not None:
        cond += " AND ts_ns <= ?"
        params.append(hi)
    return cond, params


def snapshot_series(trace, proc_id, lo=None, hi=None, max_points=DEFAULT_MAX_POINTS):
    cond, params = _window(lo, hi)
    derived = ", ".join(f"{expr} AS {name}" for expr, name in zip(FRAG_COLUMNS, NAMES[-3:]))
    base = (f"SELECT ts_ns, {', '.join(BASE_COLUMNS)}, {derived} "
            f"FROM snapshots WHERE proc_id = {int(proc_id)}{cond}")
    n, tmin, tmax = trace.query(f"SELECT count(*), min(ts_ns), max(ts_ns) FROM ({base})",
                                params).fetchone()
    if not n:
        return []
    if n <= max_points:
        sql = base + " ORDER BY ts_ns"
    else:
        width = max(1, (tmax - tmin) // max_points + 1)
        aggs = ", ".join(f"max({c})" for c in NAMES)
        sql = (f"SELECT min(ts_ns), {aggs} FROM ({base}) "
               f"GROUP BY (ts_ns - {tmin}) / {width} ORDER BY 1")
    return [dict(zip(("ts_ns",) + NAMES, row)) for row in trace.query(sql, params)]


def _named_snapshot(trace, proc_id, order, lo, hi):
    cond, params = _window(lo, hi)
    row = trace.query(
        f"SELECT ts_ns, {', '.join(BASE_COLUMNS)}, {', '.join(FRAG_COLUMNS)} FROM snapshots "
        f"WHERE proc_id = {int(proc_id)}{cond} ORDER BY {order} LIMIT 1", params).fetchone()
    return dict(zip(("ts_ns",) + NAMES, row)) if row else None


def frag_report(trace, proc_ids, lo=None, hi=None, max_points=DEFAULT_MAX_POINTS):
    """Fragmentation over time per process, with the worst moment: the snapshot where the
    allocator held the most memory beyond what was requested (mapped - requested), and the
    highest value of each ratio."""
    out = []
    for p in proc_ids:
        points = snapshot_series(trace, p, lo, hi, max_points)
        if not points:
            continue
        ext, internal, over = FRAG_COLUMNS
        out.append(dict(
            proc_id=p, pid=trace.processes[p]["pid"], label=proc_label(trace.processes[p]),
            points=points,
            worst=_named_snapshot(trace, p, "coalesce(mapped, 0) - coalesce(requested, 0) DESC, ts_ns",
                                  lo, hi),
            max_external=_named_snapshot(trace, p, f"{ext} DESC, ts_ns", lo, hi),
            max_internal=_named_snapshot(trace, p, f"{internal} DESC, ts_ns", lo, hi),
            max_overhead=_named_snapshot(trace, p, f"coalesce({over}, 0) DESC, ts_ns", lo, hi),
            last=_named_snapshot(trace, p, "ts_ns DESC", lo, hi)))
    return dict(trace=trace.path, window=[lo, hi], processes=out)


def timeline_report(trace, proc_ids, lo=None, hi=None, max_points=DEFAULT_MAX_POINTS):
    """Heap over time per process (requested, in_use, mapped), its peak and the marks, each
    mark with the requested bytes of the last snapshot at or before it."""
    cond, params = _window(lo, hi)
    out = []
    for p in proc_ids:
        row = trace.processes[p]
        points = snapshot_series(trace, p, lo, hi, max_points)
        marks = []
        for ts, label in trace.query(
                f"SELECT ts_ns, label FROM marks WHERE proc_id = {int(p)}{cond} ORDER BY ts_ns",
                params):
            at = trace.query(
                f"SELECT requested FROM snapshots WHERE proc_id = {int(p)} AND ts_ns <= ? "
                "ORDER BY ts_ns DESC LIMIT 1", (ts,)).fetchone()
            marks.append(dict(ts_ns=ts, label=label, requested=at[0] if at else None))
        peak_ns = row.get("peak_ns")
        in_window = peak_ns is not None and (lo is None or peak_ns >= lo) and \
            (hi is None or peak_ns <= hi)
        out.append(dict(proc_id=p, pid=row["pid"], label=proc_label(row), points=points,
                        peak=dict(bytes=row.get("peak_bytes") or 0, ns=peak_ns,
                                  in_window=in_window),
                        start_ns=row.get("start_ns"), end_ns=row.get("end_ns"), marks=marks))
    return dict(trace=trace.path, window=[lo, hi], processes=out)
