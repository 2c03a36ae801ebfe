"""Text reports for a terminal: one render_* per analysis, each returning a string.

Bars and sparklines use Unicode block characters when the output encoding can show them
and ASCII otherwise (a CI log may be plain ASCII)."""
import os
import sys

from ..analysis.stacks import DEFAULT_FRAMES, frame_text
from ..db import NS_PER_S

BAR_WIDTH = 40
SPARK_WIDTH = 60
BAR_EIGHTHS = " ▏▎▍▌▋▊▉█"
SPARK_LEVELS = "▁▂▃▄▅▆▇█"
ASCII_SPARK = "_.-=+*#@"
KIB = 1024
NS_PER_US = 1000
NS_PER_MS = 1000 * NS_PER_US


def unicode_ok(stream=None):
    stream = stream or sys.stdout
    enc = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    return enc in ("utf8", "utf_8")


def human_bytes(n):
    if n is None:
        return "-"
    n = int(n)
    sign = "-" if n < 0 else ""
    v = abs(n)
    if v < KIB:
        return f"{sign}{v} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        v /= KIB
        if v < KIB or unit == "TiB":
            return f"{sign}{v:.1f} {unit}"
    return f"{sign}{v} B"


def seconds(ns):
    """Seconds since the trace started, with a unit that keeps 3-4 significant digits."""
    if ns is None:
        return "-"
    if abs(ns) < NS_PER_MS:
        return f"{ns / NS_PER_US:.1f} us"
    if abs(ns) < NS_PER_S:
        return f"{ns / NS_PER_MS:.2f} ms"
    return f"{ns / NS_PER_S:.3f} s"


