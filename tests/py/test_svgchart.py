"""The HTML report's SVG chart writer on its own: the output parses as XML, draws one path
per series and one bar per value, escapes user strings, references nothing outside itself,
and picks round ticks."""
import re
import xml.etree.ElementTree as ET

import reportfab  # noqa: F401  (puts tools/ on sys.path)
from mtrace_report.reporters.svgchart import (Mark, Panel, Peak, Series, bar_chart, line_chart,
                                              nice_ticks, tick_label)

HOSTILE = "a<b>&\"c'\x01\x1b]"      # markup, quotes and control characters from a mark label


def texts(root):
    return [t.text for t in root.iter("text")]


def titled(root, tag):
    """Elements of one kind that carry a <title> (series paths, bars): their titles."""
    return [e.find("title").text for e in root.iter(tag) if e.find("title") is not None]


def test_line_chart_series_axes_peak_and_marks():
    svg = line_chart("Heap over time", "time (s)", "heap (KiB)",
                     [Series("requested", [0, 1, 2], [1, 3, 2]),
                      Series("in use", [0, 1, 2], [2, None, 4]),
                      Series("overhead", [0, 2], [1.5, 2.5], dashed=True, right=True)],
                     right_label="overhead (mapped / requested)",
                     peaks=[Peak(1, 3, "peak 3072 B")], marks=[Mark(1.5, "after setup")])
    root = ET.fromstring(svg)
    assert root.tag == "svg" and root.get("role") == "img"
    assert root.find("title").text == "Heap over time"
    assert titled(root, "path")[:3] == ["requested", "in use", "overhead"]
    labels = texts(root)
    for label in ("Heap over time", "time (s)", "heap (KiB)", "overhead (mapped / requested)",
                  "peak 3072 B", "after setup", "requested", "in use", "overhead"):
        assert label in labels, label
    # a None value lifts the pen: the second series is drawn in two pieces
    paths = {p.find("title").text: p for p in root.iter("path") if p.find("title") is not None}
    assert paths["in use"].get("d").count("M") == 2
    assert paths["overhead"].get("stroke-dasharray") and not paths["requested"].get("stroke-dasharray")


def test_bar_chart_one_bar_per_value_per_panel():
    svg = bar_chart("Requested sizes, all allocations",
                    [Panel("requested size", "blocks", ["1", "2-3", "4-7"], [5, 0, 12]),
                     Panel("size class", "blocks", ["16", "<=4096"], [7, 1])])
    root = ET.fromstring(svg)
    assert titled(root, "rect") == ["1: 5", "2-3: 0", "4-7: 12", "16: 7", "<=4096: 1"]
    assert "&lt;=4096" in svg
    labels = texts(root)
    assert labels.count("blocks") == 2 and "requested size" in labels and "size class" in labels
    assert not any("." in t for t in labels)     # y ticks count whole blocks


def test_user_strings_are_escaped_and_nothing_is_referenced():
    svg = line_chart(HOSTILE, HOSTILE, HOSTILE, [Series(HOSTILE, [0, 1], [1, 2])],
                     marks=[Mark(0.5, HOSTILE)], peaks=[Peak(1, 2, HOSTILE)])
    svg += bar_chart(HOSTILE, [Panel(HOSTILE, HOSTILE, [HOSTILE], [1])])
    for one in re.findall(r"<svg\b.*?</svg>", svg, re.S):
        root = ET.fromstring(one)     # would fail on a raw '<', '&' or control character
        assert "a<b>&\"c']" in texts(root)
    assert "\x01" not in svg and "\x1b" not in svg
    assert not re.search(r"https?:|<script|\bid=|href", svg)


def test_same_data_same_bytes():
    def draw():
        return line_chart("t", "x", "y", [Series("s", [0, 1], [0, 1])], marks=[Mark(1, "m")])
    assert draw() == draw()


def test_nice_ticks():
    assert nice_ticks(0, 10)[0] == [0, 2, 4, 6, 8, 10]
    ticks, step = nice_ticks(0, 1.05)
    assert step == 0.2 and [tick_label(v, step) for v in ticks] == ["0.0", "0.2", "0.4", "0.6",
                                                                   "0.8", "1.0"]
    assert nice_ticks(0, 3, integer=True)[0] == [0, 1, 2, 3]
    assert nice_ticks(5, 5)[0][0] == 5              # an empty range still gets ticks
    assert tick_label(1_500_000, 500_000) == "1,500,000"
