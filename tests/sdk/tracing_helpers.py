"""Helpers for keel.sdk tracing tests: spans as whole, comparable records."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import keel.sdk

# Attributes every span carries whose values vary by machine or run.
VOLATILE = {"code.function.name"}


def finished(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    assert keel.sdk.flush(5)
    return sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)


def span_dict(span: ReadableSpan, by_id: dict[int, str]) -> dict[str, Any]:
    """A span as a whole record: parent by name, attributes, status and events."""
    parent = by_id.get(span.parent.span_id) if span.parent is not None else None
    attrs = {k: v for k, v in (span.attributes or {}).items() if k not in VOLATILE}
    for key in ("keel.tags", "gen_ai.response.finish_reasons", "gen_ai.request.stop_sequences"):
        if key in attrs:
            attrs[key] = list(attrs[key])  # type: ignore[arg-type]
    out: dict[str, Any] = {"name": span.name, "parent": parent, "attributes": attrs}
    out["status"] = span.status.status_code.name
    if span.status.description:
        out["status_description"] = span.status.description
    if span.events:
        out["events"] = [
            {"name": e.name, "type": (e.attributes or {}).get("exception.type")}
            for e in span.events
        ]
    return out


def tree(spans: Sequence[ReadableSpan], one_trace: bool = True) -> list[dict[str, Any]]:
    """All spans (start order) as dicts; by default they must share one trace."""
    if one_trace:
        assert len({s.context.trace_id for s in spans if s.context}) <= 1, "spans span traces"
    by_id = {s.context.span_id: s.name for s in spans if s.context}
    return [span_dict(s, by_id) for s in spans]


def parsed(value: Any) -> Any:
    assert isinstance(value, str)
    return json.loads(value)
