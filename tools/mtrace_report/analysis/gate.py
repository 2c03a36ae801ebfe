"""gate: the CI leak gate. Counts the leaked blocks left after suppressions and the
baseline, checks them against the limits, and says which stacks are at fault.

A stack is *counted* when it leaked (or, with count_unknown, holds blocks no scan
classified), no suppression matches it, and (with a baseline) the baseline trace has no
leak at the same symbolized stack. Checks: total leaked bytes, total leaked blocks, bytes
per stack, heap errors. With no limit given the gate is `--max-leak-bytes 0`.

Leak stacks are streamed in batches and kept as small tuples; frames are fetched again
only for the stacks shown, so memory does not grow with the number of leaking stacks.
"""
import hashlib

from ..db import in_list
from .leaks import iter_leak_groups
from .stacks import frames_of, stack_key

# Offending stacks listed in full in the result (all are counted).
DEFAULT_SHOW = 20
KEY_DIGEST_BYTES = 8   # 64-bit digests of stack keys: collisions are negligible at 1e6 stacks


def key_digest(frames):
    return hashlib.blake2b(stack_key(frames).encode(), digest_size=KEY_DIGEST_BYTES).digest()


def baseline_leak_keys(trace, count_unknown=False, progress=None):
    """Digests of the symbolized keys of every stack that leaked in a (baseline) trace."""
    return {key_digest(g["frames"]) for g in iter_leak_groups(trace, list(trace.processes),
                                                              count_unknown, progress)
            if g["leaked_blocks"] or (count_unknown and g["unknown_blocks"])}


def run_gate(trace, proc_ids, max_leak_bytes=None, max_leaks=None, max_stack_bytes=None,
             max_errors=None, suppressions=(), baseline_keys=None, count_unknown=False,
             show=DEFAULT_SHOW, progress=None):
    if max_leak_bytes is None and max_leaks is None and max_stack_bytes is None:
        max_leak_bytes = 0
    counted = []          # (bytes, blocks, proc_id, stack_id)
    n_suppressed = n_baselined = 0
    suppressed_bytes = baselined_bytes = 0
    unclassified = dict(blocks=0, bytes=0)
    for g in iter_leak_groups(trace, proc_ids, include_unknown=True, progress=progress):
        unclassified["blocks"] += g["unknown_blocks"]
        unclassified["bytes"] += g["unknown_bytes"]
        blocks = g["leaked_blocks"] + (g["unknown_blocks"] if count_unknown else 0)
        nbytes = g["leaked_bytes"] + (g["unknown_bytes"] if count_unknown else 0)
        if not blocks:
            continue
        supp = next((s for s in suppressions if s.matches(g["frames"])), None)
        if supp:
            supp.used_stacks += 1
            supp.used_bytes += nbytes
            n_suppressed += 1
            suppressed_bytes += nbytes
        elif baseline_keys is not None and key_digest(g["frames"]) in baseline_keys:
            n_baselined += 1
            baselined_bytes += nbytes
        else:
            counted.append((nbytes, blocks, g["proc_id"], g["stack_id"]))
    total_bytes = sum(c[0] for c in counted)
    total_blocks = sum(c[1] for c in counted)
    checks = []
    offending = set()
    if max_leak_bytes is not None:
        ok = total_bytes <= max_leak_bytes
        checks.append(dict(name="leaked bytes", limit=max_leak_bytes, value=total_bytes, passed=ok))
        if not ok:
            offending.update(range(len(counted)))
    if max_leaks is not None:
        ok = total_blocks <= max_leaks
        checks.append(dict(name="leaked blocks", limit=max_leaks, value=total_blocks, passed=ok))
        if not ok:
            offending.update(range(len(counted)))
    if max_stack_bytes is not None:
        over = [i for i, c in enumerate(counted) if c[0] > max_stack_bytes]
        worst = max((c[0] for c in counted), default=0)
        checks.append(dict(name="leaked bytes per stack", limit=max_stack_bytes, value=worst,
                           passed=not over))
        offending.update(over)
    ranked = sorted((counted[i] for i in offending), key=lambda c: (-c[0], c[2], c[3]))
    shown = ranked[:show] if show else ranked
    frames = frames_of(trace, [c[3] for c in shown])
    offending_rows = [dict(bytes=c[0], blocks=c[1], proc_id=c[2], stack_id=c[3],
                           pid=trace.processes[c[2]]["pid"], frames=frames.get(c[3], []))
                      for c in shown]
    errors = []
    if max_errors is not None:
        n_errors = trace.query(f"SELECT count(*) FROM errors WHERE proc_id IN {in_list(proc_ids)}"
                               ).fetchone()[0]
        errors = [dict(zip(("proc_id", "ts_ns", "kind", "ptr", "size", "function", "stack_id"), r))
                  for r in trace.query(
                      "SELECT proc_id, ts_ns, kind, ptr, size, function, stack_id FROM errors "
                      f"WHERE proc_id IN {in_list(proc_ids)} ORDER BY ts_ns LIMIT {int(show or -1)}")]
        checks.append(dict(name="heap errors", limit=max_errors, value=n_errors,
                           passed=n_errors <= max_errors))
        efr = frames_of(trace, [e["stack_id"] for e in errors])
        for e in errors:
            e["frames"] = efr.get(e["stack_id"], [])
    return dict(trace=trace.path, complete=trace.complete,
                passed=all(c["passed"] for c in checks), checks=checks,
                counted=dict(blocks=total_blocks, bytes=total_bytes, stacks=len(counted)),
                offending=offending_rows, offending_stacks=len(ranked),
                suppressed=dict(stacks=n_suppressed, bytes=suppressed_bytes),
                baselined=dict(stacks=n_baselined, bytes=baselined_bytes),
                unclassified=unclassified, count_unknown=count_unknown, errors=errors,
                suppressions=[dict(name=s.name, kind=s.kind, source=s.source,
                                   stacks=s.used_stacks, bytes=s.used_bytes)
                              for s in suppressions])
