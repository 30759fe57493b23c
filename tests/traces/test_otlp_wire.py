"""The C fast path of the OTLP protobuf decoder (`keel.traces._otlp_wire`) against the reference.

The reference decoder (upb's messages read by `_pb_spans`) is the oracle: for every body the fast
path returns either exactly the reference's spans (compared by repr: key order, types, NaN and -0.0
included) or None, and None only where it may (a malformed body, a rejected span, anything outside
the canonical subset); the canonical exports of generated traffic and of the OpenTelemetry SDK
must never fall back.
"""

from __future__ import annotations

import math
import random
import struct
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.trace.status import Status, StatusCode

from keel.traces import otlp
from keel.traces.otlp import (
    DEEP_MARKER,
    MAX_DEPTH,
    MAX_KEY_LENGTH,
    Decoded,
    Limits,
    MalformedExport,
    OtlpSpan,
    decode_protobuf,
)
from tests.conftest import IN_CI
from tests.traces import test_otlp_decode
from tests.traces.otlp_helpers import ROOT, TRACE, any_value, pb_export, pb_span

needs_fast_path = pytest.mark.skipif(
    not otlp.FAST_DECODE, reason="keel.traces._otlp_wire is not built (no C compiler?)"
)

LIMITS = Limits()
SMALL = Limits(max_value_length=12, max_attributes=3, max_events=2)
NESTING_BOUND = 16  # MAX_VALUE_NESTING in _otlp_wire.c: deeper values are the reference's


def test_the_fast_path_is_built_in_ci() -> None:
    """CI must never measure (nor test) the reference path in its place."""
    if not IN_CI:
        pytest.skip("outside CI the extension is optional")
    from keel.traces import _otlp_wire  # noqa: F401  (fails the test when it is missing)

    assert otlp.FAST_DECODE, "the installed OTLP schema has fields _otlp_wire.c does not know"


def fast(body: bytes, limits: Limits) -> list[OtlpSpan] | None:
    return otlp._otlp_wire.decode_spans(
        body, limits.max_value_length, limits.max_attributes, limits.max_events
    )


def reference(body: bytes, limits: Limits) -> tuple[list[OtlpSpan] | None, Decoded]:
    """The reference's spans, or None for a malformed body; and what it rejected."""
    out = Decoded()
    flag, otlp.FAST_DECODE = otlp.FAST_DECODE, False
    try:
        return list(otlp.protobuf_spans(body, limits, out)), out
    except MalformedExport:
        return None, out
    finally:
        otlp.FAST_DECODE = flag


def check(body: bytes, limits: Limits) -> list[OtlpSpan] | None:
    """The fast path's result, asserted to be the reference's or None where None is allowed."""
    spans = fast(body, limits)
    expected, out = reference(body, limits)
    if expected is None or out.rejected:
        assert spans is None
    elif spans is not None:
        assert repr(spans) == repr(expected)
    return spans


# -- a generated corpus of exports ---------------------------------------------------------------

NON_ASCII = "éß中文€ñ😀🚀𝄞"
KEYS = ["service.name", "gen_ai.request.model", "gen_ai.usage.input_tokens", "user.id", "é.key"]


def random_text(rng: random.Random, cap: int) -> str:
    """Short ASCII mostly; also empty, non-ASCII (astral too) and around `cap` characters
    (rarely when that is long)."""
    roll = rng.random()
    if roll < 0.5:
        return "".join(rng.choices("abcdefghij._- ", k=rng.randrange(1, 12)))
    if roll < 0.7:
        return "".join(rng.choices("ab" + NON_ASCII, k=rng.randrange(1, 12)))
    if roll < 0.9 and (cap <= 64 or rng.random() < 0.02):
        length = max(0, cap + rng.choice([-1, 0, 1, 7]))
        return "".join(rng.choices("xy" + NON_ASCII, k=length))
    return ""


