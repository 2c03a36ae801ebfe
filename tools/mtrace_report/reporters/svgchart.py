"""A small SVG chart writer with no dependencies, for the HTML report: line or step charts
of time series (several series, an optional right-hand axis, a peak marker, vertical marks)
and bar charts (one or more panels side by side).

Why not matplotlib: importing it costs ~0.3 s and ~48 MiB, more than the whole `html`
report otherwise takes; the --png/--svg files of hist/frag/timeline still use it.

Invariants: the output is one <svg> element that parses as XML, carries no XML prolog, no
namespace URL, no id and no script, so several can be inlined in one HTML page that
references nothing outside itself; every user string goes through `_text`, which escapes
it and drops the characters XML cannot hold. Every label is real <text> (searchable, read
by screen readers); the chart's title is its accessible name (role=img, <title>) and a
<desc> lists its axes and series. Output is deterministic: same data, same bytes.
"""
import math
from dataclasses import dataclass

FONT = "system-ui, sans-serif"
FONT_SIZE = 12          # px: axis labels and ticks, the size of the page's small text
SMALL_FONT_SIZE = 10    # px: legend, annotations, rotated bar labels
TITLE_FONT_SIZE = 14
# Average advance of a character in a sans-serif font, in em: there is no font metrics
# here, so widths are estimated; a generous value keeps labels from overlapping.
CHAR_EM = 0.6
TICK_LEN = 4
TICKS_WANTED = 6        # ticks per axis: about what a reader can take in at a glance
Y_HEADROOM = 1.05       # room above the highest value for the peak label
BAR_FILL = 0.8          # share of a bar's slot that the bar covers
BAR_LABEL_ANGLE = 60    # degrees: long bucket labels still fit under narrow bars
LEGEND_SAMPLE = 22      # px: the line sample in front of a legend entry
LEGEND_GAP = 16
MARKER_SIZE = 5         # px: half the width of the peak triangle
AXIS_COLOR = "#444"
GRID_COLOR = "#e6e6e6"
TEXT_COLOR = "#222"
# matplotlib's default cycle: the colours the --png/--svg charts use too.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
# XML 1.0 cannot hold control characters other than tab, newline and carriage return.
_XML_BAD = {c: None for c in range(0x20) if c not in (0x9, 0xA, 0xD)}
_XML_BAD.update({0xFFFE: None, 0xFFFF: None})


@dataclass
class Series:
    """One line: ys[i] holds from xs[i] until xs[i+1] when the chart draws steps; a None
    value leaves a gap."""
    name: str
    xs: list
    ys: list
    color: str = None       # None: the next colour of PALETTE
    dashed: bool = False
    right: bool = False     # measured on the right-hand axis


@dataclass
class Mark:
    """A vertical line at x with a label: rotated at the foot of the line, or, when label_y
    is given, level at that height (in the left axis' units)."""
    x: float
    label: str
    color: str = "#777"
    dotted: bool = True
    label_y: float = None


@dataclass
class Peak:
    x: float
    y: float
    label: str
    color: str = "#d62728"


@dataclass
class Panel:
    """One bar chart: a bar per label."""
    x_label: str
    y_label: str
    labels: list
    values: list
    color: str = PALETTE[0]


@dataclass
class _Box:
    """The plot area in pixels and the data ranges it shows."""
    left: float
    top: float
    width: float
    height: float
    x_lo: float = 0.0
    x_hi: float = 1.0
    y_lo: float = 0.0
    y_hi: float = 1.0

    def px(self, x):
        return self.left + (x - self.x_lo) / (self.x_hi - self.x_lo) * self.width

    def py(self, y, lo=None, hi=None):
        lo = self.y_lo if lo is None else lo
        hi = self.y_hi if hi is None else hi
        return self.top + self.height - (y - lo) / (hi - lo) * self.height


def _text(value):
    """A user string made safe for XML text and attribute values."""
    s = str(value).translate(_XML_BAD)
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _n(v):
    """A pixel coordinate: a tenth of a pixel is finer than any screen shows."""
    return f"{v:.1f}".rstrip("0").rstrip(".")


def text_width(s, size=FONT_SIZE):
    return len(str(s)) * size * CHAR_EM


