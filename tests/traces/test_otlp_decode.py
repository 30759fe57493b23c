"""OTLP decoding: protobuf and JSON into neutral spans, caps, invalid spans, gzip."""

from __future__ import annotations

import base64
import gzip
import zlib

import orjson
import pytest

from keel.traces.ingest import BodyTooLarge, gunzip
from keel.traces.otlp import (
    DEEP_MARKER,
    MAX_DEPTH,
    TRUNCATED_MARKER,
    Limits,
    MalformedExport,
    OtlpEvent,
    OtlpSpan,
    decode_json,
    decode_protobuf,
)
from tests.traces.otlp_helpers import (
    CHILD,
    ROOT,
    T0,
    TRACE,
    json_export,
    json_span,
    pb_export,
    pb_span,
)

LIMITS = Limits()


def test_protobuf_span_whole() -> None:
    request = pb_export(
        [
            pb_span(
                "chat gpt-4o",
                span_id=CHILD,
                parent=ROOT,
                kind=3,
                status=2,
                message="upstream said no",
                attributes={
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 12,
                    "temperature": 0.5,
                    "stream": False,
                    "tags": ["a", 1, True],
                    "nested": {"k": {"deeper": "v"}},
                    "raw": b"\x00\x01",
                    "empty": "",
                },
                events=[("exception", T0 + 5, {"exception.type": "ValueError"})],
            )
        ],
        resource={"service.name": "bot", "gen_ai.request.model": "overridden"},
    )
    decoded = decode_protobuf(request.SerializeToString(), LIMITS)
    assert decoded.rejected == 0
    assert decoded.spans == [
        OtlpSpan(
            trace_id=TRACE.hex(),
            span_id=CHILD.hex(),
            parent_span_id=ROOT.hex(),
            name="chat gpt-4o",
            kind=3,
            start_ns=T0,
            end_ns=T0 + 250_000_000,
            status_code=2,
            status_message="upstream said no",
            attributes={
                "service.name": "bot",
                "gen_ai.request.model": "gpt-4o",  # the span's value wins over the resource's
                "gen_ai.usage.input_tokens": 12,
                "temperature": 0.5,
                "stream": False,
                "tags": ["a", 1, True],
                "nested": {"k": {"deeper": "v"}},
                "raw": base64.b64encode(b"\x00\x01").decode(),
                "empty": "",
            },
            scope=("tests", "1.0"),
            events=[OtlpEvent("exception", T0 + 5, {"exception.type": "ValueError"})],
        )
    ]


def test_json_matches_protobuf() -> None:
    attributes = {"a": "text", "n": 7, "x": 1.5, "b": True, "l": ["p", 2], "m": {"k": "v"}}
    pb = decode_protobuf(
        pb_export(
            [pb_span("s", span_id=CHILD, parent=ROOT, attributes=attributes, kind=3)]
        ).SerializeToString(),
        LIMITS,
    )
    js = decode_json(
        orjson.dumps(
            json_export(
                [json_span("s", span_id=CHILD.hex(), parent=ROOT.hex(), attributes=attributes)]
            )
        ),
        LIMITS,
    )
    assert js == pb


