"""leaks: blocks live at exit grouped by allocation stack, leaked apart from still
reachable (and from unclassified ones when no reachability scan ran), per process."""
from ..db import in_list
from .stacks import frames_of


def leak_groups(trace, proc_ids, show_reachable=False, include_unknown=True):
    """Per (process, stack) with something live at exit: counts and bytes by class, frames.

    Sorted per process by leaked (+ unclassified) bytes, then reachable bytes when shown.
    Leaked and reachable numbers are the collector's (stack_stats); unclassified blocks
    come from live_at_exit, where status is neither."""
    where = f"proc_id IN {in_list(proc_ids)}"
    groups = {}
    for proc_id, sid, lb, lbytes, rb, rbytes in trace.query(
            "SELECT proc_id, stack_id, leaked_blocks, leaked_bytes, reachable_blocks, "
            f"reachable_bytes FROM stack_stats WHERE {where} "
            "AND (leaked_blocks > 0 OR reachable_blocks > 0)"):
        groups[(proc_id, sid)] = dict(proc_id=proc_id, pid=trace.processes[proc_id]["pid"],
                                      stack_id=sid, leaked_blocks=lb or 0,
                                      leaked_bytes=lbytes or 0, reachable_blocks=rb or 0,
                                      reachable_bytes=rbytes or 0, unknown_blocks=0,
                                      unknown_bytes=0)
    if include_unknown:
        for proc_id, sid, n, nbytes in trace.query(
                "SELECT proc_id, stack_id, count(*), sum(size) FROM live_at_exit "
                f"WHERE {where} AND status NOT IN ('leaked', 'reachable') "
                "GROUP BY proc_id, stack_id"):
            g = groups.setdefault((proc_id, sid), dict(
                proc_id=proc_id, pid=trace.processes[proc_id]["pid"], stack_id=sid,
                leaked_blocks=0, leaked_bytes=0, reachable_blocks=0, reachable_bytes=0))
            g["unknown_blocks"], g["unknown_bytes"] = n, nbytes
    rows = [g for g in groups.values()
            if g["leaked_blocks"] or g["unknown_blocks"] or (show_reachable and g["reachable_blocks"])]
    rows.sort(key=lambda g: (g["proc_id"], -(g["leaked_bytes"] + g["unknown_bytes"]),
                             -g["reachable_bytes"], g["stack_id"]))
    frames = frames_of(trace, [g["stack_id"] for g in rows])
    for g in rows:
        g["frames"] = frames.get(g["stack_id"], [])
    return rows


def leak_totals(groups):
    keys = ("leaked_blocks", "leaked_bytes", "reachable_blocks", "reachable_bytes",
            "unknown_blocks", "unknown_bytes")
    return {k: sum(g[k] for g in groups) for k in keys}


def leak_report(trace, proc_ids, show_reachable=False):
    groups = leak_groups(trace, proc_ids, show_reachable)
    # Totals always count reachable blocks, even when their stacks are not listed.
    all_groups = groups if show_reachable else leak_groups(trace, proc_ids, True)
    processes = []
    for p in proc_ids:
        mine = [g for g in all_groups if g["proc_id"] == p]
        row = trace.processes[p]
        processes.append(dict(proc_id=p, pid=row["pid"], leak_scan=bool(row.get("leak_scan")),
                              end_reason=row.get("end_reason"), **leak_totals(mine)))
    return dict(trace=trace.path, complete=trace.complete, show_reachable=show_reachable,
                totals=leak_totals(all_groups), processes=processes, stacks=groups)
