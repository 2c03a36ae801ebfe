"""mtrace-report analyses on fabricated traces: exact numbers worked out from the scripts
in reportfab.py, and the event decoder against the encoder of docs/trace-format.md."""
import json

import pytest

from reportfab import (GROW, KEEP, LEAK_A, LEAK_B, MARK_NS, SNAP_NS, TEMP, frag_app,
                       leaky_app, run_main)
from tracefab import TraceFab, encode_chunk

from mtrace_report import events
from mtrace_report.analysis import diff, hist, leaks, series, summary, top
from mtrace_report.db import open_trace


@pytest.fixture
def app(tmp_path):
    return open_trace(leaky_app(tmp_path / "app.db"))


def names(frames):
    return [f["function"] for f in frames]


def test_summary_numbers(app):
    s = summary.summarize(app, [1])
    ops = {o["name"]: (o["calls"], o["bytes"]) for o in s["operations"]}
    assert ops == {"malloc": (11, 2476), "calloc": (1, 80), "realloc": (1, 4000), "free": (6, 0)}
    assert s["allocations"] == 13
    assert s["bytes_allocated"] == 6556
    assert s["peak"] == dict(bytes=6364, ns=90_000, proc_id=1, pid=100)
    assert s["processes"][0]["argv"] == ["./app", "--x"]
    assert s["processes"][0]["exit_code"] == 0
    assert s["processes"][0]["duration_ns"] == 200_000
    assert s["leaks"]["leaked_blocks"] == 5 and s["leaks"]["leaked_bytes"] == 2300
    assert s["leaks"]["leak_stacks"] == 2
    assert s["leaks"]["reachable_blocks"] == 1 and s["leaks"]["reachable_bytes"] == 64
    assert s["dropped"] == 0 and s["error_count"] == 0


def test_summary_text_counts_errors(tmp_path, capsys):
    path = leaky_app(tmp_path / "e.db", with_error=True)
    code, out, _ = run_main(capsys, "summary", path)
    assert code == 0
    assert "heap errors: 1 double free" in out
    assert "leaks: 2300 bytes in 5 blocks" in out
    assert "peak heap: 6.2 KiB at 90.0 us (pid 100)" in out


def test_leaks_grouped_sorted_symbolized(app):
    r = leaks.leak_report(app, [1])
    assert [(g["leaked_blocks"], g["leaked_bytes"]) for g in r["stacks"]] == [(2, 2000), (3, 300)]
    assert names(r["stacks"][0]["frames"]) == ["leak_b", "helper", "main"]
    f = r["stacks"][0]["frames"][0]
    assert (f["file"], f["line"], f["module"]) == ("util.c", 20, "/usr/lib/libutil.so.1")
    assert r["totals"]["reachable_bytes"] == 64
    shown = leaks.leak_report(app, [1], show_reachable=True)
    assert [names(g["frames"])[0] for g in shown["stacks"]] == ["leak_b", "leak_a", "keep_config"]
    assert shown["stacks"][2]["reachable_blocks"] == 1


def test_leaks_text_top_frames_and_full(app, capsys):
    code, out, _ = run_main(capsys, "leaks", app.path)
    assert code == 0
    assert "2000 bytes in 2 blocks leaked" in out
    assert "#0 leak_b at util.c:20 (libutil.so.1)" in out
    assert "keep_config" not in out
    code, out, _ = run_main(capsys, "leaks", app.path, "--show-reachable")
    assert "64 bytes in 1 blocks still reachable" in out


def test_leaks_unclassified_without_scan(tmp_path):
    fab = TraceFab()
    p = fab.process(pid=7)
    p.malloc(50, LEAK_A)
    p.exit(0, leak_scan=False)
    t = open_trace(fab.write(str(tmp_path / "u.db")))
    r = leaks.leak_report(t, [1])
    assert r["totals"]["unknown_blocks"] == 1 and r["totals"]["unknown_bytes"] == 50
    assert r["totals"]["leaked_blocks"] == 0
    assert r["processes"][0]["leak_scan"] is False


