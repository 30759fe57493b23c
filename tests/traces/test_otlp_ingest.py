"""`POST /v1/traces` against a real `keel serve`: bad input, fuzzing, caps, auth, full log.

Bad input answers 400/413/415 (never 500) with an OTLP error body and writes nothing.
"""

from __future__ import annotations

import gzip
import json
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.servers import KeelProcess
from tests.traces.otlp_helpers import (
    CHILD,
    ROOT,
    TRACE,
    drained,
    json_export,
    json_span,
    metric,
    pb_export,
    pb_span,
    stored_spans,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

PROTOBUF = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}
MAX_BODY = 256 * 1024
MAX_DECOMPRESSED = 1024 * 1024


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    env = {
        "KEEL_OTLP_MAX_BODY_BYTES": str(MAX_BODY),
        "KEEL_OTLP_MAX_DECOMPRESSED_BYTES": str(MAX_DECOMPRESSED),
        "KEEL_OTLP_MAX_ATTRIBUTE_LENGTH": "1000",
    }
    process = KeelProcess(tmp_path_factory.mktemp("keel"), env=env).start()
    yield process
    process.stop()
    assert "Traceback" not in process.log()


def _db(keel: KeelProcess) -> str:
    return f"sqlite:///{keel.data_dir / 'keel.db'}"


def _rows(keel: KeelProcess) -> int:
    with sqlite3.connect(keel.data_dir / "keel.db") as conn:
        return int(conn.execute("SELECT count(*) FROM spans").fetchone()[0])


def post(keel: KeelProcess, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{keel.url}/v1/traces", content=body, headers=headers, timeout=30)


VALID = pb_export([pb_span("ok")]).SerializeToString()
BOMB = gzip.compress(b"\0" * (64 * 1024 * 1024))


@pytest.mark.parametrize(
    ("method", "headers", "body", "status"),
    [
        ("GET", PROTOBUF, b"", 405),
        ("POST", {"content-type": "text/plain"}, VALID, 415),
        ("POST", {}, VALID, 415),
        ("POST", {**PROTOBUF, "content-encoding": "br"}, VALID, 415),
        ("POST", PROTOBUF, b"\xff\xfe garbage", 400),
        ("POST", PROTOBUF, VALID[:-5], 400),
        ("POST", {**PROTOBUF, "content-encoding": "gzip"}, VALID, 400),  # not gzip
        ("POST", {**PROTOBUF, "content-encoding": "gzip"}, gzip.compress(VALID)[:-10], 400),
        ("POST", JSON, b'{"resourceSpans": ', 400),
        ("POST", JSON, b'{"resourceSpans": {"not": "a list"}}', 400),
        ("POST", JSON, b"\xff\xfe", 400),
        ("POST", PROTOBUF, VALID + b"\x0a" * MAX_BODY, 413),
        ("POST", {**PROTOBUF, "content-encoding": "gzip"}, BOMB, 413),
        ("POST", PROTOBUF, b"\x0a\x00" * (MAX_DECOMPRESSED // 2 + 1), 413),
    ],
)
def test_bad_requests_answer_otlp_errors_and_write_nothing(
    keel: KeelProcess, method: str, headers: dict[str, str], body: bytes, status: int
) -> None:
    before = _rows(keel)
    response = httpx.request(
        method, f"{keel.url}/v1/traces", content=body, headers=headers, timeout=30
    )
    assert response.status_code == status
    if headers.get("content-type") == PROTOBUF["content-type"]:
        assert response.headers["content-type"] == "application/x-protobuf"
        error = Status.FromString(response.content)
        assert error.code != 0 and error.message
    else:
        assert response.headers["content-type"] == "application/json"
        error_json = response.json()
        assert error_json["code"] != 0 and error_json["message"]
    if status == 405:
        assert response.headers["allow"] == "POST"
    drained(keel.url)
    assert _rows(keel) == before


def _fuzz_cases(rng: random.Random) -> Iterator[tuple[bytes, dict[str, str]]]:
    valid = pb_export(
        [
            pb_span(
                "fuzz",
                span_id=CHILD,
                parent=ROOT,
                attributes={"a": "b" * 50, "n": 3, "l": [1, {"k": [True, 1.5]}], "by": b"\x01"},
                events=[("exception", 5, {"exception.message": "boom"})],
            )
        ],
        resource={"service.name": "fuzz"},
    ).SerializeToString()
    for _ in range(60):
        yield bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))), PROTOBUF
    for cut in sorted(rng.sample(range(len(valid)), 40)):
        yield valid[:cut], PROTOBUF
    for _ in range(80):
        mutated = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
        yield bytes(mutated), PROTOBUF
    for _ in range(30):
        yield bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200))), JSON


