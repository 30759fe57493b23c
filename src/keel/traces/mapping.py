"""OTLP span attributes mapped to `SpanRecord` fields (docs/traces.md has the table).

Accepted vocabularies: the OpenTelemetry GenAI conventions (old and new names), OpenInference
and Keel's own `keel.*`. Mapped attributes leave the attribute dict; everything else stays in
`SpanRecord.attributes`. Values of the wrong type are not mapped (they stay as attributes), text
columns are cut to their column's size, token counts must fit the column, so a sender can
never make a row the database refuses. Cost comes from the span (`keel.cost_usd`,
`llm.cost.total`) or, for LLM and embedding spans with usage, from the same `Pricer` the
gateway uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import String

from keel.costs.pricing import Pricer
from keel.providers.base import Usage
from keel.records.span import SPAN_KINDS, SpanRecord
from keel.storage.spans_repo import SPAN_COLUMNS
from keel.storage.tables import spans as spans_table
from keel.traces.otlp import (
    FAST_DECODE,
    STATUS_ERROR,
    STATUS_OK,
    TRUNCATED_MARKER,
    Limits,
    OtlpSpan,
)

try:
    from keel.traces import _otlp_wire
except ImportError:  # installed without a C compiler: the mapping below does all the work
    _otlp_wire = None  # type: ignore[assignment]

__all__ = [
    "FAST_MAP",
    "MappingOptions",
    "fast_protobuf_rows",
    "price_provider",
    "to_record",
    "to_row",
    "to_rows",
]

_COLUMN_LENGTHS = {
    c.name: c.type.length
    for c in spans_table.columns
    if isinstance(c.type, String) and c.type.length is not None
}
_MAX_TAGS = 64
_INT32_MAX = (1 << 31) - 1

_OPENINFERENCE_KINDS = {
    "LLM": "llm",
    "EMBEDDING": "embedding",
    "CHAIN": "chain",
    "TOOL": "tool",
    "RETRIEVER": "retrieval",
    "RERANKER": "reranker",
    "AGENT": "agent",
    "GUARDRAIL": "guardrail",
    "EVALUATOR": "evaluator",
}
_GENAI_OPERATIONS = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "embeddings": "embedding",
    "execute_tool": "tool",
    "invoke_agent": "agent",
    "create_agent": "agent",
}
_OTEL_KINDS = {2: "server", 3: "client", 4: "producer", 5: "consumer"}

# `gen_ai.provider.name` / `gen_ai.system` / OpenInference `llm.provider` values, as the price
# book (genai-prices) names those providers. Unknown names price by the model name alone.
_PRICE_PROVIDERS = {
    "openai": "openai",
    "azure": "azure",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.inference": "azure",
    "anthropic": "anthropic",
    "aws": "aws",
    "aws.bedrock": "aws",
    "google": "google",
    "gemini": "google",
    "gcp.gemini": "google",
    "gcp.gen_ai": "google",
    "gcp.vertex_ai": "google",
    "vertex_ai": "google",
    "vertexai": "google",
    "cohere": "cohere",
    "mistral": "mistral",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "deepseek": "deepseek",
    "groq": "groq",
    "perplexity": "perplexity",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "mock": "mock",
}

_INPUT_PREFIX = "llm.input_messages."
_OUTPUT_PREFIX = "llm.output_messages."
_MESSAGE_PREFIXES = (_INPUT_PREFIX, _OUTPUT_PREFIX)


@dataclass(frozen=True, slots=True)
class MappingOptions:
    pricer: Pricer
    store_payloads: bool = True
    payload_max: int = 64 * 1024  # characters of `input` / `output`
    text_max: int = 16 * 1024  # characters of `error`
    customer: str | None = None  # the API key's customer, for spans that name none


def price_provider(name: str | None) -> str | None:
    """The price book's id for a GenAI provider name (None: match by model alone)."""
    return _PRICE_PROVIDERS.get(name.lower()) if name else None


# -- converters: the value as the field wants it, or None (then it stays an attribute) -------


def _text(raw: Any) -> str | None:
    if isinstance(raw, str):
        return raw or None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return str(raw)
    return None


