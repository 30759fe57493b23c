"""OTLP trace exports (protobuf and JSON) decoded into neutral spans, with every size capped.

Decoding never trusts the sender: strings longer than the attribute cap are cut and marked,
values nested deeper than `MAX_DEPTH` become a marker string, attribute, event and array counts
are capped (what was dropped is counted), and attribute keys stay data. A span with bad ids is
rejected on its own (the export's partial success names it); a body that cannot be decoded at
all raises `MalformedExport`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

try:
    from keel.traces import _otlp_wire
except ImportError:  # installed without a C compiler: the reference decoder does all the work
    _otlp_wire = None  # type: ignore[assignment]

__all__ = [
    "DEEP_MARKER",
    "FAST_DECODE",
    "MAX_DEPTH",
    "TRUNCATED_MARKER",
    "Decoded",
    "Limits",
    "MalformedExport",
    "OtlpEvent",
    "OtlpSpan",
    "decode_json",
    "decode_protobuf",
    "protobuf_spans",
]

MAX_DEPTH = 8  # array/kvlist nesting kept; deeper values become DEEP_MARKER
MAX_KEY_LENGTH = 1024  # an attribute key longer than this is cut (and marked)
TRUNCATED_MARKER = "…[truncated]"
DEEP_MARKER = f"[truncated: nested deeper than {MAX_DEPTH} levels]"
_MAX_ERRORS = 5  # distinct span errors named in a partial success message

STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
_SPAN_KINDS = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


class MalformedExport(ValueError):
    """The body is not an OTLP trace export (HTTP 400); the message says why."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_value_length: int = 16 * 1024  # characters of one string value (bytes: base64 text)
    max_attributes: int = 128  # per span, event, link, kvlist; also items per array
    max_events: int = 128  # events per span; also links per span


@dataclass(slots=True)
class OtlpEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(slots=True)
class OtlpSpan:
    trace_id: str  # 32 lower-case hex digits
    span_id: str  # 16 lower-case hex digits
    parent_span_id: str | None
    name: str
    kind: int  # OTLP SpanKind (1 internal, 2 server, 3 client, 4 producer, 5 consumer)
    start_ns: int
    end_ns: int
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    attributes: dict[str, Any]  # the resource's attributes overlaid with the span's
    scope: tuple[str, str]  # instrumentation scope (name, version)
    events: list[OtlpEvent] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    dropped_attributes: int = 0  # the sender's count plus what Keel cut
    dropped_events: int = 0
    dropped_links: int = 0


@dataclass(slots=True)
class Decoded:
    spans: list[OtlpSpan] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < _MAX_ERRORS and message not in self.errors:
            self.errors.append(message)

    @property
    def error_message(self) -> str:
        if not self.rejected:
            return ""
        more = " …" if self.rejected > len(self.errors) else ""
        return f"{self.rejected} span(s) rejected: " + "; ".join(self.errors) + more


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + TRUNCATED_MARKER


# -- protobuf -----------------------------------------------------------------------------------

_SCALARS = frozenset({"int_value", "bool_value", "double_value"})


def _pb_value(value: AnyValue, limits: Limits, depth: int) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text = value.string_value
        return text if len(text) <= limits.max_value_length else _cut(text, limits.max_value_length)
    if kind in _SCALARS:
        return getattr(value, kind)
    if kind is None:
        return None
    if depth >= MAX_DEPTH:
        return DEEP_MARKER
    if kind == "array_value":
        items = value.array_value.values
        if len(items) > limits.max_attributes:
            items = items[: limits.max_attributes]
        out = []
        max_length = limits.max_value_length
        for item in items:
            text = item.string_value  # the common case, as in _pb_attributes
            if text and len(text) <= max_length:
                out.append(text)
            else:
                out.append(_pb_value(item, limits, depth + 1))
        return out
    if kind == "kvlist_value":
        return _pb_attributes(value.kvlist_value.values, limits, depth + 1)[0]
    # bytes_value: base64, as the OTLP JSON encoding writes bytes
    raw = value.bytes_value[: limits.max_value_length]
    text = base64.b64encode(raw).decode()
    return text + TRUNCATED_MARKER if len(value.bytes_value) > len(raw) else text


def _pb_attributes(
    pairs: Any, limits: Limits, depth: int = 0, into: dict[str, Any] | None = None
) -> tuple[dict[str, Any], int]:
    """The attributes as a dict (added to `into`), and how many were dropped over the cap."""
    if len(pairs) > limits.max_attributes:
        kept = pairs[: limits.max_attributes]
        dropped = len(pairs) - limits.max_attributes
    else:
        kept, dropped = pairs, 0
    out: dict[str, Any] = {} if into is None else into
    max_length = limits.max_value_length
    # This loop runs for every attribute of every span (twenty thousand spans a second): the
    # common case, a short string, costs no function call and no WhichOneof.
    for kv in kept:
        key = kv.key
        if len(key) > MAX_KEY_LENGTH:
            key = _cut(key, MAX_KEY_LENGTH)
        value = kv.value
        text = value.string_value
        if text:
            out[key] = text if len(text) <= max_length else _cut(text, max_length)
            continue
        kind = value.WhichOneof("value")
        if kind in _SCALARS:
            out[key] = getattr(value, kind)
        elif kind == "string_value":
            out[key] = ""
        else:
            out[key] = _pb_value(value, limits, depth)
    return out, dropped


