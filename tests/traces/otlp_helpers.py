"""Builders of OTLP trace exports (protobuf messages and OTLP JSON) for the ingest tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from keel.storage.tables import spans as spans_table
from keel.storage.urls import async_url

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
ROOT = bytes.fromhex("b7ad6b7169203331")
CHILD = bytes.fromhex("00f067aa0ba902b7")
T0 = 1_700_000_000_000_000_000  # unix nanos


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(v) for v in value)
        return out
    if isinstance(value, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(kv(k, v) for k, v in value.items())
        return out
    return AnyValue(string_value=value)


def kv(key: str, value: Any) -> KeyValue:
    return KeyValue(key=key, value=any_value(value))


def pb_span(
    name: str = "span",
    *,
    trace_id: bytes = TRACE,
    span_id: bytes = ROOT,
    parent: bytes = b"",
    attributes: dict[str, Any] | None = None,
    start: int = T0,
    end: int = T0 + 250_000_000,
    status: int = 0,
    message: str = "",
    kind: int = 1,
    events: list[tuple[str, int, dict[str, Any]]] | None = None,
) -> Span:
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=Span.SpanKind.ValueType(kind),
        start_time_unix_nano=start,
        end_time_unix_nano=end,
    )
    span.status.code = status  # type: ignore[assignment]
    span.status.message = message
    span.attributes.extend(kv(k, v) for k, v in (attributes or {}).items())
    for event_name, at, event_attributes in events or []:
        event = span.events.add(name=event_name, time_unix_nano=at)
        event.attributes.extend(kv(k, v) for k, v in event_attributes.items())
    return span


def pb_export(
    spans: list[Span],
    resource: dict[str, Any] | None = None,
    scope: tuple[str, str] = ("tests", "1.0"),
) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(kv(k, v) for k, v in (resource or {}).items())
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = scope
    ss.spans.extend(spans)
    return request


def json_value(value: Any) -> dict[str, Any]:
    """OTLP JSON AnyValue (lowerCamelCase, int64 as a string)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [json_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": json_attributes(value)}}
    return {"stringValue": value}


def json_attributes(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": json_value(v)} for k, v in attributes.items()]


def json_export(spans: list[dict[str, Any]], resource: dict[str, Any] | None = None) -> Any:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": json_attributes(resource or {})},
                "scopeSpans": [{"scope": {"name": "tests", "version": "1.0"}, "spans": spans}],
            }
        ]
    }


def json_span(
    name: str = "span",
    *,
    trace_id: str = TRACE.hex(),
    span_id: str = ROOT.hex(),
    parent: str = "",
    attributes: dict[str, Any] | None = None,
    start: int = T0,
    end: int = T0 + 250_000_000,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": 3,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "attributes": json_attributes(attributes or {}),
        **extra,
    }


async def _rows(database_url: str) -> list[dict[str, Any]]:
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(spans_table))).mappings().all()
    finally:
        await engine.dispose()
    return [dict(r) for r in rows]


def stored_spans(database_url: str, expect: int, timeout: float = 20) -> dict[str, dict[str, Any]]:
    """The spans table by span id, once it holds `expect` rows (fails after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = asyncio.run(_rows(database_url))
        if len(rows) >= expect or time.monotonic() > deadline:
            assert len(rows) == expect, f"{len(rows)} spans stored, expected {expect}"
            return {r["span_id"]: r for r in rows}
        time.sleep(0.05)


def metric(base_url: str, name: str) -> float:
    """A sample's value from /metrics (0 when absent)."""
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def drained(base_url: str, timeout: float = 20) -> None:
    """Wait until every record and span accepted is in the database."""
    deadline = time.monotonic() + timeout
    while httpx.get(f"{base_url}/healthz").json()["records_pending"] > 0:
        assert time.monotonic() < deadline, "the record pipeline did not drain"
        time.sleep(0.05)