def random_key(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.8:
        return rng.choice(KEYS)
    if roll < 0.9:
        return rng.choice(["k", "😀"]) * (MAX_KEY_LENGTH + rng.choice([0, 1, 5]))
    return random_text(rng, 8)


def nested(value: Any, levels: int, rng: random.Random) -> Any:
    for _ in range(levels):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def some(rng: random.Random, cap: int) -> int:
    """How many items a list gets (nested values, events, links...): over the cap only when the
    cap is small, so the corpus stays small."""
    return rng.choice([0, 1, 2, cap + 1 if cap <= 8 else 3])


def random_value(rng: random.Random, limits: Limits, depth: int = 0) -> Any:
    """A Python value for `to_any_value`, any kind at all."""
    roll = rng.randrange(10)
    if roll == 0:
        return rng.random() < 0.5
    if roll == 1:
        return rng.choice([0, 1, -1, 2**63 - 1, -(2**63), rng.randrange(-(2**40), 2**40)])
    if roll == 2:
        return rng.choice([math.nan, math.inf, -math.inf, -0.0, 0.5, 1e308, 5e-324])
    if roll == 3:
        return rng.randbytes(rng.choice([0, 1, 2, 3, limits.max_value_length + 1, 40]))
    if roll == 4 and depth < 3:
        count = some(rng, limits.max_attributes)
        return [random_value(rng, limits, depth + 1) for _ in range(count)]
    if roll == 5 and depth < 3:
        count = some(rng, limits.max_attributes)
        return {random_key(rng): random_value(rng, limits, depth + 1) for _ in range(count)}
    if roll == 6:
        return AnyValue()  # no member set
    if roll == 7:
        return nested("leaf", rng.choice([MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 3]), rng)
    return random_text(rng, limits.max_value_length)


def to_any_value(value: Any) -> AnyValue:
    """`otlp_helpers.any_value`, with empty AnyValues kept at any depth."""
    if isinstance(value, AnyValue):
        return value
    out = AnyValue()
    if isinstance(value, list):
        out.array_value.values.extend(to_any_value(v) for v in value)
    elif isinstance(value, dict):
        out.kvlist_value.values.extend(
            KeyValue(key=k, value=to_any_value(v)) for k, v in value.items()
        )
    else:
        out = any_value(value)
    return out


def add_attributes(into: Any, rng: random.Random, limits: Limits, count: int) -> None:
    for _ in range(count):
        into.add(key=random_key(rng)).value.CopyFrom(to_any_value(random_value(rng, limits)))


def random_id(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size).replace(b"\0", b"\1")


def random_span(rng: random.Random, limits: Limits, into: Any) -> None:
    span = into.add(
        trace_id=random_id(rng, 16),
        span_id=random_id(rng, 8),
        parent_span_id=rng.choice([b"", random_id(rng, 8), b"\0" * 8]),
        name=random_text(rng, 64),
        kind=rng.choice([0, 1, 2, 3, 4, 5, 6, 99, -1, 2**31 - 1, -(2**31)]),
        start_time_unix_nano=rng.choice([0, 1_700_000_000_000_000_000, 2**64 - 1]),
        end_time_unix_nano=rng.randrange(2**64),
        dropped_attributes_count=rng.choice([0, 3, 2**32 - 1]),
        dropped_events_count=rng.choice([0, 2**32 - 1]),
        dropped_links_count=rng.choice([0, 1]),
        trace_state=rng.choice(["", "vendor=value"]),
        flags=rng.choice([0, 0x100, 0x301]),
    )
    add_attributes(span.attributes, rng, limits, rng.choice([0, 1, 4, limits.max_attributes + 2]))
    if rng.random() < 0.7:
        span.status.code = rng.choice([0, 1, 2, 7, -3])
        span.status.message = random_text(rng, 20)
    for _ in range(some(rng, limits.max_events)):
        event = span.events.add(
            name=rng.choice(["gen_ai.content.prompt", "exception", "e" * 1030, "é" * 1025]),
            time_unix_nano=rng.randrange(2**64),
            dropped_attributes_count=rng.choice([0, 5]),
        )
        event.attributes.add(key="gen_ai.prompt").value.string_value = '[{"role": "user"}]'
        add_attributes(event.attributes, rng, limits, some(rng, limits.max_attributes))
    for _ in range(some(rng, limits.max_events)):
        link = span.links.add(
            trace_id=rng.choice([random_id(rng, 16), b"\0" * 16, b"\1" * 4, b""]),
            span_id=rng.choice([random_id(rng, 8), b"\0" * 8, b""]),
            trace_state=rng.choice(["", "a=b"]),
            flags=rng.choice([0, 0x100]),
        )
        add_attributes(link.attributes, rng, limits, some(rng, limits.max_attributes))


def random_export(rng: random.Random, limits: Limits) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(rng.choice([1, 1, 2, 3])):
        rs = request.resource_spans.add(schema_url=rng.choice(["", "https://schemas/1.21"]))
        if rng.random() < 0.8:
            add_attributes(rs.resource.attributes, rng, limits, rng.choice([0, 2, 5]))
            rs.resource.dropped_attributes_count = rng.choice([0, 4])
        for _ in range(rng.choice([0, 1, 2])):
            ss = rs.scope_spans.add(schema_url=rng.choice(["", "https://schemas/1.21"]))
            if rng.random() < 0.8:
                ss.scope.name = rng.choice(["lib", "n" * 300, "é" * 257])
                ss.scope.version = rng.choice(["", "1.0", "v" * 257])
                add_attributes(ss.scope.attributes, rng, limits, rng.choice([0, 1]))
            for _ in range(rng.choice([0, 1, 3])):
                random_span(rng, limits, ss.spans)
    return request


def corpus(cases: int) -> Iterator[tuple[bytes, Limits]]:
    for seed in range(cases):
        rng = random.Random(seed)
        limits = LIMITS if seed % 3 == 0 else SMALL
        yield random_export(rng, limits).SerializeToString(), limits


@needs_fast_path
def test_generated_exports_decode_exactly_as_the_reference() -> None:
    started = time.monotonic()
    for body, limits in corpus(400):
        assert check(body, limits) is not None, "a canonical export fell back"
    assert time.monotonic() - started < 30


@needs_fast_path
def test_the_reference_rejects_spans_so_the_fast_path_falls_back() -> None:
    ok = pb_span("ok")
    for bad in [
        pb_span("zero trace", trace_id=b"\0" * 16),
        pb_span("short trace", trace_id=b"\1" * 15),
        pb_span("no span id", span_id=b""),
        pb_span("long span id", span_id=b"\1" * 9),
        pb_span("short parent", parent=b"\1" * 7),
    ]:
        body = pb_export([ok, bad]).SerializeToString()
        assert check(body, LIMITS) is None
        assert reference(body, LIMITS)[1].rejected == 1


@needs_fast_path
def test_values_nested_past_the_bound_are_left_to_the_reference() -> None:
    for levels in [MAX_DEPTH + 1, NESTING_BOUND, NESTING_BOUND + 1, 24]:
        value = nested("leaf", levels, random.Random(levels))
        body = pb_export([pb_span(attributes={"deep": value})]).SerializeToString()
        assert (check(body, LIMITS) is None) == (levels > NESTING_BOUND)
        spans, _ = reference(body, LIMITS)
        assert spans is not None and DEEP_MARKER in repr(spans[0].attributes["deep"])


# -- the stock OpenTelemetry SDK's exports -------------------------------------------------------


def sdk_export() -> bytes:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "bot", "deployment": "prod"}, "https://s/1.2")
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("keel.tests", "1.0", "https://s/1.2", {"scope.attr": True})
    remote = SpanContext(
        int.from_bytes(TRACE),
        int.from_bytes(ROOT),
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "value")]),
    )
    parent = trace.set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span("chat", context=parent, kind=SpanKind.CLIENT) as chat:
        chat.set_attributes(
            {
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 12,
                "temperature": 0.5,
                "stream": False,
                "tags": ["a", "b"],
                "scores": [1.5, math.nan],
                "text": "é😀" * 20,
            }
        )
        chat.add_event("gen_ai.content.prompt", {"gen_ai.prompt": '[{"role": "user"}]'})
        with tracer.start_as_current_span("tool", links=[Link(remote, {"why": "retry"})]) as tool:
            tool.set_status(Status(StatusCode.ERROR, "upstream said no"))
            tool.record_exception(ValueError("boom"))
    provider.shutdown()
    return bytes(encode_spans(exporter.get_finished_spans()).SerializeToString())