def test_hist_all_allocations(app):
    h = hist.alloc_hist(app, [1])
    got = {b["bucket"]: (b["count"], b["bytes"]) for b in h["buckets"]}
    assert got == {5: (5, 112), 6: (0, 0), 7: (5, 444), 8: (0, 0), 9: (0, 0),
                   10: (2, 2000), 11: (0, 0), 12: (1, 4000)}
    assert (h["buckets"][0]["lo"], h["buckets"][0]["hi"]) == (16, 31)
    classes = {c["block_size"]: c["count"] for c in h["classes"]}
    assert classes == {16: 1, 32: 4, 64: 1, 80: 1, 112: 3, 1024: 2, 4096: 1}
    assert [c["small"] for c in h["classes"]][-1] is False
    assert h["total_count"] == 13 and h["total_bytes"] == 6556
    assert h["live_at_exit_count"] == 6 and h["live_at_exit_bytes"] == 2364


def test_hist_live_from_snapshot_and_from_events_agree(app):
    snap = hist.live_hist(app, [1], SNAP_NS + 500)   # the snapshot at 100 us
    exact = hist.live_hist(app, [1], SNAP_NS + 500, exact=True)
    expected = {7: (4, 364), 8: (0, 0), 9: (0, 0), 10: (2, 2000), 11: (0, 0), 12: (1, 4000)}
    for h in (snap, exact):
        assert {b["bucket"]: (b["count"], b["bytes"]) for b in h["buckets"]} == expected
    assert snap["snapshots"] == [dict(proc_id=1, snap_id=1, ts_ns=SNAP_NS)]
    assert {c["block_size"]: c["count"] for c in snap["classes"]} == \
        {64: 1, 112: 3, 1024: 2, 4096: 1}
    assert {c["block_size"]: c["count"] for c in exact["classes"]} == \
        {64: 1, 112: 3, 1024: 2, 4096: 1}
    # the fabricated allocator's slot counts: live rounded up to 4 per small class
    assert {c["block_size"]: c["capacity"] for c in snap["classes"]}[112] == 4


def test_hist_exact_after_free_and_before_realloc(app):
    # at 89 us the realloc has not happened: the 16-byte block is live, no 4000
    h = hist.live_hist(app, [1], 89_000, exact=True)
    got = {b["bucket"]: b["count"] for b in h["buckets"] if b["count"]}
    assert got == {5: 1, 7: 4, 10: 2}
    h = hist.live_hist(app, [1], 180_000, exact=True)
    assert h["total_count"] == 6 and h["total_bytes"] == 2364


def test_hist_text_bars(app, capsys):
    code, out, _ = run_main(capsys, "hist", app.path)
    assert code == 0
    lines = out.splitlines()
    row = next(line for line in lines if line.strip().startswith("64-127"))
    assert " 5 " in row and "444 B" in row and ("█" in row or "#" in row)
    assert any(line.strip().startswith("≤4096") or line.strip().startswith("<=4096")
               for line in lines)


def test_frag_definitions_and_worst_moment(tmp_path):
    t = open_trace(frag_app(tmp_path / "f.db"))
    r = series.frag_report(t, [1])
    p = r["processes"][0]
    a, b, end = p["points"]
    assert (a["external"], a["internal"], a["overhead"]) == (0.75, 0.2, 5.0)
    assert (b["external"], b["internal"], b["overhead"]) == (0.0, 0.2, 4.0)
    assert end["overhead"] == pytest.approx(6144 / 2000)
    assert p["worst"]["ts_ns"] == 1_000_000
    assert p["worst"]["mapped"] - p["worst"]["requested"] == 16000
    assert p["max_external"]["ts_ns"] == 1_000_000
    window = series.frag_report(t, [1], lo=1_500_000)
    assert window["processes"][0]["worst"]["ts_ns"] == 2_000_000


