"""Symbolized call stacks: frames of the stacks a report shows, and the key that matches a
stack across traces (stack ids differ between recordings, symbols do not).

A frame is a dict: function, file, line, module (path), offset, inlined. Frames come
innermost first (pos 0 = the function that called malloc).
"""
import os

from ..db import in_list

# Stacks fetched per query: keeps the IN list well under SQLite's expression limits.
STACK_BATCH = 500
# Frames shown by default in text reports (--full shows them all).
DEFAULT_FRAMES = 4


def frames_of(trace, stack_ids):
    """{stack_id: [frame, ...]} for the given stacks (missing or 0: empty list). Frame dicts
    are shared between stacks (one per frame_id per trace): many stacks, few frames."""
    ids = sorted({int(s) for s in stack_ids if s})
    out = {s: [] for s in stack_ids}
    cache = trace.__dict__.setdefault("frame_cache", {})
    for i in range(0, len(ids), STACK_BATCH):
        batch = ids[i:i + STACK_BATCH]
        rows = trace.query(
            "SELECT sf.stack_id, f.frame_id, f.function, f.file, f.line, m.path, f.offset, "
            "f.inlined FROM stack_frames sf JOIN frames f ON f.frame_id = sf.frame_id "
            "LEFT JOIN modules m ON m.module_id = f.module_id "
            f"WHERE sf.stack_id IN {in_list(batch)} ORDER BY sf.stack_id, sf.pos")
        for sid, fid, function, file, line, module, offset, inlined in rows:
            frame = cache.get(fid)
            if frame is None:
                frame = cache[fid] = dict(function=function, file=file, line=line,
                                          module=module, offset=offset, inlined=bool(inlined))
            out.setdefault(sid, []).append(frame)
    return out


def frame_text(frame):
    """`function at file:line (module)`, with what is known."""
    name = frame["function"] or (f"0x{frame['offset']:x}" if frame.get("offset") is not None
                                 else "??")
    where = ""
    if frame.get("file"):
        where = f" at {frame['file']}"
        if frame.get("line"):
            where += f":{frame['line']}"
    module = f" ({os.path.basename(frame['module'])})" if frame.get("module") else ""
    inl = " [inlined]" if frame.get("inlined") else ""
    return f"{name}{where}{module}{inl}"


def frame_key(frame):
    """What identifies a frame across two recordings: the function, the source file and the
    module by base name. Line numbers are left out so that an edit elsewhere in a file
    does not make every stack below it look new."""
    name = frame["function"] or f"0x{frame.get('offset') or 0:x}"
    return f"{name}|{os.path.basename(frame.get('file') or '')}|" \
           f"{os.path.basename(frame.get('module') or '')}"


def stack_key(frames):
    return "\n".join(frame_key(f) for f in frames)


# The same key computed inside SQLite for every stack of a trace, for diff and baselines.
STACK_KEYS_SQL = (
    "SELECT stack_id, group_concat(k, char(10)) FROM ("
    " SELECT sf.stack_id AS stack_id,"
    "  coalesce(f.function, printf('0x%x', coalesce(f.offset, 0))) || '|' ||"
    "  coalesce(mt_basename(f.file), '') || '|' || coalesce(mt_basename(m.path), '') AS k"
    " FROM stack_frames sf JOIN frames f ON f.frame_id = sf.frame_id"
    " LEFT JOIN modules m ON m.module_id = f.module_id"
    " WHERE sf.stack_id IN (SELECT stack_id FROM stack_stats {where})"
    " ORDER BY sf.stack_id, sf.pos)"
    " GROUP BY stack_id")


def stack_keys(trace, where=""):
    """{stack_id: key} for the stacks of stack_stats rows matching `where`."""
    keys = {sid: key for sid, key in trace.query(STACK_KEYS_SQL.format(where=where))}
    keys[0] = ""
    return keys