JUNK: list[Any] = [
    None,
    True,
    0,
    -1,
    2**70,
    1.5e308,
    "",
    "x",
    "💥",
    "ZZ" * 16,
    [],
    {},
    [None],
    {"stringValue": None},
    {"arrayValue": {"values": {"a": 1}}},
    {"kvlistValue": {"values": [1, {"key": 5}]}},
    {"intValue": "12abc"},
    {"doubleValue": "Infinity"},
    {"bytesValue": 17},
]


def _mutate(node: Any, rng: random.Random) -> Any:
    if rng.random() < 0.12:
        return rng.choice(JUNK)
    if isinstance(node, dict):
        return {k: _mutate(v, rng) for k, v in node.items()}
    if isinstance(node, list):
        return [_mutate(v, rng) for v in node]
    return node


def test_fuzzed_bodies_never_fail_the_server(keel: KeelProcess) -> None:
    rng = random.Random(1234)
    cases = list(_fuzz_cases(rng))
    export = json_export(
        [
            json_span(
                "j",
                attributes={"a": ["x", {"k": 1}], "b": 2.5},
                events=[{"name": "e", "timeUnixNano": "5", "attributes": []}],
                status={"code": 2, "message": "m"},
                links=[{"traceId": TRACE.hex(), "spanId": ROOT.hex()}],
            )
        ],
        resource={"service.name": "json-fuzz"},
    )
    cases += [(json.dumps(_mutate(export, rng)).encode(), JSON) for _ in range(150)]
    with httpx.Client(base_url=keel.url, timeout=30) as client:
        for body, headers in cases:
            response = client.post("/v1/traces", content=body, headers=headers)
            assert response.status_code in (200, 400), (response.status_code, body[:200])
            if response.status_code == 400:
                continue
            if headers is PROTOBUF:
                ExportTraceServiceResponse.FromString(response.content)
            else:
                assert isinstance(response.json(), dict)
    assert metric(keel.url, 'keel_otlp_exports_total{outcome="internal"}') == 0
    drained(keel.url)


def test_odd_keys_and_values_are_data(keel: KeelProcess) -> None:
    odd = {
        "": "empty key",
        "💥 ключ": "unicode",
        "'; DROP TABLE spans; --": "sql",
        'a"b\\c': "quotes",
        "nul\0key": "nul",
        "x" * 5000: "long key",
        "long value": "v" * 5000,
        "deep": [[[[[[[[[[["bottom"]]]]]]]]]]],
    }
    many = {f"attr.{i}": i for i in range(5000)}
    spans = [
        pb_span("odd", span_id=bytes.fromhex("1111111111111111"), attributes=odd),
        pb_span("many", span_id=bytes.fromhex("2222222222222222"), attributes=many),
    ]
    before = _rows(keel)
    response = post(keel, pb_export(spans, scope=("💥", "")).SerializeToString(), PROTOBUF)
    assert response.status_code == 200 and response.content == b""
    drained(keel.url)
    assert _rows(keel) == before + 2
    rows = stored_spans(_db(keel), before + 2)
    stored = rows["1111111111111111"]["attributes"]
    for key in ("", "💥 ключ", "'; DROP TABLE spans; --", 'a"b\\c', "nul\0key"):
        assert stored[key] == odd[key]
    assert stored["long value"] == "v" * 1000 + "…[truncated]"
    assert stored["x" * 1024 + "…[truncated]"] == "long key"
    assert stored["deep"] == [[[[[[[["[truncated: nested deeper than 8 levels]"]]]]]]]]
    capped = rows["2222222222222222"]["attributes"]
    assert capped["keel.dropped_attributes"] == 5000 - 128
    assert sum(k.startswith("attr.") for k in capped) == 128