def _count(raw: Any) -> int | None:
    """A token count or version: a non-negative integer that fits the column."""
    if (isinstance(raw, float) and raw.is_integer()) or (
        isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 10
    ):  # ASCII digits only: "²" is a digit to str.isdigit, not to int()
        raw = int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= _INT32_MAX:
        return raw
    return None


def _number(raw: Any) -> float | None:
    """A finite, non-negative float."""
    if isinstance(raw, str) and len(raw) <= 64:
        try:
            raw = float(raw)
        except ValueError:
            return None
    elif isinstance(raw, int) and not isinstance(raw, bool):
        try:
            raw = float(raw)
        except OverflowError:
            return None
    if isinstance(raw, float) and math.isfinite(raw) and raw >= 0:
        return raw
    return None


def _flag(raw: Any) -> bool | None:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return None


def _payload(raw: Any) -> str | None:
    if isinstance(raw, str):
        return raw or None
    if isinstance(raw, list | dict):
        return orjson.dumps(raw).decode()
    return None


def _column(name: str) -> Callable[[Any], str | None]:
    """A converter to text storable in column `name`: no NUL (PostgreSQL refuses it), cut to
    the column's size."""
    limit = _COLUMN_LENGTHS.get(name, 256)

    def convert(raw: Any) -> str | None:
        text = _text(raw)
        if text is None:
            return None
        if "\0" in text:
            text = text.replace("\0", "\ufffd")
        return text if len(text) <= limit else text[:limit]

    return convert


_tag_text = _column("tags")


def _tags(raw: Any) -> list[str] | None:
    if isinstance(raw, str):
        items: list[Any] = raw.split(",")
    elif isinstance(raw, list):
        items = raw
    else:
        return None
    tags = [_tag_text(str(t).strip()) for t in items[:_MAX_TAGS] if t is not None]
    return [t for t in tags if t]


