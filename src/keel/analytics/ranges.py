"""Time ranges of analytics queries: `since`/`until` (unix seconds or ISO 8601) or `range=24h`,
and the step of a series (seconds or "5m", "1h", chosen when not given)."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "RANGES",
    "STEPS",
    "TimeRange",
    "default_step",
    "parse_duration",
    "parse_time",
    "resolve",
]

RANGES = {"15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800, "30d": 2_592_000}
STEPS = (60, 300, 900, 3600, 21600, 86400)  # default steps: whole minutes and hours
DEFAULT_RANGE = "24h"
_TARGET_POINTS = 300
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class TimeRange:
    since: float
    until: float


def parse_time(value: str, name: str) -> float:
    """Unix seconds or an ISO 8601 time (a time without zone is UTC); ValueError otherwise."""
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"`{name}` must be unix seconds or an ISO 8601 time")
        return seconds
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"`{name}` must be unix seconds or an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_duration(value: str, name: str) -> int:
    """ "300", "300s", "5m", "1h", "1d" as whole seconds (at least 1)."""
    match = _DURATION.fullmatch(value.strip())
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"`{name}` must be a whole number of seconds or like 5m, 1h, 1d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def resolve(
    since: str | None, until: str | None, range_: str | None, now: float | None = None
) -> TimeRange:
    """The range asked for: `range` (ending now or at `until`) or `since`..`until` (default now).

    Without either, the last 24 hours.
    """
    end = parse_time(until, "until") if until is not None else (now or time.time())
    if range_ is not None:
        if since is not None:
            raise ValueError("give either `range` or `since`, not both")
        if range_ not in RANGES:
            raise ValueError(f"`range` must be one of: {', '.join(RANGES)}")
        return TimeRange(end - RANGES[range_], end)
    start = parse_time(since, "since") if since is not None else end - RANGES[DEFAULT_RANGE]
    if start >= end:
        raise ValueError("`since` must be before `until`")
    return TimeRange(start, end)


def default_step(span_s: float) -> int:
    """The smallest default step giving at most about 300 points over `span_s` seconds."""
    for step in STEPS:
        if span_s / step <= _TARGET_POINTS:
            return step
    return STEPS[-1] * max(1, math.ceil(span_s / STEPS[-1] / _TARGET_POINTS))