def test_a_large_export_keeps_first_copies_and_reports_bad_spans(keel: KeelProcess) -> None:
    # 300 spans are decoded and mapped in several slices: a repeat and an invalid span far
    # from their first copies are still found.
    trace = bytes.fromhex("3" * 32)
    spans = [
        pb_span(f"s{i}", trace_id=trace, span_id=(i + 1).to_bytes(8, "big")) for i in range(298)
    ]
    spans.append(pb_span("repeat", trace_id=trace, span_id=(5).to_bytes(8, "big")))
    spans.append(pb_span("bad", trace_id=b"\0" * 16, span_id=(999).to_bytes(8, "big")))
    accepted = metric(keel.url, "keel_otlp_spans_accepted_total")
    before = _rows(keel)
    response = post(keel, pb_export(spans).SerializeToString(), PROTOBUF)
    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 1
    assert "invalid trace_id" in partial.error_message
    drained(keel.url)
    rows = stored_spans(_db(keel), before + 298)
    assert rows[(5).to_bytes(8, "big").hex()]["name"] == "s4"
    assert metric(keel.url, "keel_otlp_spans_accepted_total") == accepted + 298
    assert metric(keel.url, "keel_spans_pending") == 0


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    env = {"KEEL_ADMIN_KEY": "admin-secret-for-tests"}
    process = KeelProcess(tmp_path_factory.mktemp("secured"), env=env).start()
    yield process
    process.stop()


def test_keys_are_checked(secured: KeelProcess) -> None:
    body = pb_export([pb_span("authed")]).SerializeToString()
    missing = post(secured, body, PROTOBUF)
    assert missing.status_code == 401
    assert "missing API key" in Status.FromString(missing.content).message
    wrong = post(secured, orjson.dumps({}), {**JSON, "authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["code"] == 16
    assert "nope" not in wrong.text
    created = httpx.post(
        f"{secured.url}/api/v1/keys",
        json={"name": "tracer", "customer": "acme"},
        headers={"authorization": "Bearer admin-secret-for-tests"},
    )
    assert created.status_code in (200, 201), created.text
    key = created.json()["key"]
    ok = post(secured, body, {**PROTOBUF, "authorization": f"Bearer {key}"})
    assert ok.status_code == 200
    (row,) = stored_spans(f"sqlite:///{secured.data_dir / 'keel.db'}", 1).values()
    assert row["customer"] == "acme"  # the key's customer, as for gateway calls
    assert metric(secured.url, 'keel_otlp_exports_total{outcome="unauthorized"}') == 2


def test_a_full_log_answers_503_with_retry_after(tmp_path: Path) -> None:
    # A log smaller than the room a call must find free: every export is refused.
    keel = KeelProcess(tmp_path / "full", env={"KEEL_WAL_MAX_BYTES": str(512 * 1024)}).start()
    try:
        response = post(keel, VALID, PROTOBUF)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert "full" in Status.FromString(response.content).message
        assert metric(keel.url, 'keel_otlp_exports_total{outcome="unavailable"}') == 1
    finally:
        keel.stop()
    # A log with room for small exports only: the big one is refused by the append itself.
    keel = KeelProcess(tmp_path / "tight", env={"KEEL_WAL_MAX_BYTES": str(1200 * 1024)}).start()
    try:
        big = pb_export(
            [
                pb_span(f"s{i}", span_id=(i + 1).to_bytes(8, "big"), attributes={"v": "x" * 9000})
                for i in range(200)
            ]
        ).SerializeToString()
        response = post(keel, big, PROTOBUF)
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert metric(keel.url, 'keel_otlp_spans_rejected_total{reason="unavailable"}') == 200
        assert post(keel, VALID, PROTOBUF).status_code == 200
    finally:
        keel.stop()
