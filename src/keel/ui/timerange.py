"""The time range of a dashboard page, read from its query string.

`?range=1h|24h|7d|30d` ends now (default 24h; list pages default to `all`, no limit);
`?range=custom&since=…&until=…` takes two times (unix seconds, or ISO 8601 / the browser's
`datetime-local` value, read as UTC). The step of the charts follows from the span so that a
chart has about sixty points.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

__all__ = ["PRESETS", "RangeError", "TimeRange", "list_range", "parse_range", "parse_time"]

PRESETS: dict[str, int] = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}
_DEFAULT = "24h"
_MAX_SPAN_S = 400 * 86_400
_STEPS = (60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86_400, 7 * 86_400)
_TARGET_POINTS = 60


class RangeError(ValueError):
    """A query string that names no usable range; the message says why."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    key: str  # a PRESETS key or "custom"
    since: float  # unix seconds, inclusive
    until: float  # exclusive
    step_s: int  # the charts' bucket width

    @property
    def params(self) -> dict[str, str]:
        """The query parameters that give this range back (for links that keep it)."""
        if self.key != "custom":
            return {"range": self.key}
        return {"range": "custom", "since": _local(self.since), "until": _local(self.until)}

    def query(self, **extra: str | None) -> str:
        """`range=…` plus `extra` (None values left out), URL-encoded."""
        merged = {**self.params, **{k: v for k, v in extra.items() if v is not None}}
        return urlencode(merged)

    @property
    def since_input(self) -> str:
        return _local(self.since)

    @property
    def until_input(self) -> str:
        return _local(self.until)


def _local(ts: float) -> str:
    """The `datetime-local` input value of a unix time (UTC)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M")


def parse_time(value: str, name: str) -> float:
    """Unix seconds from unix seconds or ISO 8601 (no zone: UTC); RangeError otherwise."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RangeError(f"`{name}` must be unix seconds or a date and time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def step_for(span_s: float) -> int:
    """The smallest bucket width that keeps a chart of `span_s` near sixty points."""
    for step in _STEPS:
        if span_s / step <= _TARGET_POINTS * 1.5:
            return step
    return _STEPS[-1]


def parse_range(params: Mapping[str, str], now: float | None = None) -> TimeRange:
    """The range a page's query string asks for (see the module docstring)."""
    now = time.time() if now is None else now
    key = params.get("range") or _DEFAULT
    if key in PRESETS:
        span = PRESETS[key]
        step = step_for(span)
        # end on the next step boundary so the last bucket is the current one, complete
        until = (now // step + 1) * step
        return TimeRange(key, until - span, until, step)
    if key != "custom":
        raise RangeError(f"`range` must be one of {', '.join(PRESETS)} or custom")
    since_raw, until_raw = params.get("since"), params.get("until")
    if not since_raw:
        raise RangeError("a custom range needs `since`")
    since = parse_time(since_raw, "since")
    until = parse_time(until_raw, "until") if until_raw else now
    if until <= since:
        raise RangeError("`until` must be after `since`")
    if until - since > _MAX_SPAN_S:
        raise RangeError("a custom range can span at most 400 days")
    return TimeRange("custom", since, until, step_for(until - since))


def list_range(params: Mapping[str, str], now: float | None = None) -> TimeRange | None:
    """The range of a list page, where the default (and `range=all`) is no time limit."""
    if params.get("range") in (None, "", "all"):
        return None
    return parse_range(params, now)
