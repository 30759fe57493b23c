"""The observability pages' pure parts: time ranges, number formats, SVG charts, waterfall."""

from __future__ import annotations

import re

import pytest

from keel.ui import formatting
from keel.ui.charts import Series, line_chart, meter, nice_ticks
from keel.ui.timerange import RangeError, TimeRange, list_range, parse_range, step_for
from keel.ui.waterfall import SCALE, layout, rows_html

NOW = 1_700_000_123.0


def test_preset_ranges_end_at_the_next_step() -> None:
    hour = parse_range({"range": "1h"}, now=NOW)
    assert hour == TimeRange("1h", 1_700_000_160.0 - 3600, 1_700_000_160.0, 60)
    day = parse_range({}, now=NOW)
    assert (day.key, day.until - day.since, day.step_s) == ("24h", 86_400, 1800)
    week = parse_range({"range": "7d"}, now=NOW)
    assert (week.step_s, (week.until - week.since) / week.step_s) == (3 * 3600, 56)
    assert hour.query(model="m", customer=None) == "range=1h&model=m"


def test_custom_ranges() -> None:
    tr = parse_range({"range": "custom", "since": "2023-11-14T22:00", "until": "1700000000"})
    assert (tr.since, tr.until, tr.step_s) == (1_699_999_200.0, 1_700_000_000.0, 60)
    assert tr.params == {
        "range": "custom",
        "since": "2023-11-14T22:00",
        "until": "2023-11-14T22:13",
    }
    zoned = parse_range({"range": "custom", "since": "2023-11-14T23:00+01:00"}, now=NOW)
    assert (zoned.since, zoned.until) == (1_699_999_200.0, NOW)
    for bad in (
        {"range": "2h"},
        {"range": "custom"},
        {"range": "custom", "since": "soon"},
        {"range": "custom", "since": "2023-11-15", "until": "2023-11-14"},
        {"range": "custom", "since": "2000-01-01", "until": "2023-11-14"},
    ):
        with pytest.raises(RangeError):
            parse_range(bad, now=NOW)
    assert list_range({}) is None and list_range({"range": "all"}) is None
    assert list_range({"range": "1h"}, now=NOW) == parse_range({"range": "1h"}, now=NOW)
    assert [step_for(s) for s in (3600, 86_400, 400 * 86_400)] == [60, 1800, 7 * 86_400]


def test_formats() -> None:
    f = formatting
    assert [f.count(v) for v in (None, 0, 1234, 2.5, 1_234_567)] == [
        "—",
        "0",
        "1,234",
        "2.50",
        "1.23M",
    ]
    assert [f.duration(v) for v in (None, 0.25, 850, 1250, 150_000)] == [
        "—",
        "0.25 ms",
        "850 ms",
        "1.25 s",
        "2.5 min",
    ]
    assert [f.usd(v) for v in (None, 0, 0.0042, 0.00001234, 12.345, 1234.5)] == [
        "—",
        "$0",
        "$0.0042",
        "$1.2e-05",
        "$12.35",
        "$1,234",
    ]
    assert [f.pct(v) for v in (None, 0.25, 0.0123)] == ["—", "25%", "1.23%"]
    assert f.timestamp("2023-11-14T22:13:20.5Z") == "2023-11-14 22:13:20 UTC"
    assert f.timestamp(1_700_000_000, seconds=False) == "2023-11-14 22:13 UTC"
    assert [f.metric_unit(m) for m in ("error_rate", "latency_p95", "cost_usd", "tokens")] == [
        "pct",
        "ms",
        "usd",
        "count",
    ]
    assert f.pretty_json({"a": [1]}) == '{\n  "a": [\n    1\n  ]\n}' and f.pretty_json("x") == "x"


def test_nice_ticks() -> None:
    assert nice_ticks(0) == [0.0, 1.0]
    assert nice_ticks(97) == [0, 25, 50, 75, 100]
    assert nice_ticks(0.0123) == [0, 0.005, 0.01, 0.015]
    assert nice_ticks(4) == [0, 1, 2, 3, 4]


