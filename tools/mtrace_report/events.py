"""Streaming decoder of `event_chunks` (docs/trace-format.md, "Raw events") and the replay
of the live set it allows.

Only reports that need per-event data use this (hist --at --exact); the others read the
aggregate tables. Chunks are fetched one at a time through a cursor, and only those whose
[first_ns, last_ns] meets the requested window, so memory stays bounded by one chunk plus
what the caller keeps (the replay keeps the live blocks, never the events).

Invariant: decoding follows the doc exactly. Format 2: unsigned LEB128 varints, per event
head, time, pointer, size (not for free), stack, aux (not for malloc, calloc, free); the
time is a delta from the previous event of the chunk (the first from first_ns); the
pointer a difference from the previous event's pointer (the first from 0), stored as
zigzag(d / 16) * 2 when d is a multiple of 16, else zigzag(d) * 2 + 1; aux of realloc and
reallocarray is the old pointer as such a difference from the new one. Format 1: all six
fields always, pointer differences as plain zigzag.
"""
OP_MALLOC, OP_CALLOC, OP_REALLOC, OP_REALLOCARRAY = 1, 2, 3, 4
OP_FREE = 10
OP_REGION_PUSH, OP_REGION_POP = 11, 12
OPS_WITH_OLD_POINTER = (OP_REALLOC, OP_REALLOCARRAY)
# Format 2 stores only the fields an operation uses.
OPS_WITHOUT_SIZE = frozenset((OP_FREE,))
OPS_WITHOUT_AUX = frozenset((OP_MALLOC, OP_CALLOC, OP_FREE))
PTR_UNIT_SHIFT = 4
OP_NAMES = {1: "malloc", 2: "calloc", 3: "realloc", 4: "reallocarray", 5: "posix_memalign",
            6: "aligned_alloc", 7: "memalign", 8: "valloc", 9: "pvalloc", 10: "free",
            11: "region_push", 12: "region_pop"}
ALLOC_OPS = frozenset((1, 2, 3, 4, 5, 6, 7, 8, 9, 11))
OP_MASK = 0xF        # op in the low 4 bits of the first varint, thread_idx above
THREAD_SHIFT = 4
U64 = 1 << 64


class EventFormatError(ValueError):
    """A chunk that does not decode as the doc says (truncated or corrupt blob)."""


def varint_reader(data, what):
    """A function returning the next unsigned LEB128 value of `data` at each call; past the
    end of the data, EventFormatError naming `what` (a truncated or corrupt blob)."""
    pos, end = 0, len(data)

    def varint():
        nonlocal pos
        result = shift = 0
        while True:
            if pos >= end:
                raise EventFormatError(f"{what} ends inside a value")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
    return varint


def _unzigzag(z):
    return (z >> 1) ^ -(z & 1)


def _unptr(v):
    """A format-2 pointer difference: flag bit 0 clear means units of 16 bytes."""
    d = _unzigzag(v >> 1)
    return d if v & 1 else d << PTR_UNIT_SHIFT


def decode_chunk(data, count, first_ns, version=2):
    """Yield (op, thread_idx, ts_ns, ptr, size, stack_id, aux) for one chunk's blob; aux is
    the old pointer (0 for NULL) for realloc/reallocarray and the raw value otherwise."""
    varint = varint_reader(data, "event chunk")
    ts, ptr = first_ns, 0
    for _ in range(count):
        head = varint()
        op = head & OP_MASK
        ts += varint()
        if version >= 2:
            ptr = (ptr + _unptr(varint())) % U64
            size = 0 if op in OPS_WITHOUT_SIZE else varint()
            stack_id = varint()
            if op in OPS_WITH_OLD_POINTER:
                aux = (ptr + _unptr(varint())) % U64
            else:
                aux = 0 if op in OPS_WITHOUT_AUX else varint()
        else:
            ptr = (ptr + _unzigzag(varint())) % U64
            size, stack_id, aux = varint(), varint(), varint()
            if op in OPS_WITH_OLD_POINTER:
                aux = (ptr + _unzigzag(aux)) % U64
        yield op, head >> THREAD_SHIFT, ts, ptr, size, stack_id, aux


def iter_events(trace, proc_id, lo_ns=None, hi_ns=None, progress=None):
    """Events of one process in order, from the chunks that can hold times in [lo, hi]."""
    where = ["proc_id = ?"]
    params = [proc_id]
    if lo_ns is not None:
        where.append("last_ns >= ?")
        params.append(lo_ns)
    if hi_ns is not None:
        where.append("first_ns <= ?")
        params.append(hi_ns)
    cond = " AND ".join(where)
    # The chunk ids first (small), then each blob by id: an ORDER BY over the blobs
    # themselves could make SQLite sort hundreds of megabytes when no index covers it.
    ids = [r[0] for r in trace.query(
        f"SELECT chunk_id FROM event_chunks WHERE {cond} ORDER BY first_seq", params)]
    for done, chunk_id in enumerate(ids, 1):
        count, first_ns, data = trace.query(
            "SELECT count, first_ns, data FROM event_chunks WHERE chunk_id = ?",
            (chunk_id,)).fetchone()
        for event in decode_chunk(data, count, first_ns, getattr(trace, "version", 2)):
            yield event
        if progress:
            progress.update(done, len(ids))


def replay_live(trace, proc_ids, at_ns, progress=None):
    """The blocks live at time at_ns (inclusive) by replaying events from the start:
    returns {proc_id: {ptr: size}}. Memory grows with the live set, not the event count."""
    result = {}
    for proc_id in proc_ids:
        live = {}
        regions = {}
        for op, _thread, ts, ptr, size, _stack, aux in iter_events(
                trace, proc_id, None, at_ns, progress):
            if ts > at_ns:
                break
            if op == OP_FREE:
                live.pop(ptr, None)
            elif op in OPS_WITH_OLD_POINTER:
                if aux:
                    live.pop(aux, None)
                live[ptr] = size
            elif op == OP_REGION_PUSH:
                regions.setdefault(aux, []).append(ptr)
                live[ptr] = size
            elif op == OP_REGION_POP:
                pushes = regions.get(aux, [])
                # ptr is the region's address at its new position: every push at or above
                # it is gone. A recorder that wrote 0 leaves it to us: the region's earliest
                # live push is then its position 0 (docs/trace-format.md).
                if not ptr:
                    if not pushes:
                        continue
                    ptr = pushes[0] + size
                kept = []
                for q in pushes:
                    if q >= ptr:
                        live.pop(q, None)
                    else:
                        kept.append(q)
                regions[aux] = kept
            elif op in ALLOC_OPS:
                live[ptr] = size
        result[proc_id] = live
    return result