def percent(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def bar(value, maximum, width=BAR_WIDTH, fancy=None):
    if fancy is None:
        fancy = unicode_ok()
    if not maximum or not value:
        return ""
    cells = value / maximum * width
    if not fancy:
        return "#" * max(1, int(round(cells)))
    full = int(cells)
    rest = int((cells - full) * 8)
    text = BAR_EIGHTHS[8] * full + (BAR_EIGHTHS[rest] if rest else "")
    return text or BAR_EIGHTHS[1]


def sparkline(values, width=SPARK_WIDTH, fancy=None):
    """Values resampled to `width` columns (max of each slice), drawn with 8 levels."""
    if fancy is None:
        fancy = unicode_ok()
    levels = SPARK_LEVELS if fancy else ASCII_SPARK
    values = [v or 0 for v in values]
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [max(values[int(i * step):max(int(i * step) + 1, int((i + 1) * step))])
                  for i in range(width)]
    top = max(values)
    if top <= 0:
        return levels[0] * len(values)
    return "".join(levels[min(len(levels) - 1, int(v / top * (len(levels) - 1) + 0.5))]
                   for v in values)


def table(rows, headers, align=None):
    """Columns padded to the widest cell; align: string of 'l'/'r' per column."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)
    lines = []
    for r in cells:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)]
        lines.append("  ".join(parts).rstrip())
    return lines


def stack_lines(frames, full=False, indent="    "):
    if not frames:
        return [indent + "(no stack)"]
    shown = frames if full else frames[:DEFAULT_FRAMES]
    lines = [f"{indent}{'#' + str(i):>3} {frame_text(f)}" for i, f in enumerate(shown)]
    if len(frames) > len(shown):
        lines.append(f"{indent}    … {len(frames) - len(shown)} more frames (--full)")
    return lines


# ---- summary ------------------------------------------------------------------------------
def render_summary(s):
    out = [f"trace {s['trace']}" + ("" if s["complete"] else "  (INCOMPLETE)")]
    if s.get("command"):
        out.append("command: " + " ".join(str(a) for a in s["command"]))
    out.append(f"duration {seconds(s['duration_ns'])}, {s['events']} events, "
               f"{s['dropped']} dropped")
    out.append("")
    rows = []
    for p in s["processes"]:
        rows.append((p["proc_id"], p["pid"], " ".join(str(a) for a in p["argv"])[:50], end_text(p),
                     seconds(p["duration_ns"]), p["events"], human_bytes(p["peak_bytes"]),
                     seconds(p["peak_ns"])))
    out += table(rows, ("proc", "pid", "argv", "end", "duration", "events", "peak", "peak at"),
                 "rrllrrrr")
    out.append("")
    rows = [(o["name"], o["calls"], human_bytes(o["bytes"])) for o in s["operations"]]
    out += table(rows, ("operation", "calls", "requested"))
    out.append("")
    pk = s["peak"]
    out.append(f"allocations: {s['allocations']} ({human_bytes(s['bytes_allocated'])} requested)")
    out.append(f"peak heap: {human_bytes(pk['bytes'])} at {seconds(pk['ns'])} (pid {pk['pid']})")
    out.append(f"dropped events: {s['dropped']}")
    if s.get("unrecorded"):
        out.append(f"unrecorded calls (recorder busy on the same thread): {s['unrecorded']}")
    if s["errors"]:
        out.append("heap errors: " + ", ".join(f"{e['count']} {e['kind']}" for e in s["errors"]))
    else:
        out.append("heap errors: none")
    out.append(leak_line(s["leaks"]))
    return "\n".join(out) + "\n"


def end_text(p):
    """How a process ended: `exit 0`, `signal 9`, `exec`, `lost`, or `running`."""
    if p.get("exit_signal"):
        return f"signal {p['exit_signal']}"
    if p.get("exit_code") is not None:
        return f"exit {p['exit_code']}"
    return p.get("end_reason") or "running"


def leak_line(t):
    text = (f"leaks: {t['leaked_bytes']} bytes in {t['leaked_blocks']} blocks"
            f" ({human_bytes(t['leaked_bytes'])})")
    if "leak_stacks" in t:
        text += f" from {t['leak_stacks']} stacks"
    text += f"; still reachable {t['reachable_bytes']} bytes in {t['reachable_blocks']} blocks"
    if t.get("unknown_blocks"):
        text += (f"; not classified {t['unknown_bytes']} bytes in {t['unknown_blocks']} blocks "
                 "(no leak scan)")
    return text


# ---- leaks --------------------------------------------------------------------------------
def render_leaks(r, full=False, labels=None):
    out = []
    quiet = 0
    for p in r["processes"]:
        mine = [g for g in r["stacks"] if g["proc_id"] == p["proc_id"]]
        if not mine and len(r["processes"]) > 1:
            quiet += 1      # `make check` traces hundreds of processes: list only the leaky
            continue
        label = (labels or {}).get(p["proc_id"], f"pid {p['pid']}")
        head = f"== {label}: " + leak_line(p)
        if not p["leak_scan"]:
            head += f" [no leak scan: {p['end_reason'] or 'process did not exit normally'}]"
        out.append(head)
        for g in mine:
            parts = []
            if g["leaked_blocks"]:
                parts.append(f"{g['leaked_bytes']} bytes in {g['leaked_blocks']} blocks leaked")
            if g["unknown_blocks"]:
                parts.append(f"{g['unknown_bytes']} bytes in {g['unknown_blocks']} blocks "
                             "live at exit (not classified)")
            if r["show_reachable"] and g["reachable_blocks"]:
                parts.append(f"{g['reachable_bytes']} bytes in {g['reachable_blocks']} blocks "
                             "still reachable")
            out.append(f"  {'; '.join(parts)} (stack {g['stack_id']})")
            out += stack_lines(g["frames"], full)
        if p["listed_stacks"] > len(mine):
            out.append(f"  … {p['listed_stacks'] - len(mine)} more stacks (--limit 0 shows all)")
        out.append("")
    if quiet:
        out.append(f"{quiet} other processes: nothing to list")
        out.append("")
    out.append("total: " + leak_line(r["totals"]))
    return "\n".join(out) + "\n"


# ---- hist ---------------------------------------------------------------------------------
def _range_text(lo, hi):
    return str(lo) if lo == hi else f"{lo}-{hi}"


def render_hist(h):
    if h["kind"] == "live":
        src = ("replayed events" if h["source"] == "events" else "snapshot" +
               "".join(f" [pid {s['proc_id']}: {seconds(s['ts_ns'])}]" for s in h["snapshots"]))
        title = f"live blocks at {seconds(h['at_ns'])} (from {src})"
    else:
        title = "all allocations"
    out = [f"{title}: {h['total_count']} blocks, {human_bytes(h['total_bytes'])} requested"]
    if h["kind"] == "allocations":
        out.append(f"live at exit: {h['live_at_exit_count']} blocks, "
                   f"{human_bytes(h['live_at_exit_bytes'])}")
    out.append("")
    out.append("by requested size (power-of-two buckets):")
    top = max((b["count"] for b in h["buckets"]), default=0)
    rows = [(_range_text(b["lo"], b["hi"]), b["count"], human_bytes(b["bytes"]),
             bar(b["count"], top)) for b in h["buckets"]]
    out += table(rows, ("size", "blocks", "bytes", ""), "rrrl")
    out.append("")
    out.append("by allocator size class" + (" (block bytes)" if h["kind"] == "live" and
                                            h["source"] == "snapshot" else "") + ":")
    top = max((c["count"] for c in h["classes"]), default=0)
    rows = []
    for c in h["classes"]:
        name = str(c["block_size"]) if c["small"] else f"≤{c['block_size']}" if unicode_ok() \
            else f"<={c['block_size']}"
        cap = c.get("capacity")
        use = f"{c['count']}/{cap}" if cap else ""
        rows.append((name, c["count"], human_bytes(c["bytes"]), use, bar(c["count"], top)))
    out += table(rows, ("class", "blocks", "bytes", "slots", ""), "rrrrl")
    return "\n".join(out) + "\n"


# ---- frag ---------------------------------------------------------------------------------
def _moment(m):
    over = "-" if m["overhead"] is None else f"{m['overhead']:.2f}x"
    return (f"at {seconds(m['ts_ns'])}: requested {human_bytes(m['requested'])}, in use "
            f"{human_bytes(m['in_use'])}, mapped {human_bytes(m['mapped'])}, free "
            f"{human_bytes(m['free_bytes'])} (largest {human_bytes(m['largest_free'])}); "
            f"external {percent(m['external'])}, internal {percent(m['internal'])}, "
            f"overhead {over}")


def render_frag(r):
    out = []
    if not r["processes"]:
        return "no snapshots in the selection\n"
    for p in r["processes"]:
        out.append(f"== {p['label']}")
        w = p["worst"]
        out.append(f"worst moment (most memory held beyond requests: "
                   f"{human_bytes((w['mapped'] or 0) - (w['requested'] or 0))}) {_moment(w)}")
        out.append(f"highest external: {percent(p['max_external']['external'])} "
                   f"at {seconds(p['max_external']['ts_ns'])}")
        out.append(f"highest internal: {percent(p['max_internal']['internal'])} "
                   f"at {seconds(p['max_internal']['ts_ns'])}")
        mo = p["max_overhead"]
        out.append(f"highest overhead: "
                   f"{'-' if mo['overhead'] is None else format(mo['overhead'], '.2f') + 'x'} "
                   f"at {seconds(mo['ts_ns'])}")
        out.append(f"at the end {_moment(p['last'])}")
        out.append(f"external  {sparkline([pt['external'] for pt in p['points']])}")
        out.append(f"internal  {sparkline([pt['internal'] for pt in p['points']])}")
        out.append("")
    return "\n".join(out)


# ---- timeline -----------------------------------------------------------------------------
def render_timeline(r):
    out = []
    for p in r["processes"]:
        out.append(f"== {p['label']}")
        pts = p["points"]
        if pts:
            out.append(f"{seconds(pts[0]['ts_ns'])} .. {seconds(pts[-1]['ts_ns'])}, "
                       f"{len(pts)} points")
            for name in ("requested", "in_use", "mapped"):
                top = max(pt[name] or 0 for pt in pts)
                out.append(f"{name:<9} {sparkline([pt[name] for pt in pts])}  "
                           f"max {human_bytes(top)}")
        else:
            out.append("no snapshots in the selection")
        pk = p["peak"]
        out.append(f"peak {human_bytes(pk['bytes'])} ({pk['bytes']} bytes requested) "
                   f"at {seconds(pk['ns'])}" + ("" if pk["in_window"] else " (outside the window)"))
        for m in p["marks"]:
            out.append(f"mark {seconds(m['ts_ns'])} {m['label']!r}: heap "
                       f"{human_bytes(m['requested'])}")
        out.append("")
    return "\n".join(out)


# ---- top ----------------------------------------------------------------------------------
def render_top(r, full=False):
    key = {"calls": "allocs", "bytes": "alloc_bytes", "peak": "at_peak_bytes",
           "temporary": "temporary"}[r["by"]]
    total = r["totals"][r["by"]]
    shown_total = total if r["by"] in ("calls", "temporary") else human_bytes(total)
    head = f"top allocation sites by {r['by']} (total {shown_total})"
    if r.get("window"):
        lo, hi = r["window"]
        head += f", allocations from {seconds(lo or 0)} to {seconds(hi) if hi is not None else 'the end'}"
    out = [head]
    for i, s in enumerate(r["sites"], 1):
        share = f"{100 * s[key] / total:.1f}%" if total else "-"
        out.append(f"{i:>3}. {share:>6}  calls {s['allocs']}, {human_bytes(s['alloc_bytes'])}, "
                   f"at peak {human_bytes(s['at_peak_bytes'])}, temporary {s['temporary']}, "
                   f"sizes {s['min_size']}-{s['max_size']} (stack {s['stack_id']})")
        out += stack_lines(s["frames"], full, indent="       ")
    if not r["sites"]:
        out.append("  (none)")
    return "\n".join(out) + "\n"


# ---- diff ---------------------------------------------------------------------------------
def render_diff(d, full=False):
    ta, tb = d["totals"]["a"], d["totals"]["b"]
    out = [f"a: {d['a']}", f"b: {d['b']}",
           f"allocated {human_bytes(ta['alloc_bytes'])} -> {human_bytes(tb['alloc_bytes'])}, "
           f"leaked {ta['leaked_bytes']} -> {tb['leaked_bytes']} bytes "
           f"({ta['leaked_blocks']} -> {tb['leaked_blocks']} blocks)", ""]
    sections = (
        ("new leak stacks", "new_leaks",
         lambda e: f"{e['b']['leaked_bytes']} bytes in {e['b']['leaked_blocks']} blocks"),
        ("leaks that grew", "grown_leaks",
         lambda e: f"{e['a']['leaked_bytes']} -> {e['b']['leaked_bytes']} bytes leaked"),
        ("leaks fixed", "fixed_leaks",
         lambda e: f"{e['a']['leaked_bytes']} bytes in {e['a']['leaked_blocks']} blocks no more"),
        ("allocations that grew", "grew",
         lambda e: f"{human_bytes(e['a']['alloc_bytes'])} -> {human_bytes(e['b']['alloc_bytes'])}"
                   f" ({e['a']['allocs']} -> {e['b']['allocs']} calls)" +
                   ("" if e["in_a"] else " [new stack]")),
        ("allocations that shrank", "shrank",
         lambda e: f"{human_bytes(e['a']['alloc_bytes'])} -> {human_bytes(e['b']['alloc_bytes'])}"),
        ("stacks that disappeared", "disappeared",
         lambda e: f"{human_bytes(e['a']['alloc_bytes'])} in {e['a']['allocs']} calls"),
    )
    for title, key, describe in sections:
        n = d["counts"][key]
        out.append(f"{title}: {n}")
        for e in d[key]:
            out.append(f"  {describe(e)}")
            out += stack_lines(e.get("frames") or [], full)
        if n > len(d[key]):
            out.append(f"  … {n - len(d[key])} more (--limit 0 shows all)")
        out.append("")
    return "\n".join(out)


# ---- gate ---------------------------------------------------------------------------------
def render_gate(g, full=False):
    out = []
    for c in g["checks"]:
        mark = "ok  " if c["passed"] else "FAIL"
        out.append(f"{mark} {c['name']}: {c['value']} (limit {c['limit']})")
    cnt = g["counted"]
    out.append(f"counted: {cnt['bytes']} bytes in {cnt['blocks']} blocks from {cnt['stacks']} "
               f"stacks; suppressed {g['suppressed']['stacks']} stacks; "
               f"in baseline {g['baselined']['stacks']} stacks")
    if g["unclassified"]["blocks"] and not g["count_unknown"]:
        out.append(f"note: {g['unclassified']['blocks']} blocks ({g['unclassified']['bytes']} "
                   "bytes) live at exit were not classified (no leak scan) and are not counted; "
                   "--count-unknown counts them")
    if g["offending"]:
        out.append("")
        out.append("offending stacks:")
        for e in g["offending"]:
            out.append(f"  {e['bytes']} bytes in {e['blocks']} blocks, pid {e['pid']} "
                       f"(stack {e['stack_id']})")
            out += stack_lines(e["frames"], full)
        if g["offending_stacks"] > len(g["offending"]):
            out.append(f"  … {g['offending_stacks'] - len(g['offending'])} more stacks "
                       "(--limit 0 lists all)")
    for e in g["errors"]:
        out.append(f"  heap error: {e['kind']} of 0x{e['ptr'] or 0:x} in {e['function']} "
                   f"at {seconds(e['ts_ns'])}")
        out += stack_lines(e["frames"], full, indent="      ")
    unused = [s for s in g["suppressions"] if not s["stacks"]]
    if unused:
        out.append(f"unused suppressions: {', '.join(s['name'] for s in unused)}")
    out.append("")
    out.append("gate: PASSED" if g["passed"] else "gate: FAILED")
    return "\n".join(out) + "\n"


def write(text, stream=None):
    stream = stream or sys.stdout
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        # `mtrace-report leaks t.db | head`: stop quietly, like other Unix tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
