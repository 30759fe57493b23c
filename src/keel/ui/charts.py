"""Charts drawn on the server as inline SVG: time series (lines or areas) and bar meters.

No script and no inline style: positions are SVG attributes and colours are classes of
keel.css (`s0`…`s5`), so the charts work offline and under the UI's CSP. Every label goes
through `escape`; numbers are formatted here. Hovering a time bucket shows its values (an SVG
`<title>`), without JavaScript.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from keel.ui.formatting import fmt

__all__ = ["Series", "line_chart", "meter", "nice_ticks"]

_W, _H = 540, 200
_LEFT, _RIGHT, _TOP, _BOTTOM = 62, 10, 10, 24
_PLOT_H = _H - _TOP - _BOTTOM
_X_LABELS = 6


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    values: Sequence[float | None]  # one per time, None where there is no data


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """0 and `count` evenly spaced round numbers whose last is at least `top`."""
    if not math.isfinite(top) or top <= 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    steps = math.ceil(top / step - 1e-9)
    return [i * step for i in range(steps + 1)]


def _time_format(span_s: float) -> str:
    if span_s <= 2 * 86_400:
        return "%H:%M"
    if span_s <= 14 * 86_400:
        return "%m-%d %H:%M"
    return "%Y-%m-%d"


def _label_time(ts: float, pattern: str) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime(pattern)


def _runs(points: list[tuple[float, float] | None]) -> list[list[tuple[float, float]]]:
    """The unbroken stretches of the points (a None breaks the line)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for point in points:
        if point is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(point)
    return [run for run in runs if run]


def _line(run: list[tuple[float, float]]) -> str:
    return "M" + "L".join(f"{x:.1f},{y:.1f}" for x, y in run)


def _area(run: list[tuple[float, float]], base: float) -> str:
    return f"{_line(run)}L{run[-1][0]:.1f},{base:.1f}L{run[0][0]:.1f},{base:.1f}Z"


def line_chart(
    title: str,
    times: Sequence[float],
    series: Sequence[Series],
    unit: str,
    *,
    area: bool = False,
    step_s: float | None = None,
    width: int = _W,
) -> Markup:
    """A time-series chart with axes, gridlines, a legend and per-bucket hover values."""
    n = len(times)
    values = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    ticks = nice_ticks(max(values, default=0.0))
    top = ticks[-1]
    step = step_s if step_s is not None else (times[1] - times[0] if n > 1 else 60.0)
    span = max(step * n, 1.0)

    plot_w = width - _LEFT - _RIGHT

    def x(i: float) -> float:
        return _LEFT + plot_w * (i + 0.5) * step / span

    def y(v: float) -> float:
        return _TOP + _PLOT_H * (1 - v / top)

    out = [
        f'<figure class="chart"><svg viewBox="0 0 {width} {_H}" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet">'
    ]
    out.append(f"<title>{escape(title)}</title>")
    for tick in ticks:
        ty = y(tick)
        out.append(
            f'<line class="grid" x1="{_LEFT}" x2="{width - _RIGHT}" y1="{ty:.1f}" y2="{ty:.1f}"/>'
            f'<text class="axis" x="{_LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end">'
            f"{escape(fmt(tick, unit))}</text>"
        )
    pattern = _time_format(span)
    every = max(1, math.ceil(n / _X_LABELS))
    for i in range(0, n, every):
        out.append(
            f'<text class="axis" x="{x(i):.1f}" y="{_H - 8}" text-anchor="middle">'
            f"{escape(_label_time(times[i], pattern))}</text>"
        )
    base = y(0)
    for index, s in enumerate(series):
        cls = f"s{index % 6}"
        points = [
            None if v is None or not math.isfinite(v) else (x(i), y(v))
            for i, v in enumerate(s.values)
        ]
        runs = _runs(points)
        if area and runs:
            fill = "".join(_area(run, base) for run in runs)
            out.append(f'<path class="area {cls}" d="{fill}"/>')
        lines = [run for run in runs if len(run) > 1]
        if lines:
            out.append(f'<path class="line {cls}" d="{"".join(_line(run) for run in lines)}"/>')
        out.extend(
            f'<circle class="dot {cls}" cx="{run[0][0]:.1f}" cy="{run[0][1]:.1f}" r="3"/>'
            for run in runs
            if len(run) == 1
        )
    out.append(
        f'<line class="axis-line" x1="{_LEFT}" x2="{width - _RIGHT}" '
        f'y1="{base:.1f}" y2="{base:.1f}"/>'
    )
    bucket_w = plot_w * step / span
    for i in range(n):
        hover = " · ".join(
            f"{s.label} {fmt(s.values[i] if i < len(s.values) else None, unit)}" for s in series
        )
        when = _label_time(times[i], "%Y-%m-%d %H:%M UTC")
        out.append(
            f'<rect class="hover" x="{x(i) - bucket_w / 2:.1f}" y="{_TOP}" width="{bucket_w:.1f}" '
            f'height="{_PLOT_H}"><title>{escape(when)}: {escape(hover)}</title></rect>'
        )
    out.append("</svg>")
    if series:
        out.append('<figcaption><ul class="legend">')
        out.extend(
            f'<li><span class="swatch s{i % 6}"></span>{escape(s.label)}</li>'
            for i, s in enumerate(series)
        )
        out.append("</ul></figcaption>")
    out.append("</figure>")
    return Markup("".join(out))  # noqa: S704 - built from escaped labels and our own numbers


def meter(value: float | None, top: float | None) -> Markup:
    """A horizontal bar: `value` as a share of `top` (a row of a bar list)."""
    share = 0.0
    if value is not None and top and top > 0 and math.isfinite(value):
        share = max(0.0, min(1.0, value / top))
    return Markup(  # noqa: S704 - numbers only
        '<svg class="meter" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">'
        f'<rect class="track" width="100" height="10"/>'
        f'<rect class="bar" width="{share * 100:.2f}" height="10"/></svg>'
    )