def _pb_id(raw: bytes, size: int) -> str | None:
    """Lower-case hex of a valid id; None when it is not `size` bytes or all zero."""
    if len(raw) != size or not raw.strip(b"\0"):
        return None
    return raw.hex()


def decode_protobuf(body: bytes, limits: Limits) -> Decoded:
    """Decode an `ExportTraceServiceRequest`; raises MalformedExport."""
    out = Decoded()
    out.spans.extend(protobuf_spans(body, limits, out))
    return out


def protobuf_spans(body: bytes, limits: Limits, out: Decoded) -> Iterator[OtlpSpan]:
    """The spans of an `ExportTraceServiceRequest`, decoded one at a time as they are taken
    (rejected ones are counted in `out`); raises MalformedExport at once for a bad body.

    The C fast path decodes the whole body at once when it can; whatever it leaves (None: a
    malformed body, a rejected span, anything unusual) the reference decoder below decodes."""
    if FAST_DECODE:
        spans = _otlp_wire.decode_spans(
            body, limits.max_value_length, limits.max_attributes, limits.max_events
        )
        if spans is not None:
            return iter(spans)
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise MalformedExport(f"the body is not an OTLP ExportTraceServiceRequest: {exc}") from None
    return _pb_spans(request, limits, out)


def _pb_spans(request: Any, limits: Limits, out: Decoded) -> Iterator[OtlpSpan]:
    for resource_spans in request.resource_spans:
        resource, _ = _pb_attributes(resource_spans.resource.attributes, limits)
        for scope_spans in resource_spans.scope_spans:
            scope = (
                _cut(scope_spans.scope.name, 256),
                _cut(scope_spans.scope.version, 256),
            )
            for span in scope_spans.spans:
                decoded = _pb_span(span, resource, scope, limits, out)
                if decoded is not None:
                    yield decoded


def _pb_span(
    span: Any, resource: dict[str, Any], scope: tuple[str, str], limits: Limits, out: Decoded
) -> OtlpSpan | None:
    trace_id = _pb_id(span.trace_id, 16)
    span_id = _pb_id(span.span_id, 8)
    if trace_id is None or span_id is None:
        which = "trace_id (16 bytes)" if trace_id is None else "span_id (8 bytes)"
        out.reject(f"invalid {which} in span {_cut(span.name, 64)!r}")
        return None
    parent = span.parent_span_id
    parent_id = _pb_id(parent, 8) if parent else None
    if parent and len(parent) != 8:
        out.reject(f"invalid parent_span_id (8 bytes) in span {_cut(span.name, 64)!r}")
        return None
    attributes, dropped = _pb_attributes(span.attributes, limits, into=dict(resource))
    status = span.status
    # Positional: keyword arguments cost a third of the construction, once per span.
    decoded = OtlpSpan(
        trace_id,
        span_id,
        parent_id,
        span.name,
        span.kind,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        status.code,
        status.message,
        attributes,
        scope,
        [],
        [],
        dropped + span.dropped_attributes_count,
        span.dropped_events_count,
        span.dropped_links_count,
    )
    if span.events:
        events = span.events
        decoded.dropped_events += max(0, len(events) - limits.max_events)
        decoded.events = [
            OtlpEvent(_cut(e.name, 1024), e.time_unix_nano, _pb_attributes(e.attributes, limits)[0])
            for e in events[: limits.max_events]
        ]
    if span.links:
        links = span.links
        decoded.dropped_links += max(0, len(links) - limits.max_events)
        decoded.links = [
            {
                "trace_id": _pb_id(link.trace_id, 16),
                "span_id": _pb_id(link.span_id, 8),
                "attributes": _pb_attributes(link.attributes, limits)[0],
            }
            for link in links[: limits.max_events]
        ]
    return decoded


# -- protobuf: the C fast path ------------------------------------------------------------------