def nice_ticks(lo, hi, integer=False, wanted=TICKS_WANTED):
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering [lo, hi], and the
    step between them."""
    if not hi > lo:
        hi = lo + 1
    raw = (hi - lo) / wanted
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if raw <= m * mag * (1 + 1e-9))
    if integer:
        step = max(1, math.ceil(step))
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi * (1 + 1e-9) + 1e-12:
        ticks.append(k * step)
        k += 1
    return ticks, step


def tick_label(v, step):
    """Enough decimals to tell neighbouring ticks apart; thousands separated."""
    decimals = 0
    while decimals < 9 and abs(round(step, decimals) - step) > step * 1e-6:
        decimals += 1
    return f"{v:,.{decimals}f}"


def _svg_open(width, height, title, desc):
    return [f'<svg width="{_n(width)}" height="{_n(height)}" viewBox="0 0 {_n(width)} '
            f'{_n(height)}" role="img" aria-label="{_text(title)}" font-family="{FONT}" '
            f'font-size="{FONT_SIZE}" fill="{TEXT_COLOR}">',
            f"<title>{_text(title)}</title><desc>{_text(desc)}</desc>",
            f'<rect width="{_n(width)}" height="{_n(height)}" fill="#fff"/>',
            f'<text x="{_n(width / 2)}" y="{TITLE_FONT_SIZE + 6}" text-anchor="middle" '
            f'font-size="{TITLE_FONT_SIZE}">{_text(title)}</text>']


def _y_axis(out, box, ticks, step, label, lo, hi, right=False, grid=True):
    """Ticks, tick labels and the rotated axis label on the left (or right) edge of box."""
    edge = box.left + box.width if right else box.left
    sign = 1 if right else -1
    anchor = "start" if right else "end"
    out.append(f'<path d="M{_n(edge)} {_n(box.top)}V{_n(box.top + box.height)}" '
               f'stroke="{AXIS_COLOR}" fill="none"/>')
    widest = 0
    for v in ticks:
        y = box.py(v, lo, hi)
        if grid:
            out.append(f'<path d="M{_n(box.left)} {_n(y)}H{_n(box.left + box.width)}" '
                       f'stroke="{GRID_COLOR}" fill="none"/>')
        text = tick_label(v, step)
        widest = max(widest, text_width(text))
        out.append(f'<path d="M{_n(edge)} {_n(y)}h{sign * TICK_LEN}" stroke="{AXIS_COLOR}"/>')
        out.append(f'<text x="{_n(edge + sign * (TICK_LEN + 3))}" y="{_n(y + FONT_SIZE * 0.35)}" '
                   f'text-anchor="{anchor}">{text}</text>')
    lx = edge + sign * (TICK_LEN + 8 + widest + FONT_SIZE * 0.5)
    ly = box.top + box.height / 2
    out.append(f'<text x="{_n(lx)}" y="{_n(ly)}" text-anchor="middle" '
               f'transform="rotate({90 if right else -90} {_n(lx)} {_n(ly)})">'
               f'{_text(label)}</text>')


def _y_margin(ticks, step):
    """Pixels an axis needs beside the plot: ticks, their labels and the rotated label."""
    widest = max((text_width(tick_label(v, step)) for v in ticks), default=0)
    return TICK_LEN + 8 + widest + FONT_SIZE * 1.5


def _legend(series, width, top):
    """Legend entries flowing in rows under the plot; returns (elements, height used)."""
    out, x, y = [], 0.0, top
    row_h = SMALL_FONT_SIZE + 8
    margin = LEGEND_GAP
    for s in series:
        w = LEGEND_SAMPLE + 6 + text_width(s.name, SMALL_FONT_SIZE) + LEGEND_GAP
        if x and margin + x + w > width - margin:
            x, y = 0.0, y + row_h
        x0 = margin + x
        dash = ' stroke-dasharray="6 3"' if s.dashed else ""
        out.append(f'<path d="M{_n(x0)} {_n(y)}h{LEGEND_SAMPLE}" stroke="{s.color}" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{_n(x0 + LEGEND_SAMPLE + 6)}" y="{_n(y + SMALL_FONT_SIZE * 0.35)}" '
                   f'font-size="{SMALL_FONT_SIZE}">{_text(s.name)}</text>')
        x += w
    return out, (y - top) + row_h if series else 0


def _path(s, box, lo, hi, steps):
    """The series as one SVG path; a None value lifts the pen. With steps, a value holds
    until the next point, and runs of equal values become one horizontal move."""
    d = []
    pen = False
    last_y = None
    n = len(s.xs)
    for i in range(n):
        v = s.ys[i]
        if v is None:
            pen = False
            continue
        x, y = _n(box.px(s.xs[i])), _n(box.py(v, lo, hi))
        if not pen:
            d.append(f"M{x} {y}")
        elif steps:
            if y != last_y or i == n - 1:
                d.append(f"H{x}V{y}" if y != last_y else f"H{x}")
        else:
            d.append(f"L{x} {y}")
        pen, last_y = True, y
        if steps and i + 1 < n and s.ys[i + 1] is None:
            d.append(f"H{_n(box.px(s.xs[i + 1]))}")   # held until the next snapshot
    if not d:
        return ""
    dash = ' stroke-dasharray="6 3"' if s.dashed else ""
    return (f'<path d="{"".join(d)}" stroke="{s.color}" stroke-width="1.5" fill="none"'
            f'{dash}><title>{_text(s.name)}</title></path>')


def line_chart(title, x_label, y_label, series, right_label=None, y_max=None, right_max=None,
               peaks=(), marks=(), steps=True, width=900, height=450):
    """A chart of series over x. y axes start at 0 and end at y_max (right_max for the
    right-hand axis) or a little above the highest value; height excludes the legend.
    A series without a colour is given the next one of PALETTE."""
    series = list(series)
    colors = iter(PALETTE * (len(series) // len(PALETTE) + 1))
    for s in series:
        if s.color is None:
            s.color = next(colors)
    xs = [x for s in series for x in s.xs] + [m.x for m in marks] + [pk.x for pk in peaks]
    x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if not x_hi > x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5

    def top_of(side_series, fixed, extra=()):
        if fixed is not None:
            return fixed
        vals = [v for s in side_series for v in s.ys if v is not None] + list(extra)
        return (max(vals) * Y_HEADROOM if vals and max(vals) > 0 else 1.0)

    left = [s for s in series if not s.right]
    right = [s for s in series if s.right]
    y_hi = top_of(left, y_max, [pk.y for pk in peaks])
    y_ticks, y_step = nice_ticks(0, y_hi)
    r_hi = top_of(right, right_max) if right_label else None
    r_ticks, r_step = nice_ticks(0, r_hi) if right_label else ([], 1)

    legend_h = _legend(series, width, 0)[1]
    left_m = _y_margin(y_ticks, y_step) + 8
    right_m = _y_margin(r_ticks, r_step) + 8 if right_label else 20
    top_m = TITLE_FONT_SIZE + 20
    bottom_m = FONT_SIZE * 2 + TICK_LEN + 16
    box = _Box(left_m, top_m, width - left_m - right_m, height - top_m - bottom_m,
               x_lo, x_hi, 0.0, y_hi)

    axes = f"x: {x_label}, {x_lo:g} to {x_hi:g}; y: {y_label}"
    if right_label:
        axes += f"; right y: {right_label}"
    desc = f"{axes}. Series: {', '.join(s.name for s in series) or 'none'}."
    # the legend adds rows below, so many series never squeeze the plot
    out = _svg_open(width, height + legend_h + 8, title, desc)
    _y_axis(out, box, y_ticks, y_step, y_label, 0.0, y_hi)
    if right_label:
        _y_axis(out, box, r_ticks, r_step, right_label, 0.0, r_hi, right=True, grid=False)
    x_ticks, x_step = nice_ticks(x_lo, x_hi)
    base = box.top + box.height
    out.append(f'<path d="M{_n(box.left)} {_n(base)}H{_n(box.left + box.width)}" '
               f'stroke="{AXIS_COLOR}" fill="none"/>')
    for v in x_ticks:
        if v < x_lo - 1e-12:
            continue
        x = box.px(v)
        out.append(f'<path d="M{_n(x)} {_n(base)}v{TICK_LEN}" stroke="{AXIS_COLOR}"/>')
        out.append(f'<text x="{_n(x)}" y="{_n(base + TICK_LEN + FONT_SIZE + 2)}" '
                   f'text-anchor="middle">{tick_label(v, x_step)}</text>')
    out.append(f'<text x="{_n(box.left + box.width / 2)}" '
               f'y="{_n(base + TICK_LEN + FONT_SIZE * 2 + 8)}" text-anchor="middle">'
               f'{_text(x_label)}</text>')

    for s in series:
        lo, hi = (0.0, r_hi) if s.right else (0.0, y_hi)
        out.append(_path(s, box, lo, hi, steps))
    for m in marks:
        x = box.px(m.x)
        dash = ' stroke-dasharray="2 3"' if m.dotted else ""
        out.append(f'<path d="M{_n(x)} {_n(box.top)}V{_n(base)}" stroke="{m.color}"'
                   f'{dash} fill="none"><title>{_text(m.label)} at {m.x:g}</title></path>')
        if m.label_y is None:
            tx, ty = x + SMALL_FONT_SIZE, base - 4
            out.append(f'<text x="{_n(tx)}" y="{_n(ty)}" font-size="{SMALL_FONT_SIZE}" '
                       f'fill="{m.color}" transform="rotate(-90 {_n(tx)} {_n(ty)})">'
                       f'{_text(m.label)}</text>')
        else:
            # right of the line, or left of it when it would run past the plot
            room = box.left + box.width - x - 3
            tx, anchor = (x + 3, "start") if room > text_width(m.label, SMALL_FONT_SIZE) \
                else (x - 3, "end")
            ty = max(box.py(min(m.label_y, box.y_hi)) - 3, box.top + SMALL_FONT_SIZE)
            out.append(f'<text x="{_n(tx)}" y="{_n(ty)}" text-anchor="{anchor}" '
                       f'font-size="{SMALL_FONT_SIZE}" fill="{m.color}">{_text(m.label)}</text>')
    for peak in peaks:
        x, y = box.px(peak.x), box.py(peak.y)
        out.append(f'<path d="M{_n(x - MARKER_SIZE)} {_n(y - MARKER_SIZE)}'
                   f'H{_n(x + MARKER_SIZE)}L{_n(x)} {_n(y + MARKER_SIZE)}Z" fill="{peak.color}">'
                   f'<title>{_text(peak.label)}</title></path>')
        # keep the label inside the chart when the peak is near the right edge
        tw = text_width(peak.label, SMALL_FONT_SIZE)
        tx = min(x + MARKER_SIZE + 2, width - tw - 4)
        out.append(f'<text x="{_n(tx)}" y="{_n(max(y - MARKER_SIZE - 2, top_m))}" '
                   f'font-size="{SMALL_FONT_SIZE}" fill="{peak.color}">{_text(peak.label)}</text>')
    legend, _ = _legend(series, width, base + TICK_LEN + FONT_SIZE * 2 + 24)
    out += legend
    out.append("</svg>")
    return "".join(out)


def bar_chart(title, panels, panel_width=585, height=450):
    """Panels of bars side by side, each with its own axes; values are counts (whole
    numbers), so the y ticks are integers."""
    rot = math.radians(BAR_LABEL_ANGLE)
    label_drop = max((text_width(lab, SMALL_FONT_SIZE) for p in panels for lab in p.labels),
                     default=0) * math.sin(rot) + SMALL_FONT_SIZE
    top_m = TITLE_FONT_SIZE + 20
    bottom_m = TICK_LEN + label_drop + FONT_SIZE * 2 + 8
    width = panel_width * len(panels)
    desc = "; ".join(f"{p.y_label} per {p.x_label}: " +
                     ", ".join(f"{lab} {v}" for lab, v in zip(p.labels, p.values))
                     for p in panels)
    out = _svg_open(width, height, title, desc)
    for i, p in enumerate(panels):
        top = max(p.values, default=0)
        y_hi = top * Y_HEADROOM if top > 0 else 1
        ticks, step = nice_ticks(0, y_hi, integer=True)
        left_m = _y_margin(ticks, step) + 8
        box = _Box(i * panel_width + left_m, top_m, panel_width - left_m - 16,
                   height - top_m - bottom_m, 0, max(len(p.values), 1), 0, y_hi)
        _y_axis(out, box, ticks, step, p.y_label, 0, y_hi)
        base = box.top + box.height
        slot = box.width / max(len(p.values), 1)
        for k, (lab, v) in enumerate(zip(p.labels, p.values)):
            x = box.left + k * slot
            y = box.py(v)
            out.append(f'<rect x="{_n(x + slot * (1 - BAR_FILL) / 2)}" y="{_n(y)}" '
                       f'width="{_n(slot * BAR_FILL)}" height="{_n(base - y)}" fill="{p.color}">'
                       f'<title>{_text(lab)}: {v}</title></rect>')
            cx, ty = x + slot / 2, base + TICK_LEN + SMALL_FONT_SIZE
            out.append(f'<text x="{_n(cx)}" y="{_n(ty)}" font-size="{SMALL_FONT_SIZE}" '
                       f'text-anchor="end" transform="rotate(-{BAR_LABEL_ANGLE} {_n(cx)} '
                       f'{_n(ty)})">{_text(lab)}</text>')
        out.append(f'<path d="M{_n(box.left)} {_n(base)}H{_n(box.left + box.width)}" '
                   f'stroke="{AXIS_COLOR}" fill="none"/>')
        out.append(f'<text x="{_n(box.left + box.width / 2)}" '
                   f'y="{_n(base + TICK_LEN + label_drop + FONT_SIZE + 4)}" '
                   f'text-anchor="middle">{_text(p.x_label)}</text>')
    out.append("</svg>")
    return "".join(out)
