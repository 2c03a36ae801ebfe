"""Charts (PNG or SVG) with matplotlib's Agg backend: no display needed.

matplotlib is imported only when a chart is asked for, so every text report works
without it. SVG text stays text (svg.fonttype none): the axis labels are searchable, and
the HTML report can inline the SVG.
"""
import io
import re

from ..db import NS_PER_S
from ..errors import ReportError

FIG_SIZE = (9, 4.5)     # inches: readable in a browser and on a slide
DPI = 100
MIB = 1024 * 1024
HIST_TITLE_ALL = "Requested sizes, all allocations"
# Processes drawn in one time chart: more lines than this cannot be told apart.
MAX_CHART_PROCESSES = 8


def busiest_processes(processes, weight):
    """The processes worth drawing, and a title suffix saying how many were left out."""
    if len(processes) <= MAX_CHART_PROCESSES:
        return processes, ""
    chosen = sorted(processes, key=weight, reverse=True)[:MAX_CHART_PROCESSES]
    return chosen, f" ({MAX_CHART_PROCESSES} of {len(processes)} processes)"


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        matplotlib.rcParams["svg.fonttype"] = "none"
        matplotlib.rcParams["svg.hashsalt"] = "mtrace"   # stable ids: reproducible files
        import matplotlib.pyplot as plt
    except ImportError:
        import sys
        raise ReportError(f"charts need matplotlib, which {sys.executable} cannot import",
                          "apt-get install python3-matplotlib")
    return plt


def available():
    try:
        _pyplot()
        return True
    except ReportError:
        return False


def bytes_axis(ax, values):
    top = max([v for v in values if v] or [0])
    if top >= MIB:
        return MIB, "MiB"
    if top >= 1024:
        return 1024, "KiB"
    return 1, "bytes"


def hist_figure(h):
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(FIG_SIZE[0] * 1.3, FIG_SIZE[1]), dpi=DPI)
    labels = [str(b["lo"]) if b["lo"] == b["hi"] else f"{b['lo']}-{b['hi']}" for b in h["buckets"]]
    ax1.bar(range(len(labels)), [b["count"] for b in h["buckets"]], color="#4878a8")
    ax1.set_xticks(range(len(labels)))
    ax1.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax1.set_xlabel("requested size (bytes, power-of-two buckets)")
    ax1.set_ylabel("blocks")
    cl = [str(c["block_size"]) if c["small"] else f"<={c['block_size']}" for c in h["classes"]]
    ax2.bar(range(len(cl)), [c["count"] for c in h["classes"]], color="#a86448")
    ax2.set_xticks(range(len(cl)))
    ax2.set_xticklabels(cl, rotation=60, ha="right", fontsize=7)
    ax2.set_xlabel("allocator size class (bytes)")
    ax2.set_ylabel("blocks")
    from matplotlib.ticker import MaxNLocator
    for ax in (ax1, ax2):
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))   # blocks are whole
    title = HIST_TITLE_ALL if h["kind"] == "allocations" else \
        f"Live blocks at {h['at_ns'] / NS_PER_S:.3f} s"
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def frag_figure(r):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=DPI)
    ax2 = ax.twinx()
    procs, note = busiest_processes(r["processes"],
                           lambda p: (p["worst"]["mapped"] or 0) - (p["worst"]["requested"] or 0))
    for p in procs:
        t = [pt["ts_ns"] / NS_PER_S for pt in p["points"]]
        tag = f" (pid {p['pid']})" if len(procs) > 1 else ""
        ax.plot(t, [100 * (pt["external"] or 0) for pt in p["points"]], label="external" + tag,
                drawstyle="steps-post")
        ax.plot(t, [100 * (pt["internal"] or 0) for pt in p["points"]], label="internal" + tag,
                drawstyle="steps-post")
        ax2.plot(t, [pt["overhead"] if pt["overhead"] is not None else float("nan")
                     for pt in p["points"]], linestyle="--", color="gray",
                 label="overhead" + tag, drawstyle="steps-post")
        w = p["worst"]
        ax.axvline(w["ts_ns"] / NS_PER_S, color="red", linewidth=0.8)
        ax.annotate("worst", (w["ts_ns"] / NS_PER_S, 100 * (w["external"] or 0)),
                    color="red", fontsize=8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("fragmentation (%)")
    ax2.set_ylabel("overhead (mapped / requested)")
    ax.set_ylim(0, 100)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper left")
    ax.set_title("Heap fragmentation over time" + note)
    fig.tight_layout()
    return fig


def timeline_figure(r):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=DPI)
    procs, note = busiest_processes(r["processes"], lambda p: p["peak"]["bytes"])
    every = [pt[k] or 0 for p in procs for pt in p["points"]
             for k in ("requested", "in_use", "mapped")] + [p["peak"]["bytes"] for p in procs]
    scale, unit = bytes_axis(ax, every)
    for p in procs:
        t = [pt["ts_ns"] / NS_PER_S for pt in p["points"]]
        tag = f" (pid {p['pid']})" if len(procs) > 1 else ""
        # a snapshot's values hold until the next one: steps, not slopes
        for key, name in (("requested", "requested"), ("in_use", "in use"), ("mapped", "mapped")):
            ax.plot(t, [(pt[key] or 0) / scale for pt in p["points"]], label=name + tag,
                    drawstyle="steps-post")
        pk = p["peak"]
        if pk["ns"] is not None and pk["in_window"]:
            x, y = pk["ns"] / NS_PER_S, pk["bytes"] / scale
            ax.plot([x], [y], marker="v", color="red")
            ax.annotate(f"peak {pk['bytes']} B", (x, y), textcoords="offset points",
                        xytext=(4, 6), color="red", fontsize=8)
        for m in p["marks"]:
            x = m["ts_ns"] / NS_PER_S
            ax.axvline(x, color="gray", linestyle=":", linewidth=0.8)
            ax.annotate(m["label"], (x, 0), rotation=90, fontsize=7, color="dimgray",
                        xytext=(2, 4), textcoords="offset points")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"heap ({unit})")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Heap over time" + note)
    fig.tight_layout()
    return fig


def save(fig, path, fmt):
    plt = _pyplot()
    try:
        fig.savefig(path, format=fmt, metadata=_metadata(fmt))
    except OSError as e:
        raise ReportError(f"cannot write {path}: {e.strerror}", "check the output path")
    finally:
        plt.close(fig)


def _metadata(fmt):
    # No dates or creator URLs: the same trace gives the same file.
    return {"Date": None} if fmt == "svg" else {"Software": None}


def inline_svg(fig):
    """The figure as an <svg> element for embedding in HTML: no XML prolog, no DOCTYPE, no
    metadata and no namespace URLs (inline SVG in HTML needs none, and the report must
    reference nothing outside itself)."""
    plt = _pyplot()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    return svg
