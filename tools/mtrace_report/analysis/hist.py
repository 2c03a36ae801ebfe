"""hist (show_alloc_hist): requested sizes in power-of-two buckets and in the allocator's
size classes, for every allocation of the run (`sizes`, see Trace.ensure_sizes) or for the
blocks live at a given time (the snapshot at or before it, or an exact replay of the events).

Bucket b holds sizes of bit length b (docs/trace-format.md): bucket 0 is size 0, bucket b
is [2^(b-1), 2^b - 1]. A size maps to the smallest small class that holds it; sizes above
the largest small class to their power-of-two upper bound (as snapshot_classes does).
"""
from ..db import in_list
from ..errors import ReportError
from ..events import replay_live


def bucket_range(b):
    if b == 0:
        return 0, 0
    return 1 << (b - 1), (1 << b) - 1


def _fill_buckets(counts):
    """[{bucket, lo, hi, count, bytes}] from {bucket: (count, bytes)}, gaps filled."""
    if not counts:
        return []
    out = []
    for b in range(min(counts), max(counts) + 1):
        n, nbytes = counts.get(b, (0, 0))
        lo, hi = bucket_range(b)
        out.append(dict(bucket=b, lo=lo, hi=hi, count=n, bytes=nbytes))
    return out


def _class_sql(classes):
    """SQL expression mapping column `size` to its class (see module docstring)."""
    if not classes:
        return "(1 << mt_bitlen(max(size, 1) - 1))"
    values = ",".join(f"({int(c)})" for c in classes)
    return (f"(CASE WHEN size <= {classes[-1]} THEN (SELECT min(column1) FROM (VALUES {values})"
            " WHERE column1 >= size) ELSE (1 << mt_bitlen(size - 1)) END)")


def size_class(size, classes):
    for c in classes:
        if size <= c:
            return c
    return 1 << max(0, (size - 1).bit_length())


def _class_rows(counts, classes, capacity=None):
    small_max = classes[-1] if classes else 0
    rows = []
    for c in sorted(counts):
        n, nbytes = counts[c]
        row = dict(block_size=c, small=c <= small_max, count=n, bytes=nbytes)
        if capacity is not None:
            row["capacity"] = capacity.get(c)
        rows.append(row)
    return rows


def alloc_hist(trace, proc_ids):
    """Every allocation of the run, by requested size."""
    where = f"proc_id IN {in_list(proc_ids)}"
    classes = trace.small_classes()
    trace.ensure_sizes()
    buckets = {b: (n, nbytes) for b, n, nbytes in trace.query(
        f"SELECT mt_bitlen(size) AS b, sum(allocs), sum(allocs * size) FROM sizes WHERE {where} "
        "GROUP BY b")}
    cls_expr = _class_sql(classes)
    by_class = {c: (n, nbytes) for c, n, nbytes in trace.query(
        f"SELECT {cls_expr} AS k, sum(allocs), sum(allocs * size) FROM sizes WHERE {where} "
        "GROUP BY k")}
    live_exit = trace.query(
        f"SELECT coalesce(sum(live_at_exit), 0), coalesce(sum(live_at_exit * size), 0) "
        f"FROM sizes WHERE {where}").fetchone()
    total = sum(v[0] for v in buckets.values())
    return dict(kind="allocations", trace=trace.path, small_classes=classes,
                total_count=total, total_bytes=sum(v[1] for v in buckets.values()),
                live_at_exit_count=live_exit[0], live_at_exit_bytes=live_exit[1],
                buckets=_fill_buckets(buckets), classes=_class_rows(by_class, classes))


