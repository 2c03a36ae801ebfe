"""gate: the CI leak gate. Counts the leaked blocks left after suppressions and the
baseline, checks them against the limits, and says which stacks are at fault.

A stack is *counted* when it leaked (or, with count_unknown, holds blocks no scan
classified), no suppression matches it, and (with a baseline) the baseline trace has no
leak at the same symbolized stack. Checks: total leaked bytes, total leaked blocks, bytes
per stack, heap errors. With no limit given the gate is `--max-leak-bytes 0`.
"""
from .leaks import leak_groups
from .stacks import frames_of, stack_key
from .suppressions import find_suppression
from ..db import in_list


def baseline_leak_keys(trace, count_unknown=False):
    """Symbolized keys of every stack that leaked in a (baseline) trace."""
    groups = leak_groups(trace, list(trace.processes), include_unknown=count_unknown)
    return {stack_key(g["frames"]) for g in groups
            if g["leaked_blocks"] or (count_unknown and g["unknown_blocks"])}


def run_gate(trace, proc_ids, max_leak_bytes=None, max_leaks=None, max_stack_bytes=None,
             max_errors=None, suppressions=(), baseline_keys=None, count_unknown=False):
    if max_leak_bytes is None and max_leaks is None and max_stack_bytes is None:
        max_leak_bytes = 0
    groups = leak_groups(trace, proc_ids, include_unknown=True)
    counted, suppressed, baselined = [], [], []
    unclassified = dict(blocks=0, bytes=0)
    for g in groups:
        unclassified["blocks"] += g["unknown_blocks"]
        unclassified["bytes"] += g["unknown_bytes"]
        blocks = g["leaked_blocks"] + (g["unknown_blocks"] if count_unknown else 0)
        nbytes = g["leaked_bytes"] + (g["unknown_bytes"] if count_unknown else 0)
        if not blocks:
            continue
        entry = dict(g, blocks=blocks, bytes=nbytes)
        supp = find_suppression(suppressions, g["frames"])
        if supp:
            supp.used_stacks += 1
            supp.used_bytes += nbytes
            entry["suppressed_by"] = supp.name
            suppressed.append(entry)
        elif baseline_keys is not None and stack_key(g["frames"]) in baseline_keys:
            baselined.append(entry)
        else:
            counted.append(entry)
    total_bytes = sum(e["bytes"] for e in counted)
    total_blocks = sum(e["blocks"] for e in counted)
    checks = []
    offending = []
    if max_leak_bytes is not None:
        ok = total_bytes <= max_leak_bytes
        checks.append(dict(name="leaked bytes", limit=max_leak_bytes, value=total_bytes, passed=ok))
        if not ok:
            offending = list(counted)
    if max_leaks is not None:
        ok = total_blocks <= max_leaks
        checks.append(dict(name="leaked blocks", limit=max_leaks, value=total_blocks, passed=ok))
        if not ok:
            offending = list(counted)
    if max_stack_bytes is not None:
        over = [e for e in counted if e["bytes"] > max_stack_bytes]
        worst = max((e["bytes"] for e in counted), default=0)
        checks.append(dict(name="leaked bytes per stack", limit=max_stack_bytes, value=worst,
                           passed=not over))
        for e in over:
            if e not in offending:
                offending.append(e)
    errors = []
    if max_errors is not None:
        errors = [dict(zip(("proc_id", "ts_ns", "kind", "ptr", "size", "function", "stack_id"), r))
                  for r in trace.query(
                      "SELECT proc_id, ts_ns, kind, ptr, size, function, stack_id FROM errors "
                      f"WHERE proc_id IN {in_list(proc_ids)} ORDER BY ts_ns")]
        checks.append(dict(name="heap errors", limit=max_errors, value=len(errors),
                           passed=len(errors) <= max_errors))
        frames = frames_of(trace, [e["stack_id"] for e in errors])
        for e in errors:
            e["frames"] = frames.get(e["stack_id"], [])
    offending.sort(key=lambda e: (-e["bytes"], e["proc_id"], e["stack_id"]))
    return dict(trace=trace.path, complete=trace.complete,
                passed=all(c["passed"] for c in checks), checks=checks,
                counted=dict(blocks=total_blocks, bytes=total_bytes, stacks=len(counted)),
                offending=offending, suppressed=suppressed, baselined=baselined,
                unclassified=unclassified, count_unknown=count_unknown, errors=errors,
                suppressions=[dict(name=s.name, kind=s.kind, source=s.source,
                                   stacks=s.used_stacks, bytes=s.used_bytes)
                              for s in suppressions])