# The fields `_otlp_wire.c` knows, by message. It skips unknown fields, as protobuf does, so it
# must not run against a newer schema that gave an unknown number a meaning (a new AnyValue
# member would change what the reference returns): until the C decoder is taught the new field,
# the reference decodes every body.
_WIRE_FIELDS = {
    "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest": {1},
    "opentelemetry.proto.trace.v1.ResourceSpans": {1, 2, 3},
    "opentelemetry.proto.resource.v1.Resource": {1, 2, 3},
    "opentelemetry.proto.trace.v1.ScopeSpans": {1, 2, 3},
    "opentelemetry.proto.common.v1.InstrumentationScope": {1, 2, 3, 4},
    "opentelemetry.proto.trace.v1.Span": set(range(1, 17)),
    "opentelemetry.proto.trace.v1.Span.Event": {1, 2, 3, 4},
    "opentelemetry.proto.trace.v1.Span.Link": set(range(1, 7)),
    "opentelemetry.proto.trace.v1.Status": {2, 3},
    "opentelemetry.proto.common.v1.KeyValue": {1, 2, 3},
    "opentelemetry.proto.common.v1.AnyValue": set(range(1, 9)),
    "opentelemetry.proto.common.v1.ArrayValue": {1},
    "opentelemetry.proto.common.v1.KeyValueList": {1},
}


def _wire_knows_schema() -> bool:
    pool = ExportTraceServiceRequest.DESCRIPTOR.file.pool
    return all(
        {f.number for f in pool.FindMessageTypeByName(name).fields} <= numbers
        for name, numbers in _WIRE_FIELDS.items()
    )


FAST_DECODE = _otlp_wire is not None and _wire_knows_schema()
"""Whether `protobuf_spans` tries the C fast path (`keel.traces._otlp_wire`) first."""

if FAST_DECODE:
    _otlp_wire.configure(
        span_type=OtlpSpan,
        event_type=OtlpEvent,
        truncated_marker=TRUNCATED_MARKER,
        deep_marker=DEEP_MARKER,
        max_depth=MAX_DEPTH,
        max_key_length=MAX_KEY_LENGTH,
        scope_length=256,  # as _pb_spans cuts the scope's name and version
        event_name_length=1024,  # as _pb_span cuts an event's name
    )


