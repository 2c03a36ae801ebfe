"""leaks: blocks live at exit grouped by allocation stack, leaked apart from still
reachable (and from unclassified ones when no reachability scan ran), per process.

Grouping, totals, ordering and the per-process limit all run in SQLite; Python sees only
the stacks it shows (or, for the gate, streams them in batches), so a trace with tens of
thousands of leaking stacks costs no more memory than one with ten."""
from ..db import in_list
from .stacks import STACK_BATCH, frames_of

GROUP_KEYS = ("proc_id", "stack_id", "leaked_blocks", "leaked_bytes", "reachable_blocks",
              "reachable_bytes", "unknown_blocks", "unknown_bytes")
TOTAL_KEYS = GROUP_KEYS[2:]
ORDER = ("proc_id, leaked_bytes + unknown_bytes DESC, reachable_bytes DESC, stack_id")


def _groups_sql(proc_ids, show_reachable, include_unknown):
    where = f"proc_id IN {in_list(proc_ids)}"
    unknown = ("SELECT proc_id, stack_id, count(*) AS ub, sum(size) AS ubytes FROM live_at_exit "
               f"WHERE {where} AND status NOT IN ('leaked', 'reachable') GROUP BY proc_id, stack_id")
    if not include_unknown:
        unknown += " LIMIT 0"
    keep = "s.leaked_blocks > 0 OR u.ub > 0"
    if show_reachable:
        keep += " OR s.reachable_blocks > 0"
    # Every stack that allocated has a stack_stats row, so the LEFT JOIN loses nothing.
    return ("SELECT s.proc_id AS proc_id, s.stack_id AS stack_id, "
            "coalesce(s.leaked_blocks, 0) AS leaked_blocks, coalesce(s.leaked_bytes, 0) AS leaked_bytes, "
            "coalesce(s.reachable_blocks, 0) AS reachable_blocks, "
            "coalesce(s.reachable_bytes, 0) AS reachable_bytes, "
            "coalesce(u.ub, 0) AS unknown_blocks, coalesce(u.ubytes, 0) AS unknown_bytes "
            f"FROM stack_stats s LEFT JOIN ({unknown}) u "
            "ON u.proc_id = s.proc_id AND u.stack_id = s.stack_id "
            f"WHERE s.{where} AND ({keep})")


def _group(trace, row):
    g = dict(zip(GROUP_KEYS, row))
    g["pid"] = trace.processes[g["proc_id"]]["pid"]
    return g


def leak_groups(trace, proc_ids, show_reachable=False, include_unknown=True, limit=None):
    """Per (process, stack) with something live at exit: counts and bytes by class, and its
    frames; sorted per process by leaked (+ unclassified) bytes, then reachable bytes;
    at most `limit` per process (None or 0: all)."""
    sql = _groups_sql(proc_ids, show_reachable, include_unknown)
    if limit:
        sql = (f"SELECT {', '.join(GROUP_KEYS)} FROM (SELECT *, row_number() OVER (PARTITION BY "
               f"proc_id ORDER BY {ORDER.split(', ', 1)[1]}) AS rn FROM ({sql})) "
               f"WHERE rn <= {int(limit)}")
    rows = [_group(trace, r) for r in trace.query(f"SELECT * FROM ({sql}) ORDER BY {ORDER}")]
    frames = frames_of(trace, [g["stack_id"] for g in rows])
    for g in rows:
        g["frames"] = frames.get(g["stack_id"], [])
    return rows


def iter_leak_groups(trace, proc_ids, include_unknown=True, progress=None):
    """Every group (as leak_groups, reachable-only stacks left out), streamed in batches
    with their frames: for the gate and baselines, whatever the number of stacks."""
    sql = _groups_sql(proc_ids, False, include_unknown)
    total = trace.query(f"SELECT count(*) FROM ({sql})").fetchone()[0] if progress else 0
    cursor = trace.conn.cursor()
    cursor.execute(f"SELECT * FROM ({sql}) ORDER BY {ORDER}")
    done = 0
    while True:
        batch = [_group(trace, r) for r in cursor.fetchmany(STACK_BATCH)]
        if not batch:
            return
        done += len(batch)
        if progress:
            progress.update(done, total)
        frames = frames_of(trace, [g["stack_id"] for g in batch])
        for g in batch:
            g["frames"] = frames.get(g["stack_id"], [])
            yield g


def leak_totals(trace, proc_ids, include_unknown=True):
    """{proc_id: totals} computed in SQLite, plus the number of stacks with a leak."""
    out = {p: dict.fromkeys(TOTAL_KEYS + ("leak_stacks", "listed_stacks"), 0) for p in proc_ids}
    where = f"proc_id IN {in_list(proc_ids)}"
    for p, lb, lbytes, rb, rbytes, stacks in trace.query(
            "SELECT proc_id, sum(leaked_blocks), sum(leaked_bytes), sum(reachable_blocks), "
            "sum(reachable_bytes), sum(leaked_blocks > 0) FROM stack_stats "
            f"WHERE {where} GROUP BY proc_id"):
        out[p].update(leaked_blocks=lb or 0, leaked_bytes=lbytes or 0, reachable_blocks=rb or 0,
                      reachable_bytes=rbytes or 0, leak_stacks=stacks or 0)
    if include_unknown:
        for p, n, nbytes in trace.query(
                "SELECT proc_id, count(*), sum(size) FROM live_at_exit "
                f"WHERE {where} AND status NOT IN ('leaked', 'reachable') GROUP BY proc_id"):
            out[p].update(unknown_blocks=n, unknown_bytes=nbytes or 0)
    return out


def leak_report(trace, proc_ids, show_reachable=False, limit=None):
    groups = leak_groups(trace, proc_ids, show_reachable, limit=limit)
    totals = leak_totals(trace, proc_ids)
    for p, n in trace.query(
            f"SELECT proc_id, count(*) FROM ({_groups_sql(proc_ids, show_reachable, True)}) "
            "GROUP BY proc_id"):
        totals[p]["listed_stacks"] = n
    processes = []
    for p in proc_ids:
        row = trace.processes[p]
        processes.append(dict(proc_id=p, pid=row["pid"], leak_scan=bool(row.get("leak_scan")),
                              end_reason=row.get("end_reason"), **totals[p]))
    grand = {k: sum(t[k] for t in totals.values()) for k in TOTAL_KEYS + ("leak_stacks",)}
    return dict(trace=trace.path, complete=trace.complete, show_reachable=show_reachable,
                limit=limit, totals=grand, processes=processes, stacks=groups)
