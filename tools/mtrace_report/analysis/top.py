"""top: the hottest allocation sites by calls, bytes, contribution to the peak, or
temporary allocations: from stack_stats (summed over the selected processes) for the
whole run, from the events themselves for a time window."""
from ..db import in_list
from ..errors import ReportError
from ..events import ALLOC_OPS, OP_FREE, OPS_WITH_OLD_POINTER, iter_events
from .stacks import frames_of

ORDER = {
    "calls": "allocs",
    "bytes": "alloc_bytes",
    "peak": "at_peak_bytes",
    "temporary": "temporary",
}


def top_sites(trace, proc_ids, by="bytes", limit=10):
    key = ORDER[by]
    limit_sql = f"LIMIT {int(limit)}" if limit and limit > 0 else ""
    cols = ("stack_id", "allocs", "alloc_bytes", "frees", "freed_bytes", "reallocs",
            "peak_bytes", "at_peak_bytes", "temporary", "min_size", "max_size", "leaked_bytes")
    rows = [dict(zip(cols, r)) for r in trace.query(
        "SELECT stack_id, sum(allocs), sum(alloc_bytes), sum(frees), "
        "sum(freed_bytes), sum(reallocs), sum(peak_bytes), sum(at_peak_bytes), "
        "sum(temporary), min(min_size), max(max_size), sum(leaked_bytes) "
        f"FROM stack_stats WHERE proc_id IN {in_list(proc_ids)} AND allocs > 0 "
        f"GROUP BY stack_id HAVING sum({key}) > 0 ORDER BY sum({key}) DESC, stack_id {limit_sql}")]
    totals = trace.query(
        "SELECT coalesce(sum(allocs), 0), coalesce(sum(alloc_bytes), 0), "
        "coalesce(sum(at_peak_bytes), 0), coalesce(sum(temporary), 0) "
        f"FROM stack_stats WHERE proc_id IN {in_list(proc_ids)}").fetchone()
    frames = frames_of(trace, [r["stack_id"] for r in rows])
    for r in rows:
        r["frames"] = frames.get(r["stack_id"], [])
    return dict(trace=trace.path, by=by, limit=limit, sites=rows,
                totals=dict(zip(("calls", "bytes", "peak", "temporary"), totals)))


def top_sites_window(trace, proc_ids, by, limit, lo, hi, progress=None):
    """top_sites restricted to the events between lo and hi (ns; either may be None): the
    aggregate tables cover whole runs, so this decodes the event chunks of the window
    (only those, found by their time range) and counts per stack as it goes. Memory: one
    entry per stack seen, none per event."""
    if by == "peak":
        raise ReportError("--by peak covers the whole run and cannot be limited to --from/--to",
                          "drop the window, or rank by calls, bytes or temporary")
    stats = {}   # stack_id -> [allocs, alloc_bytes, temporary, min_size, max_size, reallocs]
    for p in proc_ids:
        last_alloc = {}   # thread -> (ptr, stack_id) of its latest allocation in the window
        for op, thread, ts, ptr, size, sid, aux in iter_events(trace, p, lo, hi, progress):
            if (lo is not None and ts < lo) or (hi is not None and ts > hi):
                continue
            freed = ptr if op == OP_FREE else aux if op in OPS_WITH_OLD_POINTER else None
            if freed:
                last = last_alloc.get(thread)
                if last and last[0] == freed:
                    stats[last[1]][2] += 1
                    last_alloc[thread] = None
            if op in ALLOC_OPS:
                s = stats.get(sid)
                if s is None:
                    s = stats[sid] = [0, 0, 0, size, size, 0]
                s[0] += 1
                s[1] += size
                s[3] = min(s[3], size)
                s[4] = max(s[4], size)
                if op in OPS_WITH_OLD_POINTER:
                    s[5] += 1
                last_alloc[thread] = (ptr, sid)
    column = {"calls": 0, "bytes": 1, "temporary": 2}[by]
    ranked = sorted((item for item in stats.items() if item[1][column] > 0),
                    key=lambda item: (-item[1][column], item[0]))
    shown = ranked[:limit] if limit and limit > 0 else ranked
    frames = frames_of(trace, [sid for sid, _ in shown])
    sites = [dict(stack_id=sid, allocs=s[0], alloc_bytes=s[1], temporary=s[2], min_size=s[3],
                  max_size=s[4], reallocs=s[5], frees=None, freed_bytes=None, peak_bytes=None,
                  at_peak_bytes=None, leaked_bytes=None, frames=frames.get(sid, []))
             for sid, s in shown]
    totals = dict(calls=sum(s[0] for s in stats.values()), bytes=sum(s[1] for s in stats.values()),
                  peak=None, temporary=sum(s[2] for s in stats.values()))
    return dict(trace=trace.path, by=by, limit=limit, window=[lo, hi], sites=sites, totals=totals)
