"""diff: what changed between two traces, per call stack. Stacks are matched by their
symbolized frames (stacks.stack_key), since stack ids differ between recordings."""
from .stacks import frames_of, stack_keys

STAT_COLUMNS = ("allocs", "alloc_bytes", "at_peak_bytes", "temporary", "leaked_blocks",
                "leaked_bytes", "reachable_blocks", "reachable_bytes")


def _by_key(trace):
    """{key: {stats..., stack_id: a representative stack}} over every process."""
    keys = stack_keys(trace)
    out = {}
    sums = ", ".join(f"sum({c})" for c in STAT_COLUMNS)
    for row in trace.query(f"SELECT stack_id, {sums} FROM stack_stats GROUP BY stack_id"):
        sid, values = row[0], row[1:]
        key = keys.get(sid, f"stack {sid}")
        entry = out.setdefault(key, dict(dict.fromkeys(STAT_COLUMNS, 0), stack_id=sid))
        for c, v in zip(STAT_COLUMNS, values):
            entry[c] += v or 0
    return out


def diff_traces(trace_a, trace_b, limit=10):
    a, b = _by_key(trace_a), _by_key(trace_b)
    entries = []
    for key in set(a) | set(b):
        ea, eb = a.get(key), b.get(key)
        zero = dict.fromkeys(STAT_COLUMNS, 0)
        sa, sb = ea or zero, eb or zero
        entries.append(dict(key=key, in_a=ea is not None, in_b=eb is not None,
                            stack_a=ea["stack_id"] if ea else None,
                            stack_b=eb["stack_id"] if eb else None,
                            a={c: sa[c] for c in STAT_COLUMNS}, b={c: sb[c] for c in STAT_COLUMNS},
                            delta={c: sb[c] - sa[c] for c in STAT_COLUMNS}))

    def pick(cond, sort_key):
        chosen = sorted((e for e in entries if cond(e)), key=sort_key)
        return chosen[:limit] if limit and limit > 0 else chosen, len(chosen)

    new_leaks, n_new_leaks = pick(lambda e: e["b"]["leaked_blocks"] > 0 and e["a"]["leaked_blocks"] == 0,
                                  lambda e: (-e["b"]["leaked_bytes"], e["key"]))
    grown_leaks, n_grown = pick(lambda e: e["a"]["leaked_blocks"] > 0 and
                                e["b"]["leaked_bytes"] > e["a"]["leaked_bytes"],
                                lambda e: (-e["delta"]["leaked_bytes"], e["key"]))
    fixed_leaks, n_fixed = pick(lambda e: e["a"]["leaked_blocks"] > 0 and e["b"]["leaked_blocks"] == 0,
                                lambda e: (-e["a"]["leaked_bytes"], e["key"]))
    grew, n_grew = pick(lambda e: e["in_b"] and e["delta"]["alloc_bytes"] > 0,
                        lambda e: (-e["delta"]["alloc_bytes"], e["key"]))
    shrank, n_shrank = pick(lambda e: e["in_a"] and e["in_b"] and e["delta"]["alloc_bytes"] < 0,
                            lambda e: (e["delta"]["alloc_bytes"], e["key"]))
    gone, n_gone = pick(lambda e: e["in_a"] and not e["in_b"],
                        lambda e: (-e["a"]["alloc_bytes"], e["key"]))
    shown = new_leaks + grown_leaks + fixed_leaks + grew + shrank + gone
    frames_a = frames_of(trace_a, [e["stack_a"] for e in shown if e["stack_a"] is not None])
    frames_b = frames_of(trace_b, [e["stack_b"] for e in shown if e["stack_b"] is not None])
    for e in shown:
        e["frames"] = frames_b.get(e["stack_b"]) if e["in_b"] else frames_a.get(e["stack_a"], [])
    totals = {side: {c: sum(e[side][c] for e in entries) for c in STAT_COLUMNS}
              for side in ("a", "b")}
    return dict(a=trace_a.path, b=trace_b.path, totals=totals,
                new_leaks=new_leaks, grown_leaks=grown_leaks, fixed_leaks=fixed_leaks,
                grew=grew, shrank=shrank, disappeared=gone,
                counts=dict(new_leaks=n_new_leaks, grown_leaks=n_grown, fixed_leaks=n_fixed,
                            grew=n_grew, shrank=n_shrank, disappeared=n_gone))
