"""The layout of a trace's timing waterfall: spans in tree order, depth and bar position each.

Linear in the number of spans, with the rows' HTML written here (`rows_html`) rather than in a
template loop, so a trace of thousands of spans renders fast. Bars are positioned in a 0…1000
coordinate system used as each row's SVG viewBox: no inline style is needed under the CSP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

from keel.ui.formatting import duration

__all__ = ["SCALE", "Row", "Waterfall", "layout", "rows_html"]

SCALE = 1000.0  # the width of the bar area, in viewBox units
MAX_DEPTH_CLASS = 16  # deeper spans share the last indentation class (keel.css)
_MIN_BAR = 2.0  # a zero-length span still shows as a sliver
_GATEWAY_TITLE = "a call through Keel's gateway"


@dataclass(slots=True)  # not frozen: a frozen __init__ costs more, per span
class Row:
    span: Mapping[str, Any]
    depth: int
    indent: int  # the CSS indentation class, depth capped
    x: float  # bar start, 0…SCALE
    width: float  # bar width, at least _MIN_BAR
    offset_ms: float  # start relative to the trace's first span
    error: bool
    gateway: bool


@dataclass(frozen=True, slots=True)
class Waterfall:
    rows: list[Row]
    start_unix: float
    total_ms: float
    ticks: list[tuple[float, float]]  # (x in 0…SCALE, milliseconds from the start)


def _tree_order(spans: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], int]]:
    """Depth-first, children in start order (`spans` come in start order). A span whose parent
    is not in the trace is a root; spans caught in a parent cycle (only a malformed trace has
    one) come last, at depth 0."""
    ids = {s["span_id"] for s in spans}
    children: dict[str, list[Mapping[str, Any]]] = {}
    roots: list[Mapping[str, Any]] = []
    for span in spans:
        parent = span["parent_span_id"]
        if parent and parent in ids and parent != span["span_id"]:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)
    ordered: list[tuple[Mapping[str, Any], int]] = []
    seen: set[str] = set()
    stack = [(root, 0) for root in reversed(roots)]
    while stack:
        span, depth = stack.pop()
        span_id = span["span_id"]
        if span_id in seen:
            continue
        seen.add(span_id)
        ordered.append((span, depth))
        kids = children.get(span_id)
        if kids:
            stack.extend((child, depth + 1) for child in reversed(kids))
    if len(ordered) < len(spans):
        ordered.extend((s, 0) for s in spans if s["span_id"] not in seen)
    return ordered


def _start(span: Mapping[str, Any]) -> float:
    return span["start_unix"] or 0.0


def layout(spans: Sequence[Mapping[str, Any]]) -> Waterfall:
    """The waterfall of a trace's spans (dicts with span_id, parent_span_id, start_unix,
    duration_ms, status, error, source)."""
    if not spans:
        return Waterfall([], 0.0, 0.0, [])
    spans = sorted(spans, key=_start)
    start = _start(spans[0])
    end = max(_start(s) + (s["duration_ms"] or 0.0) / 1000.0 for s in spans)
    total_ms = max((end - start) * 1000.0, 0.001)
    per_ms = SCALE / total_ms
    rows = []
    for span, depth in _tree_order(spans):
        offset = (_start(span) - start) * 1000.0
        width = max((span["duration_ms"] or 0.0) * per_ms, _MIN_BAR)
        rows.append(
            Row(
                span,
                depth,
                depth if depth < MAX_DEPTH_CLASS else MAX_DEPTH_CLASS,
                round(min(offset * per_ms, SCALE - width), 1),
                round(width, 1),
                offset,
                span["status"] == "error" or bool(span["error"]),
                span["source"] == "gateway",
            )
        )
    ticks = [(SCALE * i / 4, total_ms * i / 4) for i in range(5)]
    return Waterfall(rows, start, total_ms, ticks)


def rows_html(waterfall: Waterfall, selected: str | None) -> Markup:
    """The waterfall's table rows. Written here rather than in a template loop so that a
    5,000-span trace renders in milliseconds; every value from the trace goes through `escape`.
    A row links to `?span=<id>`, which renders the page again with that span's panel."""
    out = []
    for row in waterfall.rows:
        span = row.span
        span_id = str(span["span_id"])
        ref = escape(quote(span_id, safe=""))
        kind = escape(span["kind"] or "span")
        classes = f"k-{kind}"
        marks = ""
        if row.error:
            classes += " err"
            marks = '<span class="err-mark" title="error">error</span> '
        if row.gateway:
            marks += f'<span class="badge gw" title="{_GATEWAY_TITLE}">gateway</span> '
        if span_id == selected:
            classes += " sel"
        out.append(
            f'<tr id="row-{escape(span_id)}" class="{classes}">'
            f'<td class="wf-name i{row.indent}">{marks}'
            f'<a href="?span={ref}#row-{ref}">{escape(span["name"])}</a> '
            f'<span class="kind">{kind}</span></td>'
            f'<td class="wf-dur">{duration(span["duration_ms"])}</td>'
            f'<td class="wf-bar"><svg viewBox="0 0 {SCALE:g} 10" preserveAspectRatio="none" '
            f'aria-hidden="true"><rect x="{row.x}" width="{row.width}" height="10"/></svg></td>'
            "</tr>\n"
        )
    return Markup("".join(out))  # noqa: S704 - every value above is escaped or ours
