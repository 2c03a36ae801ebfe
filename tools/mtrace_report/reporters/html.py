"""One self-contained HTML file with every report of a trace: inline CSS, charts as inline
SVG, no scripts and no reference to anything outside the file, so it reads offline and
can be attached to a CI run."""
import html

from ..analysis.stacks import frame_text
from . import text as textrep

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { padding: 0.2em 0.7em; border-bottom: 1px solid #eee; text-align: right; }
td.l, th.l { text-align: left; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
details { margin: 0.3em 0; } summary { cursor: pointer; }
.warn { color: #a00; font-weight: bold; } .chart svg { max-width: 100%; height: auto; }
ol.stack { font-family: monospace; font-size: 0.85em; margin: 0.2em 0 0.6em 0; }
"""


def esc(value):
    return html.escape("" if value is None else str(value))


def _table(headers, rows, left=(0,)):
    out = ["<table><tr>"]
    out += [f"<th class='{'l' if i in left else ''}'>{esc(h)}</th>" for i, h in enumerate(headers)]
    out.append("</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td class='{'l' if i in left else ''}'>{esc(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _stack(frames):
    if not frames:
        return "<ol class='stack'><li>(no stack)</li></ol>"
    return "<ol class='stack' start='0'>" + "".join(
        f"<li>{esc(frame_text(f))}</li>" for f in frames) + "</ol>"


def _summary(s):
    hb = textrep.human_bytes
    out = [f"<p>{esc(' '.join(str(a) for a in s.get('command') or []))}<br>"
           f"duration {esc(textrep.seconds(s['duration_ns']))}, {s['events']} events, "
           f"{s['dropped']} dropped</p>"]
    if not s["complete"]:
        out.append("<p class='warn'>This trace is incomplete (still being recorded, or the "
                   "recorder died).</p>")
    out.append(_table(("proc", "pid", "argv", "exit", "duration", "events", "peak", "peak at"),
                      [(p["proc_id"], p["pid"], " ".join(str(a) for a in p["argv"]),
                        textrep.end_text(p),
                        textrep.seconds(p["duration_ns"]), p["events"], hb(p["peak_bytes"]),
                        textrep.seconds(p["peak_ns"])) for p in s["processes"]], left=(2,)))
    out.append(_table(("operation", "calls", "requested"),
                      [(o["name"], o["calls"], hb(o["bytes"])) for o in s["operations"]]))
    errs = ", ".join(f"{e['count']} {e['kind']}" for e in s["errors"]) or "none"
    out.append(f"<p>peak heap {esc(hb(s['peak']['bytes']))} at "
               f"{esc(textrep.seconds(s['peak']['ns']))}; heap errors: {esc(errs)}<br>"
               f"{esc(textrep.leak_line(s['leaks']))}</p>")
    return "".join(out)


def _leaks(r):
    if not r["stacks"]:
        return "<p>No leaks.</p>"
    out = [f"<p>{esc(textrep.leak_line(r['totals']))}</p>"]
    for g in r["stacks"]:
        parts = []
        if g["leaked_blocks"]:
            parts.append(f"{g['leaked_bytes']} bytes in {g['leaked_blocks']} blocks leaked")
        if g["unknown_blocks"]:
            parts.append(f"{g['unknown_bytes']} bytes in {g['unknown_blocks']} blocks not classified")
        if g["reachable_blocks"] and r["show_reachable"]:
            parts.append(f"{g['reachable_bytes']} bytes in {g['reachable_blocks']} blocks reachable")
        top = esc(frame_text(g["frames"][0])) if g["frames"] else "(no stack)"
        out.append(f"<details><summary>pid {g['pid']}: {esc('; '.join(parts))} — {top}</summary>"
                   f"{_stack(g['frames'])}</details>")
    for p in r["processes"]:
        more = p["listed_stacks"] - sum(1 for g in r["stacks"] if g["proc_id"] == p["proc_id"])
        if more > 0:
            out.append(f"<p>… and {more} more stacks in pid {p['pid']} "
                       "(<code>mtrace-report leaks --limit 0</code> lists all).</p>")
    return "".join(out)


def _site(frames):
    """A stack in one table cell: the innermost frames, the whole stack when opened."""
    if not frames:
        return "(no stack)"
    head = " ← ".join(frame_text(f) for f in frames[:2])
    return f"<details><summary>{esc(head)}</summary>{_stack(frames)}</details>"


def _top(r):
    hb = textrep.human_bytes
    out = ["<table><tr><th class='l'>site</th><th>calls</th><th>bytes</th><th>at peak</th>"
           "<th>temporary</th></tr>"]
    for s in r["sites"]:
        out.append(f"<tr><td class='l'>{_site(s['frames'])}</td><td>{s['allocs']}</td>"
                   f"<td>{esc(hb(s['alloc_bytes']))}</td><td>{esc(hb(s['at_peak_bytes']))}</td>"
                   f"<td>{s['temporary']}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _errors(errors):
    if not errors:
        return "<p>No heap errors.</p>"
    out = []
    for e in errors:
        out.append(f"<details><summary>pid {e['pid']}: {esc(e['kind'])} of 0x{e['ptr'] or 0:x}"
                   f" (size {esc(e['size'])}) in {esc(e['function'])} at "
                   f"{esc(textrep.seconds(e['ts_ns']))}</summary>")
        for title, key in (("detected at", "stack_frames"), ("allocated at", "alloc_stack_frames"),
                           ("freed at", "free_stack_frames")):
            if e.get(key):
                out.append(f"<p>{title}</p>{_stack(e[key])}")
        out.append("</details>")
    return "".join(out)


def _hist_table(h):
    hb = textrep.human_bytes
    rows = [(str(b["lo"]) if b["lo"] == b["hi"] else f"{b['lo']}-{b['hi']}", b["count"], hb(b["bytes"]))
            for b in h["buckets"]]
    cls = [(str(c["block_size"]) if c["small"] else f"≤{c['block_size']}", c["count"], hb(c["bytes"]))
           for c in h["classes"]]
    return (_table(("requested size", "blocks", "bytes"), rows) +
            _table(("size class", "blocks", "bytes"), cls))


def render_html(trace_path, summary, leaks, top_by, hist, frag, timeline, charts, errors=()):
    """charts: {"hist": svg, "frag": svg, "timeline": svg} (missing ones are left out)."""
    def chart(name):
        return f"<div class='chart'>{charts[name]}</div>" if charts.get(name) else ""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>mtrace report: {esc(trace_path)}</title><style>{STYLE}</style></head><body>",
        f"<h1>mtrace report: {esc(trace_path)}</h1>",
        "<h2 id='summary'>Summary</h2>", _summary(summary),
        "<h2 id='leaks'>Leaks</h2>", _leaks(leaks),
        "<h2 id='errors'>Heap errors</h2>", _errors(errors),
        "<h2 id='timeline'>Heap over time</h2>", chart("timeline"),
        f"<pre>{esc(textrep.render_timeline(timeline))}</pre>",
        "<h2 id='top'>Top allocation sites</h2>",
    ]
    for by, r in top_by.items():
        parts.append(f"<h3>by {esc(by)}</h3>{_top(r)}")
    parts += ["<h2 id='hist'>Allocation sizes</h2>", chart("hist"), _hist_table(hist),
              "<h2 id='frag'>Fragmentation</h2>", chart("frag"),
              f"<pre>{esc(textrep.render_frag(frag))}</pre>"]
    parts.append("</body></html>\n")
    return "".join(parts)