@needs_fast_path
def test_sdk_exports_take_the_fast_path() -> None:
    body = sdk_export()
    spans = check(body, LIMITS)
    assert spans is not None
    assert [s.name for s in spans] == ["tool", "chat"]
    assert spans[0].status_code == 2 and spans[0].events[0].name == "exception"
    assert spans[0].links[0]["trace_id"] == TRACE.hex()
    assert spans[1].parent_span_id == ROOT.hex() and spans[1].scope == ("keel.tests", "1.0")


# -- hand-made wire format -----------------------------------------------------------------------


def varint(number: int) -> bytes:
    number &= 2**64 - 1
    out = bytearray()
    while number > 0x7F:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    return bytes(out) + bytes([number])


def field(number: int, payload: bytes | int, wire: int | None = None) -> bytes:
    """A field: bytes length-delimited, an int a varint, unless `wire` says otherwise."""
    if isinstance(payload, int):
        return varint(number << 3 | (0 if wire is None else wire)) + varint(payload)
    if wire in (1, 5):
        return varint(number << 3 | wire) + payload
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def wire_export(span_fields: bytes, resource_spans_extra: bytes = b"") -> bytes:
    span = field(1, TRACE) + field(2, ROOT) + span_fields
    scope_spans = field(1, field(1, b"lib")) + field(2, span)
    return field(1, field(2, scope_spans) + resource_spans_extra)


