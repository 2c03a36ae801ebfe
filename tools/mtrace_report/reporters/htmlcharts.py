"""The HTML report's three charts (heap over time, allocation sizes, fragmentation) drawn
with svgchart, so `html` never imports matplotlib. They show what charts.py's matplotlib
figures show (same series, axes, titles, peak and marks), sharing its titles, process
choice and byte unit so the two cannot drift apart."""
from ..db import NS_PER_S
from .charts import HIST_TITLE_ALL, busiest_processes, bytes_axis
from .svgchart import Mark, Panel, Peak, Series, bar_chart, line_chart

HIST_COLORS = ("#4878a8", "#a86448")   # the matplotlib histogram's colours
WORST_COLOR = "#d62728"
OVERHEAD_COLOR = "#808080"


def _seconds(points):
    return [pt["ts_ns"] / NS_PER_S for pt in points]


def timeline_svg(r):
    procs, note = busiest_processes(r["processes"], lambda p: p["peak"]["bytes"])
    every = [pt[k] or 0 for p in procs for pt in p["points"]
             for k in ("requested", "in_use", "mapped")] + [p["peak"]["bytes"] for p in procs]
    scale, unit = bytes_axis(None, every)
    series, marks, peaks = [], [], []
    for p in procs:
        t = _seconds(p["points"])
        tag = f" (pid {p['pid']})" if len(procs) > 1 else ""
        for key, name in (("requested", "requested"), ("in_use", "in use"), ("mapped", "mapped")):
            series.append(Series(name + tag, t, [(pt[key] or 0) / scale for pt in p["points"]]))
        pk = p["peak"]
        if pk["ns"] is not None and pk["in_window"]:
            peaks.append(Peak(pk["ns"] / NS_PER_S, pk["bytes"] / scale, f"peak {pk['bytes']} B{tag}"))
        marks += [Mark(m["ts_ns"] / NS_PER_S, m["label"]) for m in p["marks"]]
    return line_chart("Heap over time" + note, "time (s)", f"heap ({unit})", series,
                      peaks=peaks, marks=marks)


def frag_svg(r):
    procs, note = busiest_processes(r["processes"],
                           lambda p: (p["worst"]["mapped"] or 0) - (p["worst"]["requested"] or 0))
    series, marks = [], []
    for p in procs:
        t = _seconds(p["points"])
        tag = f" (pid {p['pid']})" if len(procs) > 1 else ""
        series.append(Series("external" + tag, t, [100 * (pt["external"] or 0) for pt in p["points"]]))
        series.append(Series("internal" + tag, t, [100 * (pt["internal"] or 0) for pt in p["points"]]))
        series.append(Series("overhead" + tag, t, [pt["overhead"] for pt in p["points"]],
                             color=OVERHEAD_COLOR, dashed=True, right=True))
        w = p["worst"]
        marks.append(Mark(w["ts_ns"] / NS_PER_S, "worst" + tag, color=WORST_COLOR, dotted=False,
                          label_y=100 * (w["external"] or 0)))
    return line_chart("Heap fragmentation over time" + note, "time (s)", "fragmentation (%)",
                      series, right_label="overhead (mapped / requested)", y_max=100,
                      marks=marks)


def hist_svg(h):
    labels = [str(b["lo"]) if b["lo"] == b["hi"] else f"{b['lo']}-{b['hi']}" for b in h["buckets"]]
    classes = [str(c["block_size"]) if c["small"] else f"<={c['block_size']}" for c in h["classes"]]
    title = HIST_TITLE_ALL if h["kind"] == "allocations" else \
        f"Live blocks at {h['at_ns'] / NS_PER_S:.3f} s"
    return bar_chart(title, [
        Panel("requested size (bytes, power-of-two buckets)", "blocks", labels,
              [b["count"] for b in h["buckets"]], HIST_COLORS[0]),
        Panel("allocator size class (bytes)", "blocks", classes,
              [c["count"] for c in h["classes"]], HIST_COLORS[1])])