def test_frag_text(tmp_path, capsys):
    code, out, _ = run_main(capsys, "frag", frag_app(tmp_path / "f.db"))
    assert code == 0
    assert "worst moment (most memory held beyond requests: 15.6 KiB) at 1.00 ms" in out
    assert "external 75.0%, internal 20.0%, overhead 5.00x" in out


def test_timeline_peak_and_marks(app):
    r = series.timeline_report(app, [1])
    p = r["processes"][0]
    assert p["peak"] == dict(bytes=6364, ns=90_000, in_window=True)
    assert p["marks"] == [dict(ts_ns=MARK_NS, label="after setup", requested=6364)]
    assert [pt["requested"] for pt in p["points"]] == [6364, 2364]
    r = series.timeline_report(app, [1], lo=120_000)
    assert r["processes"][0]["peak"]["in_window"] is False
    assert [pt["requested"] for pt in r["processes"][0]["points"]] == [2364]


def test_series_thinning_keeps_maxima(tmp_path):
    fab = TraceFab(snapshot_at_exit=False)
    p = fab.process(pid=9)
    blocks = []
    for i in range(40):
        blocks.append(p.malloc(100, TEMP))
        p.snapshot(at=(i + 1) * 1_000_000)
    p.exit(0, at=50_000_000)
    t = open_trace(fab.write(str(tmp_path / "s.db")))
    points = series.snapshot_series(t, 1, max_points=10)
    assert len(points) <= 10
    assert max(pt["requested"] for pt in points) == 4000


def test_top_orders(app):
    by_bytes = top.top_sites(app, [1], "bytes", 10)["sites"]
    assert [names(s["frames"])[0] for s in by_bytes] == \
        ["grow", "leak_b", "leak_a", "make_temp", "keep_config"]
    assert by_bytes[0]["alloc_bytes"] == 4016 and by_bytes[0]["reallocs"] == 1
    by_calls = top.top_sites(app, [1], "calls", 2)["sites"]
    assert [(names(s["frames"])[0], s["allocs"]) for s in by_calls] == [("make_temp", 5), ("leak_a", 3)]
    by_temp = top.top_sites(app, [1], "temporary", 10)["sites"]
    assert [(names(s["frames"])[0], s["temporary"]) for s in by_temp] == [("make_temp", 5), ("grow", 2)]
    by_peak = top.top_sites(app, [1], "peak", 10)
    assert [(names(s["frames"])[0], s["at_peak_bytes"]) for s in by_peak["sites"]] == \
        [("grow", 4000), ("leak_b", 2000), ("leak_a", 300), ("keep_config", 64)]
    assert by_peak["totals"]["peak"] == 6364


def test_top_json(app, capsys):
    code, out, _ = run_main(capsys, "top", app.path, "--by", "calls", "--limit", "1", "--json")
    data = json.loads(out)
    assert code == 0 and len(data["sites"]) == 1 and data["sites"][0]["allocs"] == 5


def _diff_pair(tmp_path):
    """a: LEAK_A leaks 1 x 100, TEMP 2 x 24, KEEP once. b (stacks registered in another
    order, so other ids): LEAK_A leaks 3 x 100, LEAK_B new leak 1 x 1000, TEMP 5 x 24,
    KEEP gone, GROW new."""
    fa = TraceFab()
    pa = fa.process(pid=1)
    fa.stack(KEEP)
    pa.malloc(100, LEAK_A)
    for _ in range(2):
        pa.free(pa.malloc(24, TEMP))
    pa.free(pa.malloc(64, KEEP))
    pa.exit(0)
    fb = TraceFab()
    fb.stack(GROW)
    fb.stack(TEMP)
    pb = fb.process(pid=2)
    for _ in range(3):
        pb.malloc(100, LEAK_A)
    pb.malloc(1000, LEAK_B)
    for _ in range(5):
        pb.free(pb.malloc(24, TEMP))
    pb.free(pb.malloc(8, GROW))
    pb.exit(0)
    return (open_trace(fa.write(str(tmp_path / "a.db"))),
            open_trace(fb.write(str(tmp_path / "b.db"))))


