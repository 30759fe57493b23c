"""Request metadata: who a call is for, which pipeline, its tags and its W3C trace context."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RequestMeta", "TraceContext", "parse_meta", "parse_traceparent"]

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_MAX_LABEL = 256
_MAX_TAGS = 32


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    span_id: str  # Keel's own span for this request
    parent_span_id: str | None  # the caller's span, when it sent traceparent
    flags: str = "01"

    def traceparent(self) -> str:
        """The header to send upstream: Keel's span is the parent of whatever the provider does."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


@dataclass(frozen=True, slots=True)
class RequestMeta:
    customer: str | None
    pipeline: str | None
    tags: list[str] = field(default_factory=list)


def parse_traceparent(value: str | None) -> TraceContext:
    """A fresh span in the caller's trace if `traceparent` is valid, else in a new trace."""
    # Trace and span ids need uniqueness, not secrecy: the OpenTelemetry SDK draws them the
    # same way, without a system call per request.
    span_id = f"{random.getrandbits(64) or 1:016x}"
    if value:
        m = _TRACEPARENT.match(value.strip().lower())
        if m and m.group(1) != "ff" and m.group(2) != "0" * 32 and m.group(3) != "0" * 16:
            return TraceContext(m.group(2), span_id, m.group(3), m.group(4))
    return TraceContext(f"{random.getrandbits(128) or 1:032x}", span_id, None)


def _label(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:_MAX_LABEL] or None


def parse_meta(
    headers: dict[str, str], body: dict[str, Any], key_customer: str | None
) -> RequestMeta:
    """Customer: `x-keel-customer`, else OpenAI's `user` field, else the key's customer."""
    customer = _label(headers.get("x-keel-customer")) or _label(body.get("user")) or key_customer
    tags: list[str] = []
    raw_tags = headers.get("x-keel-tags")
    if raw_tags:
        for tag in raw_tags.split(","):
            tag = tag.strip()[:_MAX_LABEL]
            if tag and tag not in tags:
                tags.append(tag)
            if len(tags) >= _MAX_TAGS:
                break
    return RequestMeta(customer, _label(headers.get("x-keel-pipeline")), tags)
