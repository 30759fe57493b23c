"""How the pages write numbers, money, durations and times: pure functions, also Jinja filters.

A missing value (None: no data, or an unknown price) is shown as "—", never as a made-up 0.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

__all__ = [
    "NONE",
    "count",
    "duration",
    "fmt",
    "metric_unit",
    "payload",
    "pct",
    "pretty_json",
    "timestamp",
    "usd",
]

NONE = "—"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def count(value: float | None) -> str:
    """1234 → "1,234"; 1_234_567 → "1.23M"; fractions keep two digits."""
    if _missing(value):
        return NONE
    assert value is not None
    size = abs(value)
    if size >= 1_000_000_000:
        return f"{value / 1_000_000_000:.3g}B"
    if size >= 1_000_000:
        return f"{value / 1_000_000:.3g}M"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def duration(value: float | None) -> str:
    """Milliseconds: "850 ms", "1.25 s", "2.5 min"."""
    if _missing(value):
        return NONE
    assert value is not None
    if value == 0:
        return "0 ms"
    if abs(value) < 1:
        return f"{value:.2f} ms"
    if abs(value) < 1000:
        return f"{value:.0f} ms"
    if abs(value) < 60_000:
        return f"{value / 1000:.3g} s"
    return f"{value / 60_000:.3g} min"


def usd(value: float | None) -> str:
    """Dollars with the digits that matter: "$12.35", "$0.0042", "$0"."""
    if _missing(value):
        return NONE
    assert value is not None
    if value == 0:
        return "$0"
    if abs(value) >= 100:
        return f"${value:,.0f}"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    return f"${value:.2g}" if abs(value) < 0.0001 else f"${value:.4f}".rstrip("0")


def pct(value: float | None) -> str:
    """A fraction as a percentage: 0.0123 → "1.23%"."""
    if _missing(value):
        return NONE
    assert value is not None
    return f"{value * 100:.3g}%"


def fmt(value: float | None, unit: str) -> str:
    """`value` in `unit`: "count", "tokens", "ms", "usd" or "pct"."""
    if unit == "ms":
        return duration(value)
    if unit == "usd":
        return usd(value)
    if unit == "pct":
        return pct(value)
    return count(value)


def metric_unit(metric: str) -> str:
    """The unit of an analytics metric (`keel.analytics.query.METRICS`)."""
    if metric.endswith("_rate"):
        return "pct"
    if metric.startswith(("latency", "ttft")):
        return "ms"
    if metric.startswith("cost"):
        return "usd"
    return "count"


def timestamp(value: str | float | None, seconds: bool = True) -> str:
    """An ISO 8601 string or unix seconds as "2025-01-31 14:05:09 UTC"."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        moment = moment.astimezone(dt.UTC)
    else:
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def payload(body: str | None) -> str | None:
    """A stored payload for reading: JSON indented, anything else as it is."""
    if body is None:
        return None
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body


def pretty_json(value: Any) -> str:
    """A stored value as readable text: strings as they are, anything else as indented JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