def test_diff_matches_stacks_by_symbols(tmp_path):
    a, b = _diff_pair(tmp_path)
    d = diff.diff_traces(a, b)
    assert [names(e["frames"])[0] for e in d["new_leaks"]] == ["leak_b"]
    assert d["new_leaks"][0]["b"]["leaked_bytes"] == 1000
    assert [(names(e["frames"])[0], e["a"]["leaked_bytes"], e["b"]["leaked_bytes"])
            for e in d["grown_leaks"]] == [("leak_a", 100, 300)]
    assert [names(e["frames"])[0] for e in d["disappeared"]] == ["keep_config"]
    grew = {names(e["frames"])[0]: e["delta"]["alloc_bytes"] for e in d["grew"]}
    assert grew == {"leak_b": 1000, "leak_a": 200, "make_temp": 72, "grow": 8}
    assert d["counts"]["fixed_leaks"] == 0


def test_diff_text(tmp_path, capsys):
    a, b = _diff_pair(tmp_path)
    code, out, _ = run_main(capsys, "diff", a.path, b.path)
    assert code == 0
    assert "new leak stacks: 1" in out and "1000 bytes in 1 blocks" in out
    assert "stacks that disappeared: 1" in out


def test_event_decoding_round_trip(tmp_path):
    """Varints past 7 bits, negative pointer deltas, realloc's zigzag aux (moved, in place,
    from NULL), region pops, and thread indexes above the 4 op bits."""
    evs = [(1, 0, 5, 0x7F0000001000, 300, 70000, 0),
           (1, 3, 9, 0x7F0000000100, 17, 1, 0),                      # lower: negative delta
           (3, 3, 9, 0x7F0000002000, 40000, 2, 0x7F0000000100),      # realloc, moved
           (3, 1, 2000, 0x7F0000002000, 50000, 2, 0x7F0000002000),   # in place
           (3, 1, 2001, 0x7F0000003000, 8, 2, 0),                    # realloc(NULL, 8)
           (11, 2, 3000, 0x7F0000010000, 64, 3, 0xABC),
           (12, 2, 3001, 0x7F0000010000, 0, 0, 0xABC),
           (10, 17, 1 << 40, 0x7F0000001000, 0, 0, 0)]
    data = encode_chunk(evs, 5)
    assert list(events.decode_chunk(data, len(evs), 5)) == evs
    with pytest.raises(events.EventFormatError):
        list(events.decode_chunk(data[:-1], len(evs), 5))


def test_replay_region_pops(tmp_path):
    fab = TraceFab(chunk_events=3)
    p = fab.process(pid=5)
    p.region_create(0x55)
    p.region_push(0x55, 100, TEMP)
    p.region_push(0x55, 200, TEMP)
    p.region_push(0x55, 300, TEMP)
    p.region_pop(0x55, 112, at=50_000)        # keeps the first push only (112 = 100 aligned)
    keep = p.malloc(10, KEEP)
    p.exit(0, at=60_000, status={keep: "reachable"})
    t = open_trace(fab.write(str(tmp_path / "r.db")))
    live = events.replay_live(t, [1], 55_000)[1]
    assert sorted(live.values()) == [10, 100]