# -- JSON ---------------------------------------------------------------------------------------
# The OTLP JSON encoding: lowerCamelCase keys (snake_case accepted too), ids in hex, 64-bit
# integers as strings or numbers, enums as numbers or names, bytes in base64.


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _list(obj: dict[str, Any], camel: str, snake: str, what: str) -> list[Any]:
    value = _get(obj, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedExport(f"`{camel}` must be an array ({what})")
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedExport(f"{what} must be an object")
    return value


_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64_MAX = (1 << 64) - 1


def _int(value: Any) -> int | None:
    """An OTLP JSON integer (a number or a decimal string) within 64 bits; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and len(value) <= 24:
        try:
            value = int(value)
        except ValueError:
            return None
    if isinstance(value, int) and _INT64[0] <= value <= _UINT64_MAX:
        return value
    return None


def _int64(value: Any) -> Any:
    """An intValue: an int within int64, else the text as sent (never an unstorable number)."""
    number = _int(value)
    if number is not None and number <= _INT64[1]:
        return number
    return str(value)[:64] if isinstance(value, str | int | float) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and len(value) <= 64:
        try:
            return float(value)  # "NaN", "Infinity" as the proto3 JSON mapping writes them
        except ValueError:
            return None
    return None


def _enum(value: Any, names: dict[str, int]) -> int:
    if isinstance(value, str):
        return names.get(value, 0)
    number = _int(value)
    return number if number is not None else 0


def _json_id(value: Any, size: int) -> str | None:
    """Hex id as OTLP JSON writes it (base64, as some exporters wrongly send, is accepted)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        raw = (
            bytes.fromhex(value)
            if len(value) == 2 * size
            else base64.b64decode(value, validate=True)
        )
    except (ValueError, binascii.Error):
        return None
    return _pb_id(raw, size)


def _json_value(value: Any, limits: Limits, depth: int) -> Any:
    if not isinstance(value, dict):
        return None
    for key, item in value.items():
        if key in ("stringValue", "string_value"):
            return _cut(item, limits.max_value_length) if isinstance(item, str) else None
        if key in ("intValue", "int_value"):
            return _int64(item)
        if key in ("doubleValue", "double_value"):
            return _float(item)
        if key in ("boolValue", "bool_value"):
            return item if isinstance(item, bool) else None
        if key in ("bytesValue", "bytes_value"):
            return _cut(item, limits.max_value_length) if isinstance(item, str) else None
        if key in ("arrayValue", "array_value", "kvlistValue", "kvlist_value"):
            if depth >= MAX_DEPTH:
                return DEEP_MARKER
            values = item.get("values") if isinstance(item, dict) else None
            if not isinstance(values, list):
                return [] if key.startswith("array") else {}
            if key.startswith("array"):
                return [_json_value(v, limits, depth + 1) for v in values[: limits.max_attributes]]
            return _json_attributes(values, limits, depth + 1)[0]
    return None


def _json_attributes(pairs: Any, limits: Limits, depth: int = 0) -> tuple[dict[str, Any], int]:
    if not isinstance(pairs, list):
        return {}, 0
    out: dict[str, Any] = {}
    for kv in pairs[: limits.max_attributes]:
        if isinstance(kv, dict) and isinstance(kv.get("key"), str):
            out[_cut(kv["key"], MAX_KEY_LENGTH)] = _json_value(kv.get("value"), limits, depth)
    return out, max(0, len(pairs) - limits.max_attributes)


def decode_json(body: bytes, limits: Limits) -> Decoded:
    """Decode an OTLP JSON export; raises MalformedExport."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedExport(f"the body is not valid JSON: {exc}") from None
    request = _object(request, "the body")
    out = Decoded()
    for rs in _list(request, "resourceSpans", "resource_spans", "the resource spans"):
        rs = _object(rs, "a resourceSpans item")
        resource_obj = _object(rs.get("resource"), "`resource`")
        resource, _ = _json_attributes(resource_obj.get("attributes"), limits)
        scopes = _list(rs, "scopeSpans", "scope_spans", "the scope spans")
        scopes += _list(rs, "instrumentationLibrarySpans", "instrumentation_library_spans", "")
        for ss in scopes:
            ss = _object(ss, "a scopeSpans item")
            scope_obj = _object(
                ss.get("scope") or _get(ss, "instrumentationLibrary", "instrumentation_library"),
                "`scope`",
            )
            scope = (
                _json_text(scope_obj.get("name"), 256),
                _json_text(scope_obj.get("version"), 256),
            )
            for span in _list(ss, "spans", "spans", "the spans"):
                decoded = _json_span(span, resource, scope, limits, out)
                if decoded is not None:
                    out.spans.append(decoded)
    return out


def _json_text(value: Any, limit: int) -> str:
    return _cut(value, limit) if isinstance(value, str) else ""


def _json_span(
    span: Any, resource: dict[str, Any], scope: tuple[str, str], limits: Limits, out: Decoded
) -> OtlpSpan | None:
    if not isinstance(span, dict):
        out.reject("a span is not an object")
        return None
    name = _json_text(span.get("name"), 1 << 20)
    trace_id = _json_id(_get(span, "traceId", "trace_id"), 16)
    span_id = _json_id(_get(span, "spanId", "span_id"), 8)
    if trace_id is None or span_id is None:
        which = "traceId (32 hex digits)" if trace_id is None else "spanId (16 hex digits)"
        out.reject(f"invalid {which} in span {_cut(name, 64)!r}")
        return None
    parent = _get(span, "parentSpanId", "parent_span_id")
    parent_id = _json_id(parent, 8) if parent else None
    if parent and parent_id is None and not (isinstance(parent, str) and not parent.strip("0")):
        out.reject(f"invalid parentSpanId (16 hex digits) in span {_cut(name, 64)!r}")
        return None
    start = _int(_get(span, "startTimeUnixNano", "start_time_unix_nano"))
    end = _int(_get(span, "endTimeUnixNano", "end_time_unix_nano"))
    if start is None or end is None or start < 0 or end < 0:
        out.reject(f"invalid startTimeUnixNano or endTimeUnixNano in span {_cut(name, 64)!r}")
        return None
    attributes, dropped = _json_attributes(span.get("attributes"), limits)
    attributes = {**resource, **attributes} if resource else attributes
    status = _object(span.get("status"), "`status`")
    decoded = OtlpSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_id,
        name=name,
        kind=_enum(span.get("kind"), _SPAN_KINDS),
        start_ns=start,
        end_ns=end,
        status_code=_enum(status.get("code"), _STATUS_CODES),
        status_message=_json_text(status.get("message"), 1 << 20),
        attributes=attributes,
        scope=scope,
        dropped_attributes=dropped
        + (_int(_get(span, "droppedAttributesCount", "dropped_attributes_count")) or 0),
    )
    events = span.get("events")
    if isinstance(events, list) and events:
        decoded.dropped_events = max(0, len(events) - limits.max_events)
        decoded.events = [
            OtlpEvent(
                _json_text(e.get("name"), 1024),
                _int(_get(e, "timeUnixNano", "time_unix_nano")) or 0,
                _json_attributes(e.get("attributes"), limits)[0],
            )
            for e in events[: limits.max_events]
            if isinstance(e, dict)
        ]
    links = span.get("links")
    if isinstance(links, list) and links:
        decoded.dropped_links = max(0, len(links) - limits.max_events)
        decoded.links = [
            {
                "trace_id": _json_id(_get(link, "traceId", "trace_id"), 16),
                "span_id": _json_id(_get(link, "spanId", "span_id"), 8),
                "attributes": _json_attributes(link.get("attributes"), limits)[0],
            }
            for link in links[: limits.max_events]
            if isinstance(link, dict)
        ]
    return decoded