def _snapshot_rows(trace, table, columns, proc_id, snap_id):
    """A snapshot's rows of snapshot_sizes or snapshot_classes, keyed by their first column.
    Format 2 stores a row only when its value changed since the process's previous
    snapshot: the value at snap_id is the latest row at or before it. Format 1 stores every
    (nonzero) row of every snapshot."""
    if trace.version < 2:
        return trace.query(f"SELECT {columns} FROM {table} WHERE proc_id = ? AND snap_id = ?",
                           (proc_id, snap_id)).fetchall()
    # SQLite takes the bare columns from the row holding max(): one scan in SQL, whatever
    # the number of snapshots before this one.
    key = columns.split(",")[0].strip()
    return [row[:-1] for row in trace.query(
        f"SELECT {columns}, max(snap_id) FROM {table} WHERE proc_id = ? AND snap_id <= ? "
        f"GROUP BY {key}", (proc_id, snap_id))]


def live_hist(trace, proc_ids, at_ns, exact=False, progress=None):
    """Blocks live at at_ns: from each process's last snapshot at or before that time, or
    (exact) by replaying the events up to it."""
    classes = trace.small_classes()
    alive = [p for p in proc_ids
             if (trace.processes[p].get("start_ns") or 0) <= at_ns]
    if not alive:
        raise ReportError(f"no selected process had started at {at_ns / 1e9:g} s",
                          "pick a time within the recording (see `mtrace-report summary`)")
    if exact:
        live = replay_live(trace, alive, at_ns, progress)
        buckets, by_class = {}, {}
        for blocks in live.values():
            for size in blocks.values():
                b = buckets.setdefault(int(size).bit_length(), [0, 0])
                b[0] += 1
                b[1] += size
                c = by_class.setdefault(size_class(size, classes), [0, 0])
                c[0] += 1
                c[1] += size
        return dict(kind="live", source="events", at_ns=at_ns, trace=trace.path,
                    small_classes=classes, snapshots=[],
                    total_count=sum(v[0] for v in buckets.values()),
                    total_bytes=sum(v[1] for v in buckets.values()),
                    buckets=_fill_buckets({k: tuple(v) for k, v in buckets.items()}),
                    classes=_class_rows({k: tuple(v) for k, v in by_class.items()}, classes))
    snaps = []
    for p in alive:
        # snap_id grows with time, so this walks the process's snapshots once
        row = trace.query("SELECT snap_id, ts_ns FROM snapshots WHERE proc_id = ? AND ts_ns <= ? "
                          "ORDER BY ts_ns DESC, snap_id DESC LIMIT 1", (p, at_ns)).fetchone()
        if row:
            snaps.append((p, row[0], row[1]))
    if not snaps:
        raise ReportError(f"no snapshot at or before {at_ns / 1e9:g} s",
                          "use --exact to replay the events, or a later --at")
    buckets, by_class, capacity = {}, {}, {}
    for p, s, _ in snaps:
        for b, n, nbytes in _snapshot_rows(trace, "snapshot_sizes", "bucket, live, bytes", p, s):
            was = buckets.get(b, (0, 0))
            buckets[b] = (was[0] + n, was[1] + nbytes)
        for size, n, cap in _snapshot_rows(trace, "snapshot_classes", "block_size, live, capacity", p, s):
            # bytes here are block bytes (what the allocator hands out), not requested bytes
            was = by_class.get(size, (0, 0))
            by_class[size] = (was[0] + n, was[1] + n * size)
            if cap is not None:
                capacity[size] = (capacity.get(size) or 0) + cap
            else:
                capacity.setdefault(size, None)
    buckets = {b: v for b, v in buckets.items() if v[0]}
    by_class = {c: v for c, v in by_class.items() if v[0] or capacity.get(c)}
    return dict(kind="live", source="snapshot", at_ns=at_ns, trace=trace.path,
                small_classes=classes,
                snapshots=[dict(proc_id=p, snap_id=s, ts_ns=t) for p, s, t in snaps],
                total_count=sum(v[0] for v in buckets.values()),
                total_bytes=sum(v[1] for v in buckets.values()),
                buckets=_fill_buckets(buckets),
                classes=_class_rows(by_class, classes, capacity))
