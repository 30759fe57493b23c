"""The stock OpenTelemetry SDK and OTLP/HTTP exporter against a real `keel serve`.

A nested agent trace with GenAI attributes must land in the spans table (SQLite and
PostgreSQL) with its parent links, model, tokens and cost; gzip and JSON exports too.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from keel.costs.pricing import Pricer
from keel.providers.base import Usage
from tests.servers import KeelProcess
from tests.traces.otlp_helpers import (
    ROOT,
    TRACE,
    drained,
    json_export,
    json_span,
    metric,
    stored_spans,
)

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


@pytest.fixture
def keel(tmp_path: Path, database_url: str) -> Iterator[KeelProcess]:
    process = KeelProcess(tmp_path / "keel", env={"KEEL_DATABASE_URL": database_url}).start()
    yield process
    process.stop()


def _send_agent_trace(url: str, compression: Compression) -> tuple[str, dict[str, str]]:
    """An agent run with a retrieval, an LLM call and a failing tool; returns the trace id and
    the span ids by name."""
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", compression=compression, timeout=10)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("support.agent", "1.2.0")
    ids: dict[str, str] = {}
    with tracer.start_as_current_span("agent run") as root:
        root.set_attribute("openinference.span.kind", "AGENT")
        root.set_attribute("session.id", "session-42")
        root.set_attribute("user.id", "customer-7")
        with tracer.start_as_current_span("retrieve") as retrieve:
            retrieve.set_attribute("openinference.span.kind", "RETRIEVER")
            ids["retrieve"] = f"{retrieve.get_span_context().span_id:016x}"
        with tracer.start_as_current_span("chat gpt-4o-mini") as llm:
            llm.set_attribute("gen_ai.operation.name", "chat")
            llm.set_attribute("gen_ai.provider.name", "openai")
            llm.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            llm.set_attribute("gen_ai.usage.input_tokens", 1000)
            llm.set_attribute("gen_ai.usage.output_tokens", 250)
            llm.set_attribute("gen_ai.input.messages", '[{"role":"user","content":"hi"}]')
            ids["llm"] = f"{llm.get_span_context().span_id:016x}"
            with tracer.start_as_current_span("lookup_order") as tool:
                tool.set_attribute("gen_ai.operation.name", "execute_tool")
                tool.record_exception(TimeoutError("order service timed out"))
                tool.set_status(Status(StatusCode.ERROR))
                ids["tool"] = f"{tool.get_span_context().span_id:016x}"
        ids["root"] = f"{root.get_span_context().span_id:016x}"
        trace_id = f"{root.get_span_context().trace_id:032x}"
    assert provider.force_flush(10_000)
    provider.shutdown()
    return trace_id, ids


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_sdk_trace_lands_in_the_database(
    keel: KeelProcess, database_url: str, compression: Compression
) -> None:
    trace_id, ids = _send_agent_trace(keel.url, compression)
    rows = stored_spans(database_url, 4)
    assert {r["trace_id"] for r in rows.values()} == {trace_id}
    root, retrieve, llm, tool = (rows[ids[n]] for n in ("root", "retrieve", "llm", "tool"))
    assert root["parent_span_id"] is None
    assert retrieve["parent_span_id"] == llm["parent_span_id"] == ids["root"]
    assert tool["parent_span_id"] == ids["llm"]
    assert [r["kind"] for r in (root, retrieve, llm, tool)] == ["agent", "retrieval", "llm", "tool"]
    assert {r["service"] for r in rows.values()} == {"support-bot"}
    assert (root["session_id"], root["customer"]) == ("session-42", "customer-7")
    at = datetime.fromtimestamp(llm["start_time"], UTC)
    expected = Pricer().cost(
        Usage(input_tokens=1000, output_tokens=250),
        model="gpt-4o-mini",
        provider_id="openai",
        at=at,
    )
    assert expected.usd is not None and expected.usd > 0
    assert (llm["provider"], llm["model"], llm["input_tokens"], llm["output_tokens"]) == (
        "openai",
        "gpt-4o-mini",
        1000,
        250,
    )
    assert llm["cost_usd"] == pytest.approx(expected.usd)
    assert not llm["cost_estimated"] and llm["counted"]
    assert llm["input"] == '[{"role":"user","content":"hi"}]'
    assert llm["duration_ms"] >= 0 and llm["end_time"] >= llm["start_time"]
    assert (tool["status"], tool["error"]) == ("error", "TimeoutError: order service timed out")
    assert [e["name"] for e in tool["events"]] == ["exception"]
    assert llm["attributes"]["otel.scope.name"] == "support.agent"
    assert metric(keel.url, "keel_otlp_spans_accepted_total") == 4
    assert metric(keel.url, "keel_spans_pending") == 0


def test_json_export_with_gzip_and_partial_success(keel: KeelProcess, database_url: str) -> None:
    body = json_export(
        [
            json_span("root", attributes={"keel.span.kind": "chain", "keel.tags": ["a", "b"]}),
            json_span("bad", span_id="not-hex"),
        ],
        resource={"service.name": "json-svc"},
    )
    response = httpx.post(
        f"{keel.url}/v1/traces",
        content=gzip.compress(orjson.dumps(body)),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "invalid spanId" in partial["errorMessage"]
    (row,) = stored_spans(database_url, 1).values()
    assert (row["trace_id"], row["span_id"], row["name"], row["kind"]) == (
        TRACE.hex(),
        ROOT.hex(),
        "root",
        "chain",
    )
    assert (row["service"], row["tags"]) == ("json-svc", ["a", "b"])
    # The exporter's retry of the same spans changes nothing.
    again = httpx.post(
        f"{keel.url}/v1/traces",
        content=orjson.dumps(body),
        headers={"content-type": "application/json"},
    )
    assert again.status_code == 200
    assert metric(keel.url, 'keel_otlp_spans_rejected_total{reason="invalid"}') == 2
    drained(keel.url)
    stored_spans(database_url, 1, timeout=0)


@pytest.mark.parametrize("fsync", ["batch", "always"])
def test_accepted_spans_survive_kill_9(tmp_path: Path, fsync: str) -> None:
    """A 200 means the spans are in the log: SIGKILL right after it loses none of them."""
    data_dir = tmp_path / "keel"
    env = {"KEEL_WAL_FSYNC": fsync, "KEEL_WRITER_LINGER_MS": "5000"}  # the writer waits
    keel = KeelProcess(data_dir, env=env).start()
    spans = [
        json_span(f"s{i}", span_id=f"{i + 1:016x}", attributes={"keel.span.kind": "tool"})
        for i in range(300)
    ]
    try:
        for start in range(0, 300, 100):
            response = httpx.post(
                f"{keel.url}/v1/traces",
                content=orjson.dumps(json_export(spans[start : start + 100])),
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 200 and response.json() == {}
    finally:
        keel.kill()
    keel = KeelProcess(data_dir, env={"KEEL_WAL_FSYNC": fsync}).start()
    try:
        rows = stored_spans(f"sqlite:///{data_dir / 'keel.db'}", 300)
        assert {r["name"] for r in rows.values()} == {f"s{i}" for i in range(300)}
    finally:
        keel.stop()