def attribute(key: bytes, any_value: bytes) -> bytes:
    return field(9, field(1, key) + field(2, any_value))


@needs_fast_path
@pytest.mark.parametrize(
    "span_fields",
    [
        field(99, 5) + field(100, b"x") + field(101, b"12345678", 1) + field(102, b"1234", 5),
        field(6, -1),  # kind: a negative int32 as a ten-byte varint
        field(6, 2**32 + 3),  # int32: the low 32 bits
        field(10, 2**40 + 7),  # a uint32 count: the low 32 bits
        field(5, b"first") + field(5, b"last"),  # a scalar repeated: the last wins
        b"\xaa\x80\x80\x80\x00\x01a" + b"\x2a\x81\x80\x80\x80\x00b",  # 5-byte tag, length
        b"\x30\x83" + b"\x80" * 8 + b"\x00",  # a varint in 10 bytes
        attribute(b"k", field(1, b"text") + field(3, 5)),  # a oneof: the last member wins
        attribute(b"k", field(5, b"") + field(1, b"s") + field(5, b"")),  # a fresh array
        attribute(b"k", field(1, b"")),  # an empty string, set
        attribute(b"k", b""),  # no member set: None
        field(9, field(2, field(1, b"no key"))),
        field(9, field(1, b"no value")),
        attribute(b"k", field(2, 2**63)),  # bool: any non-zero varint
        attribute(b"k", field(4, struct.pack("<d", -0.0), 1)),
        field(15, field(3, 2)) + field(16, b"\1\0\0\0", 5),
    ],
)
def test_protobuf_semantics_match(span_fields: bytes) -> None:
    assert check(wire_export(span_fields), LIMITS) is not None


@needs_fast_path
def test_a_resource_after_its_scopes_still_applies() -> None:
    resource = field(1, field(1, field(1, b"service.name") + field(2, field(1, b"bot"))))
    (span,) = check(wire_export(b"", resource), LIMITS) or []
    assert span.attributes == {"service.name": "bot"}


@needs_fast_path
@pytest.mark.parametrize(
    "span_fields",
    [
        field(15, field(3, 2)) + field(15, field(2, b"merged")),  # a message twice: merged
        attribute(b"k", field(5, field(1, field(3, 1))) + field(5, field(1, field(3, 2)))),
        field(9, field(1, b"k") + field(2, field(1, b"a")) + field(2, field(3, 1))),
        attribute(b"k", field(8, 3)),  # string_value_strindex
        field(5, 7),  # a known field with another wire type
        field(5, b"\xff\xfe"),  # invalid UTF-8
        field(3, b"\xed\xa0\x80"),  # an unkept string is checked too (a surrogate)
        varint(17 << 3 | 3) + varint(17 << 3 | 4),  # a group
        field(6, 0)[:1] + b"\xff" * 9 + b"\x7f",  # a varint past 64 bits
        b"\xaa\x80\x80\x80\x80\x00\x01a",  # a tag in 6 bytes: upb refuses it
        b"\x2a\x81\x80\x80\x80\x80\x00a",  # a length in 6 bytes: upb refuses it
    ],
)
def test_outside_the_canonical_subset_falls_back(span_fields: bytes) -> None:
    assert check(wire_export(span_fields), LIMITS) is None


@needs_fast_path
def test_past_upbs_nesting_limit_both_refuse() -> None:
    deep = field(1, b"leaf")
    for _ in range(60):
        deep = field(5, field(1, deep))  # AnyValue{array_value: ArrayValue{values: [deep]}}
    body = wire_export(attribute(b"deep", deep))
    assert reference(body, LIMITS)[0] is None
    assert fast(body, LIMITS) is None