def _long_text(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    if "\0" in text:
        text = text.replace("\0", "\ufffd")
    return text if len(text) <= limit else text[:limit] + TRUNCATED_MARKER


# -- the attribute table: attribute -> (field, rank, converter); the lowest rank present wins ------

_Convert = Callable[[Any], Any]
_TABLE: dict[str, tuple[str, int, _Convert]] = {}
# The same for _span_map.c: (attribute, field, rank, converter name, column length)
_C_TABLE: list[tuple[str, str, int, str, int]] = []
_CONVERTERS: dict[str, _Convert] = {
    "kind": lambda v: v if isinstance(v, str) and v in SPAN_KINDS else None,
    "openinference_kind": lambda v: (
        _OPENINFERENCE_KINDS.get(v.upper()) if isinstance(v, str) else None
    ),
    "count": _count,
    "number": _number,
    "flag": _flag,
    "payload": _payload,
    "tags": _tags,
}


def _field(name: str, converter: str, *keys: str) -> None:
    """`keys` fill field `name`, best first; "column" converts to text that fits column `name`."""
    convert = _column(name) if converter == "column" else _CONVERTERS[converter]
    for rank, key in enumerate(keys):
        _TABLE[key] = (name, rank, convert)
        _C_TABLE.append((key, name, rank, converter, _COLUMN_LENGTHS.get(name, 256)))


_field("service", "column", "service.name")
_field(
    "provider",
    "column",
    "gen_ai.provider.name",
    "gen_ai.system",
    "llm.provider",
    "llm.system",
)
_field("model", "column", "gen_ai.request.model", "llm.model_name")
_field("response_model", "column", "gen_ai.response.model")
_field("kind", "kind", "keel.span.kind")
_field("openinference_kind", "openinference_kind", "openinference.span.kind")
_field(
    "input_tokens",
    "count",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
)
_field(
    "output_tokens",
    "count",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
_field(
    "cached_tokens",
    "count",
    "gen_ai.usage.cache_read.input_tokens",
    "llm.token_count.prompt_details.cache_read",
)
_field(
    "reasoning_tokens",
    "count",
    "gen_ai.usage.reasoning.output_tokens",
    "llm.token_count.completion_details.reasoning",
)
_field("cost_usd", "number", "keel.cost_usd", "llm.cost.total")
_field("ttft_ms", "number", "keel.ttft_ms")
_field("ttft_s", "number", "gen_ai.server.time_to_first_token")
_field("customer", "column", "keel.customer", "user.id", "enduser.id")
_field("session_id", "column", "session.id", "gen_ai.conversation.id")
_field("pipeline", "column", "keel.pipeline")
_field("tags", "tags", "keel.tags")
_field("prompt_name", "column", "keel.prompt.name")
_field("prompt_version", "count", "keel.prompt.version")
_field("via_gateway", "flag", "keel.via_gateway")
_field("input", "payload", "input.value", "gen_ai.input.messages", "gen_ai.prompt")
_field("output", "payload", "output.value", "gen_ai.output.messages", "gen_ai.completion")
_FIELDS = tuple(dict.fromkeys(name for name, _, _ in _TABLE.values()))


def _extract(attrs: dict[str, Any]) -> dict[str, Any]:
    """The mapped fields found in `attrs`, which keeps only what was not mapped.

    For each field the attribute of the lowest rank whose value converts wins. It goes, and so
    does any other name for the field that repeats the chosen value (old and new GenAI names
    side by side); a name that disagrees, or whose value does not convert, stays.
    """
    fields: dict[str, Any] = {}
    chosen: dict[str, tuple[int, str]] = {}  # field -> (rank, attribute) of its value
    candidates: list[tuple[str, str, Any]] = []  # (field, attribute, converted value)
    for key in attrs:
        entry = _TABLE.get(key)
        if entry is None:
            continue
        name, rank, convert = entry
        value = convert(attrs[key])
        if value is None:
            continue
        candidates.append((name, key, value))
        best = chosen.get(name)
        if best is None or rank < best[0]:
            chosen[name] = (rank, key)
            fields[name] = value
    for name, key, value in candidates:
        if key == chosen[name][1] or value == fields[name]:
            del attrs[key]
    return fields


# -- the mapping ---------------------------------------------------------------------------------


def _kind(fields: dict[str, Any], attrs: dict[str, Any], has_model: bool) -> str:
    kind = fields.get("kind") or fields.get("openinference_kind")
    if kind is None:
        operation = attrs.get("gen_ai.operation.name")  # stays an attribute: it says more
        kind = _GENAI_OPERATIONS.get(operation) if isinstance(operation, str) else None
    if kind is None:
        kind = "llm" if has_model else "span"
    return str(kind)


def _messages(attrs: dict[str, Any], keys: list[str], prefix: str) -> str | None:
    """OpenInference's flattened `llm.input_messages.N.message.<field>` as a JSON list."""
    by_index: dict[int, dict[str, Any]] = {}
    for key in keys:
        if not key.startswith(prefix):
            continue
        index, _, rest = key[len(prefix) :].partition(".")
        if not (index.isascii() and index.isdigit()) or len(index) > 6:
            continue
        field = rest.removeprefix("message.")
        by_index.setdefault(int(index), {})[field] = attrs.pop(key)
    return orjson.dumps([by_index[i] for i in sorted(by_index)]).decode() if by_index else None


def _event_payloads(span: OtlpSpan) -> tuple[str | None, str | None]:
    prompt = completion = None
    for event in span.events:
        if event.name == "gen_ai.content.prompt" and prompt is None:
            prompt = _payload(event.attributes.get("gen_ai.prompt"))
        elif event.name == "gen_ai.content.completion" and completion is None:
            completion = _payload(event.attributes.get("gen_ai.completion"))
    return prompt, completion


def _payloads(
    fields: dict[str, Any], attrs: dict[str, Any], span: OtlpSpan, opts: MappingOptions
) -> tuple[str | None, str | None]:
    inp, out = fields.get("input"), fields.get("output")
    # The first-letter test first: it is most of this scan's cost saved, for every span.
    flat = [k for k in attrs if k[:1] == "l" and k.startswith(_MESSAGE_PREFIXES)]
    if not opts.store_payloads:  # no payload is kept anywhere, attributes and events included
        for key in flat:
            del attrs[key]
        for event in span.events:
            if event.name in ("gen_ai.content.prompt", "gen_ai.content.completion"):
                event.attributes = {}
        return None, None
    if flat:
        inp = inp or _messages(attrs, flat, _INPUT_PREFIX)
        out = out or _messages(attrs, flat, _OUTPUT_PREFIX)
    if (inp is None or out is None) and span.events:
        event_in, event_out = _event_payloads(span)
        inp, out = inp or event_in, out or event_out
    return _long_text(inp, opts.payload_max), _long_text(out, opts.payload_max)


def _error(span: OtlpSpan) -> str | None:
    if span.status_message:
        return span.status_message
    for event in span.events:
        if event.name == "exception":
            kind = event.attributes.get("exception.type")
            message = event.attributes.get("exception.message")
            parts = [str(p) for p in (kind, message) if p not in (None, "")]
            if parts:
                return ": ".join(parts)
    return None


def _events(span: OtlpSpan) -> list[dict[str, Any]]:
    return [
        {"name": e.name, "time": e.time_ns / 1e9, "attributes": e.attributes} for e in span.events
    ]


def _cost(
    opts: MappingOptions,
    kind: str,
    model: str | None,
    provider: str | None,
    tokens: tuple[int | None, int | None, int | None, int | None],
    start_time: float,
) -> tuple[float | None, bool]:
    if kind not in ("llm", "embedding") or model is None:
        return None, False
    if tokens[0] is None and tokens[1] is None:
        return None, False
    return _price(opts.pricer, model, provider, *tokens, start_time)


def _price(
    pricer: Pricer,
    model: str,
    provider: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    cached_tokens: int | None,
    reasoning_tokens: int | None,
    start_time: float,
) -> tuple[float | None, bool]:
    """The (usd, estimated) of a counted call with usage (also called by _span_map.c)."""
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached_tokens,
        reasoning_tokens=reasoning_tokens,
    )
    at = datetime.fromtimestamp(start_time, UTC) if start_time > 0 else None
    cost = pricer.cost(usage, model=model, provider_id=price_provider(provider), at=at)
    return cost.usd, cost.estimated


_STATUSES = {STATUS_OK: "ok", STATUS_ERROR: "error"}
_JSON_POSITIONS = tuple(SPAN_COLUMNS.index(n) for n in ("tags", "attributes", "events"))
_RECORD_FIELDS = tuple(n for n in SPAN_COLUMNS if n != "duration_ms")


def _values(span: OtlpSpan, opts: MappingOptions) -> list[Any]:
    """The span's row (keel.storage.spans_repo.SPAN_COLUMNS order), the JSON columns as
    objects. Takes over `span.attributes`."""
    attrs = span.attributes
    fields = _extract(attrs)
    get = fields.get
    model, response_model = get("model"), get("response_model")
    inp, out = _payloads(fields, attrs, span, opts)
    ttft = get("ttft_ms")
    if ttft is None and "ttft_s" in fields:
        ttft = fields["ttft_s"] * 1000.0
    name = span.name
    if len(name) > _NAME_LENGTH or "\0" in name:
        name = _name_text(name) or ""
    start_time, end_time = span.start_ns / 1e9, span.end_ns / 1e9
    kind = _kind(fields, attrs, model is not None or response_model is not None)
    model = model or response_model
    provider = get("provider")
    tokens = (
        get("input_tokens"),
        get("output_tokens"),
        get("cached_tokens"),
        get("reasoning_tokens"),
    )
    cost_usd, cost_estimated = get("cost_usd"), False
    if cost_usd is None:
        cost_usd, cost_estimated = _cost(
            opts, kind, response_model or model, provider, tokens, start_time
        )
    _annotate(attrs, span)
    return [
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        name,
        kind,
        get("service"),
        start_time,
        end_time,
        max(0.0, (end_time - start_time) * 1000.0),  # as SpanRecord.duration_ms
        _STATUSES.get(span.status_code, "unset"),
        _long_text(_error(span), opts.text_max),
        provider,
        model,
        response_model,
        *tokens,
        cost_usd,
        cost_estimated,
        ttft,
        get("customer", opts.customer),
        get("session_id"),
        get("pipeline"),
        get("tags") or [],
        get("prompt_name"),
        get("prompt_version"),
        not get("via_gateway", False),
        inp,
        out,
        attrs,
        _events(span) if span.events else [],
    ]


def to_row(span: OtlpSpan, opts: MappingOptions) -> tuple[Any, ...]:
    """The row (keel.storage.spans_repo.span_row) of `to_record(span, opts)`, made without the
    record: the ingest's path. Takes over `span.attributes`."""
    values = _values(span, opts)
    dumps = orjson.dumps
    for i in _JSON_POSITIONS:
        values[i] = dumps(values[i]).decode()
    return tuple(values)


def to_rows(
    spans: Iterable[OtlpSpan], opts: MappingOptions, seen: set[tuple[str, str]] | None = None
) -> list[tuple[Any, ...]]:
    """`to_row` of each span, but once for a span repeated (the first copy wins, as in the
    database); in C when the extension is built. Takes over the spans' attributes. `seen`
    holds the (trace_id, span_id) of the spans mapped before (of the same export, mapped a
    slice at a time) and gets those of these."""
    if seen is None:
        seen = set()
    if FAST_MAP:
        return _otlp_wire.map_spans(spans, _c_options(opts), seen)
    rows: list[tuple[Any, ...]] = []
    for span in spans:
        key = (span.trace_id, span.span_id)
        if key not in seen:
            seen.add(key)
            rows.append(to_row(span, opts))
    return rows


def fast_protobuf_rows(
    body: bytes, limits: Limits, opts: MappingOptions
) -> tuple[list[tuple[Any, ...]], int] | None:
    """`to_rows` of the spans of a protobuf export, decoded and mapped in C in one go, and the
    number of spans the export held; None when the C path leaves the body to the reference
    decoder (otlp.protobuf_spans), as it does whenever the extension is not built."""
    if not FAST_PROTOBUF_ROWS:
        return None
    return _otlp_wire.decode_rows(
        body, limits.max_value_length, limits.max_attributes, limits.max_events, _c_options(opts)
    )


def _c_options(opts: MappingOptions) -> tuple[bool, int, int, str | None, Pricer]:
    return opts.store_payloads, opts.payload_max, opts.text_max, opts.customer, opts.pricer


def to_record(span: OtlpSpan, opts: MappingOptions) -> SpanRecord:
    """The span record of one decoded OTLP span (takes over `span.attributes`)."""
    values = _values(span, opts)
    del values[_DURATION]
    return SpanRecord(**dict(zip(_RECORD_FIELDS, values, strict=True)))


_DURATION = SPAN_COLUMNS.index("duration_ms")
_NAME_LENGTH = _COLUMN_LENGTHS["name"]
_name_text = _column("name")


def _annotate(attrs: dict[str, Any], span: OtlpSpan) -> None:
    """What OTLP says about the span beyond its attributes, under `otel.*` / `keel.*` names."""
    name, version = span.scope
    if name:
        attrs["otel.scope.name"] = name
        if version:
            attrs["otel.scope.version"] = version
    otel_kind = _OTEL_KINDS.get(span.kind)
    if otel_kind is not None:
        attrs["otel.span.kind"] = otel_kind
    if span.links:
        attrs["otel.links"] = span.links
    if span.dropped_attributes:
        attrs["keel.dropped_attributes"] = span.dropped_attributes
    if span.dropped_events:
        attrs["keel.dropped_events"] = span.dropped_events
    if span.dropped_links:
        attrs["keel.dropped_links"] = span.dropped_links


# -- the C fast path ----------------------------------------------------------------------------

FAST_MAP = _otlp_wire is not None
"""Whether `to_rows` maps in C (keel.traces._span_map.c, built into _otlp_wire)."""
FAST_PROTOBUF_ROWS = FAST_MAP and FAST_DECODE
"""Whether `fast_protobuf_rows` tries the C path (decoding and mapping in one go)."""

if FAST_MAP:
    _otlp_wire.configure_mapping(
        columns=SPAN_COLUMNS,
        fields=_FIELDS,
        table=_C_TABLE,
        span_kinds=SPAN_KINDS,
        openinference_kinds=_OPENINFERENCE_KINDS,
        operations=_GENAI_OPERATIONS,
        otel_kinds=_OTEL_KINDS,
        statuses=_STATUSES,
        dumps=orjson.dumps,
        price=_price,
        truncated_marker=TRUNCATED_MARKER,
        name_length=_NAME_LENGTH,
        tag_length=_COLUMN_LENGTHS.get("tags", 256),
        max_tags=_MAX_TAGS,
    )