def test_line_chart_escapes_labels_and_breaks_at_gaps() -> None:
    times = [0.0, 60.0, 120.0, 180.0]
    svg = line_chart(
        "Req <b>",
        times,
        [Series("a<script>", [1, None, 3, 4]), Series("b", [0, 0, 1, None])],
        "count",
        area=True,
        step_s=60,
    )
    assert "<script>" not in svg and "<b>" not in svg
    assert "a&lt;script&gt;" in svg and 'aria-label="Req &lt;b&gt;"' in svg
    lines = re.findall(r'<path class="line (s\d)" d="([^"]+)"', svg)
    assert [cls for cls, _ in lines] == ["s0", "s1"]
    assert lines[0][1].count("M") == 1 and lines[0][1].count("L") == 1  # 3→4 only
    assert svg.count('<circle class="dot s0"') == 1  # the lone first point
    assert svg.count('class="hover"') == 4
    assert "00:00 UTC: a&lt;script&gt; 1 · b 0" in svg
    assert " style=" not in svg
    empty = line_chart("Cost", [], [Series("cost", [])], "usd")
    assert "<path" not in empty and "<svg" in empty


def test_meter() -> None:
    assert 'class="bar" width="50.00"' in meter(5, 10)
    assert 'class="bar" width="0.00"' in meter(None, 10)
    assert 'class="bar" width="100.00"' in meter(50, 10)
    assert 'class="bar" width="0.00"' in meter(3, None)


def _span(
    span_id: str, parent: str | None, start: float, ms: float, **extra: object
) -> dict[str, object]:
    return {
        "span_id": span_id,
        "parent_span_id": parent,
        "name": f"span {span_id}",
        "kind": "span",
        "source": "otlp",
        "status": "ok",
        "error": None,
        "start_unix": start,
        "duration_ms": ms,
        **extra,
    }


def test_waterfall_tree_order_and_bars() -> None:
    spans = [
        _span("root", None, 100.0, 1000.0),
        _span("late", "root", 100.6, 400.0, status="error"),
        _span("early", "root", 100.1, 200.0),
        _span("child", "early", 100.15, 0.0, source="gateway"),
        _span("orphan", "missing", 100.5, 100.0),
    ]
    w = layout(spans)
    # depth first, children by start; a span whose parent is missing is a root of its own
    assert [(r.span["span_id"], r.depth) for r in w.rows] == [
        ("root", 0),
        ("early", 1),
        ("child", 2),
        ("late", 1),
        ("orphan", 0),
    ]
    rows = {r.span["span_id"]: r for r in w.rows}
    assert w.total_ms == pytest.approx(1000.0)
    assert (rows["root"].x, rows["root"].width) == (0.0, SCALE)
    assert (rows["early"].x, rows["early"].width) == (100.0, 200.0)
    assert rows["child"].width == 2.0 and rows["child"].gateway
    assert rows["late"].error and not rows["early"].error
    assert [t[1] for t in w.ticks] == pytest.approx([0, 250, 500, 750, 1000])


def test_waterfall_survives_cycles_depth_and_empty() -> None:
    assert layout([]).rows == []
    cycle = layout([_span("a", "b", 1.0, 1.0), _span("b", "a", 1.0, 1.0)])
    assert sorted(r.span["span_id"] for r in cycle.rows) == ["a", "b"]
    chain = [_span("s0", None, 0.0, 10.0)] + [
        _span(f"s{i}", f"s{i - 1}", i / 1000, 1.0) for i in range(1, 3000)
    ]
    deep = layout(chain)
    assert deep.rows[-1].depth == 2999 and deep.rows[-1].indent == 16


def test_waterfall_rows_escape_everything_from_the_trace() -> None:
    spans = [
        _span("root", None, 1.0, 10.0, name="<script>alert(1)</script>", kind='llm"><b'),
        _span("gw", "root", 1.002, 4.0, source="gateway", status="error", kind="llm"),
    ]
    html = rows_html(layout(spans), selected="gw")
    assert "<script>" not in html and "<b" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'class="k-llm&#34;&gt;&lt;b"' in html
    rows = re.findall(r'<tr id="row-(\w+)" class="([^"]+)"><td class="wf-name i(\d+)">', html)
    assert rows == [("root", "k-llm&#34;&gt;&lt;b", "0"), ("gw", "k-llm err sel", "1")]
    assert '<a href="?span=gw#row-gw">' in html and "badge gw" in html
    assert '<rect x="200.0" width="400.0" height="10"/>' in html
