"""top: the hottest allocation sites by calls, bytes, contribution to the peak, or
temporary allocations (stack_stats, summed over the selected processes)."""
from ..db import in_list
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