def test_top_in_a_time_window_from_events(app):
    """Between 5.5 us and 100 us: the 4 TEMP pairs (6-13 us), KEEP (14 us), GROW's malloc
    (15 us) and realloc (90 us, which frees the 16-byte block: a temporary)."""
    r = top.top_sites_window(app, [1], "calls", 10, 5_500, 100_000)
    assert [(names(s["frames"])[0], s["allocs"], s["alloc_bytes"]) for s in r["sites"]] == \
        [("make_temp", 4, 96), ("grow", 2, 4016), ("keep_config", 1, 64)]
    assert r["totals"]["calls"] == 7 and r["totals"]["bytes"] == 4176
    temp = top.top_sites_window(app, [1], "temporary", 10, 5_500, 100_000)["sites"]
    assert [(names(s["frames"])[0], s["temporary"]) for s in temp] == [("make_temp", 4), ("grow", 1)]
    whole = top.top_sites_window(app, [1], "temporary", 10, None, None)["sites"]
    assert [(names(s["frames"])[0], s["temporary"]) for s in whole] == \
        [(names(s["frames"])[0], s["temporary"]) for s in top.top_sites(app, [1], "temporary", 10)["sites"]]


def test_top_window_refuses_peak(app, capsys):
    code, _, err = run_main(capsys, "top", app.path, "--by", "peak", "--from", "0.001")
    assert code == 2 and "--by peak" in err


def test_replay_region_pop_without_address(tmp_path):
    """A pop recorded with ptr 0: the region's earliest live push is position 0."""
    fab = TraceFab()
    p = fab.process(pid=5)
    p.region_create(0x66)
    first = p.region_push(0x66, 100, TEMP)
    p.region_push(0x66, 200, TEMP)
    p.region_pop(0x66, 112, at=50_000)
    p.exit(0, at=60_000)
    op, thread, ts, ptr, size, sid, aux = p.events[-1]
    assert ptr == first + 112
    p.events[-1] = (op, thread, ts, 0, size, sid, aux)      # as a recorder writing 0
    t = open_trace(fab.write(str(tmp_path / "r0.db")))
    assert sorted(events.replay_live(t, [1], 55_000)[1].values()) == [100]


def _phased_heap(path, format_version):
    """Three snapshots in which a size class and a size bucket fill and empty again (what
    format 2 stores as changed rows only), a realloc that moves, memalign's aux and a free,
    written in the given format."""
    fab = TraceFab(chunk_events=5)
    p = fab.process(pid=300, argv=["./phased"])
    small = [p.malloc(40, ["a"]) for _ in range(3)]
    big = p.malloc(5000, ["b"], at=10_000)
    p.snapshot(at=20_000)                      # 40s and the 5000
    for ptr in small:
        p.free(ptr)
    moved = p.realloc(big, 9000, ["c"], at=30_000)
    p.malloc(64, ["d"], op="memalign", aux=64)
    p.snapshot(at=40_000)                      # the 40s are gone, 9000 replaces 5000
    p.free(moved, at=50_000)
    p.snapshot(at=60_000)                      # only the memalign block
    p.exit(0, at=70_000)
    return open_trace(fab.write(str(path), format_version=format_version))


def test_format_1_and_2_traces_read_alike(tmp_path):
    """The reader knows both formats: the same script written as format 1 (every row, six
    varints per event, a sizes table) and format 2 gives the same reports, at every
    snapshot and by replay."""
    old, new = (_phased_heap(tmp_path / f"v{v}.db", v) for v in (1, 2))
    assert (old.version, new.version) == (1, 2)
    assert list(events.iter_events(old, 1)) == list(events.iter_events(new, 1))
    assert hist.alloc_hist(old, [1])["buckets"] == hist.alloc_hist(new, [1])["buckets"]
    for at in (25_000, 45_000, 65_000):
        for exact in (False, True):
            a, b = (hist.live_hist(t, [1], at, exact=exact) for t in (old, new))
            assert (a["buckets"], a["classes"], a["total_bytes"]) == \
                (b["buckets"], b["classes"], b["total_bytes"]), (at, exact)
    totals = [(h["total_count"], h["total_bytes"])
              for h in (hist.live_hist(new, [1], at) for at in (25_000, 45_000, 65_000))]
    assert totals == [(4, 3 * 40 + 5000), (2, 9000 + 64), (1, 64)]