def test_json_snake_case_numbers_enum_names_and_bytes() -> None:
    body = {
        "resource_spans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"string_value": "s"}}]
                },
                "scope_spans": [
                    {
                        "scope": {"name": "lib"},
                        "spans": [
                            {
                                "trace_id": TRACE.hex().upper(),
                                "span_id": ROOT.hex(),
                                "name": "n",
                                "kind": "SPAN_KIND_CLIENT",
                                "start_time_unix_nano": T0,  # a number, not a string
                                "end_time_unix_nano": float(T0 + 1000),
                                "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
                                "attributes": [
                                    {"key": "i", "value": {"int_value": 5}},
                                    {"key": "big", "value": {"intValue": "99999999999999999999"}},
                                    {"key": "d", "value": {"double_value": "NaN"}},
                                    {"key": "by", "value": {"bytes_value": "AAE="}},
                                    {"key": "none", "value": {}},
                                    {"key": "arr", "value": {"array_value": {}}},
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    (span,) = decode_json(orjson.dumps(body), LIMITS).spans
    assert (span.trace_id, span.kind, span.status_code, span.status_message) == (
        TRACE.hex(),
        3,
        2,
        "boom",
    )
    assert span.end_ns == int(float(T0 + 1000))  # a JSON double, as sent
    d = span.attributes.pop("d")
    assert d != d  # NaN
    assert span.attributes == {
        "service.name": "s",
        "i": 5,
        "big": "99999999999999999999",  # beyond int64: kept as text, never an unstorable int
        "by": "AAE=",
        "none": None,
        "arr": [],
    }


def test_invalid_spans_are_rejected_alone() -> None:
    spans = [
        pb_span("ok"),
        pb_span("short trace id", trace_id=b"\x01" * 4),
        pb_span("zero span id", span_id=b"\x00" * 8),
        pb_span("bad parent", span_id=CHILD, parent=b"\x01\x02"),
    ]
    decoded = decode_protobuf(pb_export(spans).SerializeToString(), LIMITS)
    assert [s.name for s in decoded.spans] == ["ok"]
    assert decoded.rejected == 3
    assert decoded.error_message.startswith("3 span(s) rejected: invalid trace_id")
    js = json_export(
        [
            json_span("ok"),
            json_span("bad hex", trace_id="zz" * 16),
            json_span("no id", span_id=""),
            json_span("bad time", start=-1),
            json_span("zero parent", parent="0" * 16),
        ]
    )
    decoded = decode_json(orjson.dumps(js), LIMITS)
    assert [(s.name, s.parent_span_id) for s in decoded.spans] == [
        ("ok", None),
        ("zero parent", None),
    ]
    assert decoded.rejected == 3


def test_caps_on_sizes_counts_depth_and_keys() -> None:
    limits = Limits(max_value_length=10, max_attributes=3, max_events=1)
    deep: object = "leaf"
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    attributes = {
        "long": "x" * 50,
        "deep": deep,
        "k" * 5000: "key too long",
        "dropped": 1,
        "dropped too": 2,
    }
    events = [("e1", T0, {}), ("e2", T0, {})]
    (span,) = decode_protobuf(
        pb_export([pb_span(attributes=attributes, events=events)]).SerializeToString(), limits
    ).spans
    assert span.attributes["long"] == "x" * 10 + TRUNCATED_MARKER
    value = span.attributes["deep"]
    for _ in range(MAX_DEPTH):
        (value,) = value
    assert value == DEEP_MARKER
    assert "k" * 1024 + TRUNCATED_MARKER in span.attributes
    assert span.dropped_attributes == 2
    assert [e.name for e in span.events] == ["e1"]
    assert span.dropped_events == 1


def _deep_json(levels: int) -> bytes:
    value = '{"stringValue": "leaf"}'
    for _ in range(levels):
        value = f'{{"kvlistValue": {{"values": [{{"key": "k", "value": {value}}}]}}}}'
    span = (
        orjson.dumps(json_span())[:-1]
        + f',"attributes":[{{"key":"deep","value":{value}}}]}}'.encode()
    )
    return b'{"resourceSpans":[{"scopeSpans":[{"spans":[' + span + b"]}]}]}"


def test_json_depth_cap() -> None:
    (span,) = decode_json(_deep_json(200), LIMITS).spans
    level = span.attributes["deep"]
    for _ in range(MAX_DEPTH):
        level = level["k"]
    assert level == DEEP_MARKER
    with pytest.raises(MalformedExport):  # past the JSON parser's own nesting limit
        decode_json(_deep_json(5000), LIMITS)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\x00garbage",
        b"\x0a\xff\xff\xff\xff\x0f",  # a length past the end
        pb_export([pb_span()]).SerializeToString()[:-7],  # truncated
    ],
)
def test_malformed_protobuf(body: bytes) -> None:
    with pytest.raises(MalformedExport):
        decode_protobuf(body, LIMITS)


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b'"x"', b'{"resourceSpans": 5}', b'{"resourceSpans": [1]}', b"\xff"],
)
def test_malformed_json(body: bytes) -> None:
    with pytest.raises(MalformedExport):
        decode_json(body, LIMITS)


def test_gunzip_round_trip_and_members() -> None:
    data = b"spans " * 1000
    assert gunzip(gzip.compress(data), 10_000) == data
    assert gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 10) == b"abcd"
    assert gunzip(zlib.compress(data), 10_000, wbits=15) == data


def test_gunzip_stops_a_bomb_at_the_cap() -> None:
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))  # 50 MiB of zeros in ~50 KiB
    with pytest.raises(BodyTooLarge):
        gunzip(bomb, 1024 * 1024)
    with pytest.raises(BodyTooLarge):
        gunzip(gzip.compress(b"x" * 101), 100)
    assert gunzip(gzip.compress(b"x" * 100), 100) == b"x" * 100


@pytest.mark.parametrize("body", [b"not gzip", gzip.compress(b"x" * 1000)[:-12], b""])
def test_gunzip_refuses_corrupt_or_truncated(body: bytes) -> None:
    if not body:
        assert gunzip(body, 10) == b""
        return
    with pytest.raises(ValueError):
        gunzip(body, 10_000)
