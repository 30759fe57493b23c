"""What an alert rule is, and what makes one valid: pure values, no storage, no network.

A rule watches one analytics metric (`keel.analytics.query.METRICS`) over a sliding window,
compares it with a threshold and notifies its channels when the condition has held for `for_s`
seconds, then again when it stops holding. Channel URLs are set by admins only, so any http or
https address is accepted (there is no SSRF guard beyond the scheme); a URL carries secrets (a
Slack webhook's path is its token), so outside the database it only ever appears redacted to
`scheme://host/…`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import httpx

from keel.analytics.query import METRICS, Filters

__all__ = [
    "CHANNEL_TYPES",
    "COMPARATORS",
    "FILTER_FIELDS",
    "STATES",
    "Channel",
    "Rule",
    "RuleError",
    "check_channels",
    "check_filters",
    "check_rule",
    "holds",
    "redact_url",
]

COMPARATORS = (">", ">=", "<", "<=")
CHANNEL_TYPES = ("webhook", "slack")
STATES = ("ok", "pending", "firing")
FILTER_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Filters))

MAX_WINDOW_S = 31 * 86_400
MAX_FOR_S = 7 * 86_400
MAX_CHANNELS = 10
MAX_URL = 2048
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

State = Literal["ok", "pending", "firing"]


class RuleError(ValueError):
    """A rule field that is not valid; the message names the field and what it takes."""


def redact_url(url: str) -> str:
    """`scheme://host[:port]/…`: enough to recognise a channel, nothing of its secret."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "(invalid URL)"
    if not parsed.scheme or not parsed.host:
        return "(invalid URL)"
    host = parsed.host
    if parsed.port is not None:
        host = f"{host}:{parsed.port}"
    return f"{parsed.scheme}://{host}/…"


@dataclass(frozen=True, slots=True)
class Channel:
    """Where a notification goes: a generic JSON webhook or a Slack-compatible webhook."""

    type: Literal["webhook", "slack"]
    url: str = field(repr=False)

    @property
    def redacted(self) -> str:
        return redact_url(self.url)

    def to_dict(self) -> dict[str, str]:
        """JSON-ready, with the URL redacted."""
        return {"type": self.type, "url": self.redacted}


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    name: str
    metric: str
    filters: Mapping[str, str]
    window_s: int
    comparator: str
    threshold: float
    for_s: int
    channels: tuple[Channel, ...]
    enabled: bool
    state: State = "ok"
    state_since: float | None = None
    last_value: float | None = None
    last_evaluated_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    def query_filters(self) -> Filters:
        return Filters(**dict(self.filters))

    def condition(self) -> str:
        """`error_rate > 0.5 over 60 s` (with the filters, if any)."""
        where = ", ".join(f"{k}={v}" for k, v in sorted(self.filters.items()))
        text = f"{self.metric} {self.comparator} {self.threshold:g} over {self.window_s} s"
        return f"{text} ({where})" if where else text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, channel URLs redacted."""
        return {
            "id": self.id,
            "name": self.name,
            "metric": self.metric,
            "filters": dict(self.filters),
            "window_s": self.window_s,
            "comparator": self.comparator,
            "threshold": self.threshold,
            "for_s": self.for_s,
            "channels": [c.to_dict() for c in self.channels],
            "enabled": self.enabled,
            "state": self.state,
            "state_since": self.state_since,
            "last_value": self.last_value,
            "last_evaluated_at": self.last_evaluated_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def holds(value: float | None, comparator: str, threshold: float) -> bool:
    """Whether `value comparator threshold`; no data (None) never holds."""
    if value is None or math.isnan(value):
        return False
    if comparator == ">":
        return value > threshold
    if comparator == ">=":
        return value >= threshold
    if comparator == "<":
        return value < threshold
    if comparator == "<=":
        return value <= threshold
    raise RuleError(f"comparator must be one of {' '.join(COMPARATORS)}, got {comparator!r}")


def check_filters(raw: Mapping[str, Any] | None) -> dict[str, str]:
    """The filters as {field: value}, empty values dropped; RuleError on an unknown field."""
    out: dict[str, str] = {}
    for key, value in (raw or {}).items():
        if key not in FILTER_FIELDS:
            raise RuleError(f"unknown filter {key!r}: use {', '.join(FILTER_FIELDS)}")
        if value is None or value == "":
            continue
        if not isinstance(value, str) or len(value) > 256:
            raise RuleError(f"filter {key} takes a string of at most 256 characters")
        out[key] = value
    if out.get("source") not in {None, "gateway", "otlp"}:
        raise RuleError("filter source is gateway or otlp")
    return out


def _check_url(url: Any, where: str) -> str:
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise RuleError(f"{where}.url must be an http or https URL of at most {MAX_URL} characters")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise RuleError(f"{where}.url is not a valid URL") from None
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise RuleError(f"{where}.url must be an http:// or https:// URL with a host")
    return url


def check_channels(raw: Sequence[Any] | None) -> tuple[Channel, ...]:
    """The channels, validated; RuleError names the first bad one (without its URL)."""
    items = list(raw or [])
    if len(items) > MAX_CHANNELS:
        raise RuleError(f"a rule has at most {MAX_CHANNELS} channels")
    out = []
    for i, item in enumerate(items):
        where = f"channels[{i}]"
        if isinstance(item, Channel):
            item = {"type": item.type, "url": item.url}
        if not isinstance(item, Mapping) or set(item) - {"type", "url"}:
            raise RuleError(f"{where} is {{type: webhook|slack, url: ...}}")
        kind = item.get("type")
        if kind not in CHANNEL_TYPES:
            raise RuleError(f"{where}.type must be webhook or slack, got {kind!r}")
        out.append(Channel(kind, _check_url(item.get("url"), where)))
    return tuple(out)


def _check_number(name: str, value: Any, low: int | None = None, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RuleError(f"{name} must be a finite number")
    if low is not None and high is not None and not low <= value <= high:
        raise RuleError(f"{name} must be between {low} and {high}, got {value}")


def check_rule(rule: Rule) -> Rule:
    """The rule if every field is valid, else RuleError naming the first bad field."""
    if not _NAME.fullmatch(rule.name):
        raise RuleError(
            "name is 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter "
            "or digit"
        )
    if rule.metric not in METRICS:
        raise RuleError(f"unknown metric {rule.metric!r}: use one of {', '.join(METRICS)}")
    if rule.comparator not in COMPARATORS:
        raise RuleError(f"comparator must be one of {' '.join(COMPARATORS)}")
    _check_number("window_s", rule.window_s, 1, MAX_WINDOW_S)
    _check_number("for_s", rule.for_s, 0, MAX_FOR_S)
    _check_number("threshold", rule.threshold)
    if int(rule.window_s) != rule.window_s or int(rule.for_s) != rule.for_s:
        raise RuleError("window_s and for_s are whole seconds")
    check_filters(rule.filters)
    check_channels(rule.channels)
    return rule
