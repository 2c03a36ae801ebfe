"""Symbolized call stacks: frames of the stacks a report shows, and the key that matches a
stack across traces (stack ids differ between recordings, symbols do not).

A frame is a dict: function, file, line, module (path), offset, inlined. Frames come
innermost first (pos 0 = the function that called malloc).

Formats 1-2 store every frame of every stack in the table stack_frames; format 3 stores a
prefix trie (stack_nodes), walked here from each wanted stack's innermost node up, inside
SQLite. Its stack_frames view would walk every stack of the trace before filtering: too
slow for a report on a big trace.
"""
import os

from ..db import basename, in_list

# Stacks fetched per query: keeps the IN list well under SQLite's expression limits.
STACK_BATCH = 500
# Frames shown by default in text reports (--full shows them all).
DEFAULT_FRAMES = 4


# (stack_id, pos, frame_id) of the stacks whose stack_id is IN the SQL `{ids}`, format 3.
TRIE_FRAMES_SQL = (
    "(WITH RECURSIVE walk(stack_id, pos, parent_id, frame_id) AS ("
    " SELECT s.stack_id, 0, n.parent_id, n.frame_id FROM stacks s"
    " JOIN stack_nodes n ON n.node_id = s.node_id WHERE s.stack_id IN {ids}"
    " UNION ALL SELECT w.stack_id, w.pos + 1, n.parent_id, n.frame_id FROM walk w"
    " JOIN stack_nodes n ON n.node_id = w.parent_id)"
    " SELECT stack_id, pos, frame_id FROM walk)")
TRIE_FORMAT = 3


def stack_frames_sql(trace, ids):
    """A table expression (stack_id, pos, frame_id) over the stacks whose ids are IN the SQL
    `ids` (a parenthesised list or subquery), whichever format the trace has."""
    if trace.version >= TRIE_FORMAT:
        return TRIE_FRAMES_SQL.format(ids=ids)
    return f"(SELECT stack_id, pos, frame_id FROM stack_frames WHERE stack_id IN {ids})"


def frames_of(trace, stack_ids):
    """{stack_id: [frame, ...]} for the given stacks (missing or 0: empty list). Frame dicts
    are shared between stacks (one per frame_id per trace): many stacks, few frames."""
    out = {s: [] for s in stack_ids}
    # Reports ask for the same stacks again (once per process that allocated there): each is
    # read once per trace. Without this, gate on report_bench's trace (64000 leaking stacks
    # of 4 processes) took 2.3 s on format 3, where walking the trie costs more per frame
    # than reading format 2's stack_frames rows (1.6 s); now 0.8 s.
    stacks = trace.__dict__.setdefault("stack_cache", {})
    wanted = {int(s) for s in stack_ids if s}
    ids = sorted(wanted - stacks.keys())
    cache = trace.__dict__.setdefault("frame_cache", {})
    for i in range(0, len(ids), STACK_BATCH):
        batch = ids[i:i + STACK_BATCH]
        rows = trace.query(
            "SELECT sf.stack_id, f.frame_id, f.function, f.file, f.line, m.path, f.offset, "
            f"f.inlined FROM {stack_frames_sql(trace, in_list(batch))} sf "
            "JOIN frames f ON f.frame_id = sf.frame_id "
            "LEFT JOIN modules m ON m.module_id = f.module_id ORDER BY sf.stack_id, sf.pos")
        for sid, fid, function, file, line, module, offset, inlined in rows:
            frame = cache.get(fid)
            if frame is None:
                frame = cache[fid] = dict(function=function, file=file, line=line,
                                          module=module, offset=offset, inlined=bool(inlined))
            stacks.setdefault(sid, []).append(frame)
    for sid in wanted:
        if sid in stacks:
            out[sid] = list(stacks[sid])  # a copy: callers may trim theirs
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
    " FROM {frames} sf JOIN frames f ON f.frame_id = sf.frame_id"
    " LEFT JOIN modules m ON m.module_id = f.module_id"
    " ORDER BY sf.stack_id, sf.pos)"
    " GROUP BY stack_id")


# Format 3: the trie nodes the wanted stacks lie on, each once (UNION drops repeats).
TRIE_NODES_SQL = (
    "WITH RECURSIVE need(node_id) AS ("
    " SELECT node_id FROM stacks WHERE node_id IS NOT NULL AND stack_id IN {ids}"
    " UNION SELECT n.parent_id FROM need JOIN stack_nodes n ON n.node_id = need.node_id"
    " WHERE n.parent_id IS NOT NULL)"
    " SELECT n.node_id, n.parent_id, n.frame_id FROM need JOIN stack_nodes n ON n.node_id = need.node_id")
FRAME_KEYS_SQL = ("SELECT f.frame_id, f.function, f.offset, f.file, m.path FROM frames f"
                  " LEFT JOIN modules m ON m.module_id = f.module_id")


def _trie_stack_keys(trace, ids):
    """stack_keys of a format-3 trace: STACK_KEYS_SQL's key, built here from the trie.
    Each frame's key is made once and each node read once, where SQL would walk and sort
    every frame of every stack (9.6 s instead of 6 s for a diff of two g++ traces)."""
    frame_keys = {}
    for fid, function, offset, file, module in trace.query(FRAME_KEYS_SQL):
        name = function if function is not None else f"0x{offset or 0:x}"
        frame_keys[fid] = f"{name}|{basename(file) or ''}|{basename(module) or ''}"
    nodes = {nid: (parent, frame_keys.get(fid, "")) for nid, parent, fid in
             trace.query(TRIE_NODES_SQL.format(ids=ids))}
    keys = {}
    for sid, node in trace.query(f"SELECT stack_id, node_id FROM stacks WHERE stack_id IN {ids}"):
        parts = []
        while node is not None:
            node, key = nodes[node]
            parts.append(key)
        if parts:
            keys[sid] = "\n".join(parts)
    return keys


def stack_keys(trace, where=""):
    """{stack_id: key} for the stacks of stack_stats rows matching `where`."""
    ids = f"(SELECT stack_id FROM stack_stats {where})"
    if trace.version >= TRIE_FORMAT:
        keys = _trie_stack_keys(trace, ids)
    else:
        sql = STACK_KEYS_SQL.format(frames=stack_frames_sql(trace, ids))
        keys = {sid: key for sid, key in trace.query(sql)}
    keys[0] = ""
    return keys