@needs_fast_path
def test_any_bytes_like_body_and_odd_limits() -> None:
    body = pb_export([pb_span(attributes={"a": "x" * 20})]).SerializeToString()
    expected = fast(body, LIMITS)
    assert expected is not None
    assert otlp._otlp_wire.decode_spans(bytearray(body), 16384, 128, 128) == expected
    assert otlp._otlp_wire.decode_spans(memoryview(body), 16384, 128, 128) == expected
    assert otlp._otlp_wire.decode_spans(body, -1, 128, 128) is None  # left to the reference
    assert check(body, Limits(0, 0, 0)) is not None
    assert fast(b"", LIMITS) == []


# -- mutation fuzz -------------------------------------------------------------------------------


def mutate(rng: random.Random, body: bytes) -> bytes:
    """One to three random edits: a bit flipped, a byte set, inserted or deleted, the body cut
    short, a slice repeated, a byte stretched into a longer varint of the same value (valid for
    a tag, length or number that fits in it)."""
    data = bytearray(body)
    for _ in range(rng.choice([1, 1, 2, 3])):
        at = rng.randrange(len(data)) if data else 0
        edit = rng.randrange(7) if data else 2
        if edit == 0:
            data[at] ^= 1 << rng.randrange(8)
        elif edit == 1:
            data[at] = rng.choice([0, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif edit == 2:
            data.insert(at, rng.randrange(256))
        elif edit == 3:
            del data[at : at + rng.randrange(1, 4)]
        elif edit == 4:
            del data[at:]
        elif edit == 5:
            data[at:at] = data[at : at + rng.randrange(1, 16)]
        elif data[at] < 0x80:
            data[at : at + 1] = bytes([data[at] | 0x80] + [0x80] * rng.randrange(9) + [0])
    return bytes(data)


@needs_fast_path
def test_mutated_bodies_never_crash_nor_differ() -> None:
    seeds = [body for body, _ in corpus(60) if 150 < len(body) < 2000][:16]
    seeds.append(sdk_export())
    rng = random.Random(7)
    outcomes = {"equal": 0, "fallback": 0}
    started = time.monotonic()
    for case in range(12000):
        body = mutate(rng, seeds[case % len(seeds)])
        spans = check(body, SMALL if case % 2 else LIMITS)
        outcomes["equal" if spans is not None else "fallback"] += 1
    assert time.monotonic() - started < 60
    assert min(outcomes.values()) > 400, outcomes  # both outcomes are well exercised


# -- the reference path stays tested -------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "test_protobuf_span_whole",
        "test_json_matches_protobuf",
        "test_invalid_spans_are_rejected_alone",
        "test_caps_on_sizes_counts_depth_and_keys",
    ],
)
def test_decode_cases_on_the_reference_path(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp, "FAST_DECODE", False)
    getattr(test_otlp_decode, case)()


def test_protobuf_spans_tries_the_fast_path_first(monkeypatch: pytest.MonkeyPatch) -> None:
    body = pb_export([pb_span("s")]).SerializeToString()
    calls: list[tuple[Any, ...]] = []
    answer: list[Any] | None = ["from C"]

    def decode_spans(*args: Any) -> list[Any] | None:
        calls.append(args)
        return answer

    monkeypatch.setattr(otlp, "FAST_DECODE", True)
    monkeypatch.setattr(otlp, "_otlp_wire", SimpleNamespace(decode_spans=decode_spans))
    assert list(otlp.protobuf_spans(body, SMALL, Decoded())) == ["from C"]
    assert calls == [(body, 12, 3, 2)]
    answer = None  # the fast path declines: the reference decodes
    assert [s.name for s in otlp.protobuf_spans(body, SMALL, Decoded())] == ["s"]


def test_without_the_extension_the_reference_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp, "FAST_DECODE", False)
    monkeypatch.setattr(otlp, "_otlp_wire", None)  # any use of it would raise
    body = pb_export([pb_span(attributes={"a": 1})]).SerializeToString()
    assert decode_protobuf(body, LIMITS).spans[0].attributes == {"a": 1}


@needs_fast_path
def test_the_schema_check_refuses_unknown_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    assert otlp._wire_knows_schema()
    narrower = dict(otlp._WIRE_FIELDS)
    narrower["opentelemetry.proto.common.v1.AnyValue"] = set(range(1, 8))
    monkeypatch.setattr(otlp, "_WIRE_FIELDS", narrower)
    assert not otlp._wire_knows_schema()
