"""summary: the trace on one screen: processes, calls by operation, peak heap, bytes
allocated, dropped events, heap errors and leaks."""
import json

from ..db import in_list
from ..events import ALLOC_OPS, OP_NAMES
from .stacks import frames_of


def _argv(row):
    try:
        return json.loads(row["argv"]) if row.get("argv") else []
    except (TypeError, ValueError):
        return [row["argv"]]


def summarize(trace, proc_ids):
    where = f"proc_id IN {in_list(proc_ids)}"
    processes = []
    for p in proc_ids:
        row = trace.processes[p]
        start, end = row.get("start_ns"), row.get("end_ns")
        processes.append(dict(
            proc_id=p, pid=row["pid"], ppid=row.get("ppid"), parent_proc_id=row.get("parent_proc_id"),
            exe=row.get("exe"), argv=_argv(row), start_ns=start, end_ns=end,
            duration_ns=(end - start) if end is not None and start is not None else None,
            exit_code=row.get("exit_code"), exit_signal=row.get("exit_signal"),
            end_reason=row.get("end_reason"), events=row.get("events") or 0,
            dropped=row.get("dropped") or 0, peak_bytes=row.get("peak_bytes") or 0,
            peak_ns=row.get("peak_ns")))
    ops = [dict(op=op, name=OP_NAMES.get(op, f"op{op}"), calls=calls, bytes=nbytes)
           for op, calls, nbytes in trace.query(
               f"SELECT op, sum(calls), sum(bytes) FROM op_counts WHERE {where} "
               "GROUP BY op ORDER BY op")]
    allocated = sum(o["bytes"] or 0 for o in ops if o["op"] in ALLOC_OPS)
    allocations = sum(o["calls"] or 0 for o in ops if o["op"] in ALLOC_OPS)
    peak = max(processes, key=lambda r: r["peak_bytes"])
    errors = [dict(kind=k, count=n) for k, n in trace.query(
        f"SELECT kind, count(*) FROM errors WHERE {where} GROUP BY kind ORDER BY count(*) DESC, kind")]
    lb, lbytes, rb, rbytes = trace.query(
        "SELECT coalesce(sum(leaked_blocks), 0), coalesce(sum(leaked_bytes), 0), "
        "coalesce(sum(reachable_blocks), 0), coalesce(sum(reachable_bytes), 0) "
        f"FROM stack_stats WHERE {where}").fetchone()
    ub, ubytes = trace.query(
        "SELECT count(*), coalesce(sum(size), 0) FROM live_at_exit "
        f"WHERE {where} AND status NOT IN ('leaked', 'reachable')").fetchone()
    leak_stacks = trace.query(
        f"SELECT count(DISTINCT stack_id) FROM stack_stats WHERE {where} AND leaked_blocks > 0"
    ).fetchone()[0]
    all_selected = len(proc_ids) == len(trace.processes)
    dropped = trace.meta_int("dropped") if all_selected else sum(p["dropped"] for p in processes)
    events = trace.meta_int("events") if all_selected else sum(p["events"] for p in processes)
    return dict(
        trace=trace.path, complete=trace.complete, command=trace.meta_json("command", []),
        mtrace_version=trace.meta.get("mtrace_version"), duration_ns=trace.meta_int("duration_ns"),
        events=events, dropped=dropped, unrecorded=trace.meta_int("unrecorded") if all_selected else None,
        processes=processes, operations=ops,
        allocations=allocations, bytes_allocated=allocated,
        peak=dict(bytes=peak["peak_bytes"], ns=peak["peak_ns"], proc_id=peak["proc_id"],
                  pid=peak["pid"]),
        errors=errors, error_count=sum(e["count"] for e in errors),
        leaks=dict(leaked_blocks=lb, leaked_bytes=lbytes, leak_stacks=leak_stacks,
                   reachable_blocks=rb, reachable_bytes=rbytes,
                   unknown_blocks=ub, unknown_bytes=ubytes))


def error_list(trace, proc_ids, limit=50):
    """The first heap errors (double free, ...) with where they were detected, where the
    block was allocated and where it was last freed, as far as the trace knows."""
    cols = ("proc_id", "ts_ns", "thread_idx", "kind", "ptr", "size", "function", "detail",
            "stack_id", "alloc_stack_id", "free_stack_id")
    rows = [dict(zip(cols, r)) for r in trace.query(
        f"SELECT {', '.join(cols)} FROM errors WHERE proc_id IN {in_list(proc_ids)} "
        f"ORDER BY ts_ns LIMIT {int(limit)}")]
    stacks = frames_of(trace, [r[k] for r in rows for k in ("stack_id", "alloc_stack_id",
                                                            "free_stack_id") if r[k]])
    for r in rows:
        r["pid"] = trace.processes[r["proc_id"]]["pid"]
        for k in ("stack_id", "alloc_stack_id", "free_stack_id"):
            r[k.replace("_id", "") + "_frames"] = stacks.get(r[k], []) if r[k] else []
    return rows
