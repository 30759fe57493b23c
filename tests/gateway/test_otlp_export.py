"""Keel's own spans exported to an operator's OTLP collector (a real HTTP server here)."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from keel.records.model import RequestRecord
from keel.traces.export import SpanExporter, request_span
from tests.servers import KeelProcess, LoopThread

pytestmark = pytest.mark.timeout(60)


class Collector:
    """An OTLP/HTTP traces receiver that keeps what it got and can be told to fail."""

    def __init__(self) -> None:
        self.exports: list[ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.fail_next = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/v1/traces"

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503)
        body = await request.read()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        self.exports.append(message)
        self.headers.append(dict(request.headers))
        return web.Response(body=b"", content_type="application/x-protobuf")

    def spans(self) -> list[tuple[dict[str, object], object]]:
        out = []
        for export in self.exports:
            for resource in export.resource_spans:
                service = {a.key: a.value.string_value for a in resource.resource.attributes}
                for scope in resource.scope_spans:
                    out.extend((service, span) for span in scope.spans)
        return out


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, str, LoopThread]]:
    loop = LoopThread()
    receiver = Collector()
    url = loop.run(receiver.start())
    yield receiver, url, loop
    loop.run(receiver.stop())
    loop.close()


def record(**overrides: object) -> RequestRecord:
    fields: dict[str, object] = {
        "id": "01jabcdefghjkmnpqrstvwxyz0",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "parent_span_id": "a3ce929d0e0e4736",
        "created_at": 1_700_000_000.0,
        "endpoint": "chat.completions",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "provider_model": "gpt-4o-mini-2024-07-18",
        "status_code": 200,
        "latency_ms": 250.0,
        "input_tokens": 12,
        "output_tokens": 5,
        "cost_usd": 0.0000048,
        "customer": "acme",
        "tags": ["beta"],
    }
    fields.update(overrides)
    return RequestRecord(**fields)  # type: ignore[arg-type]


def attributes(span: object) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in span.attributes:  # type: ignore[attr-defined]
        kind = kv.value.WhichOneof("value")
        value = getattr(kv.value, kind)
        out[kv.key] = [v.string_value for v in value.values] if kind == "array_value" else value
    return out


def test_a_record_becomes_a_genai_span() -> None:
    span = request_span(record())
    assert span.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent_span_id.hex() == "a3ce929d0e0e4736"
    assert span.name == "chat gpt-4o-mini"
    assert span.end_time_unix_nano - span.start_time_unix_nano == 250_000_000
    attrs = attributes(span)
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert attrs["gen_ai.usage.input_tokens"] == 12
    assert attrs["keel.tags"] == ["beta"]
    assert "keel.prompt.name" not in attrs  # absent values are left out, not sent as ""


def test_a_failed_call_is_an_error_span() -> None:
    span = request_span(record(status_code=502, error="upstream said no", parent_span_id=None))
    assert span.status.code == span.status.STATUS_CODE_ERROR
    assert span.status.message == "upstream said no"
    assert span.parent_span_id == b""


async def test_exporter_retries_then_drops_and_keeps_going(
    collector: tuple[Collector, str, LoopThread],
) -> None:
    receiver, url, _ = collector
    exporter = SpanExporter(url, batch_size=2, interval_s=0.05, attempts=2, max_queue=3)
    await exporter.start()
    try:
        receiver.fail_next = 2  # both attempts of the first batch fail
        before = len(receiver.exports)
        exporter.offer([record(id=f"r{n}", span_id=f"{n + 1:016x}") for n in range(5)])
        assert exporter.dropped == 2  # the queue holds 3
        deadline = time.monotonic() + 10
        # a batch leaves the queue before its POST ends: wait for every span's outcome
        while exporter.exported + exporter.dropped < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # one batch of 2 dropped after its retries, the last span delivered
        assert (exporter.dropped, exporter.exported) == (4, 1)
        assert len(receiver.exports) == before + 1
    finally:
        await exporter.stop()


def test_keel_exports_each_gateway_call_in_the_callers_trace(
    tmp_path: Path, collector: tuple[Collector, str, LoopThread]
) -> None:
    receiver, url, _ = collector
    keel = KeelProcess(
        tmp_path / "keel",
        env={
            "KEEL_OTLP_EXPORT_URL": url,
            "KEEL_OTLP_EXPORT_HEADERS": "authorization=Bearer collector-token-77",
            "KEEL_OTLP_EXPORT_SERVICE_NAME": "edge-gateway",
        },
    ).start()
    try:
        trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
        answer = httpx.post(
            f"{keel.url}/v1/chat/completions",
            json={"model": "mock/echo", "messages": [{"role": "user", "content": "hi there"}]},
            headers={"traceparent": f"00-{trace_id}-{parent}-01", "x-keel-customer": "acme"},
            timeout=10,
        )
        assert answer.status_code == 200
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            found = [s for s in receiver.spans() if s[1].trace_id.hex() == trace_id]  # type: ignore[attr-defined]
            if found:
                break
            time.sleep(0.1)
        assert found, "the collector got no span of the call"
        service, span = found[0]
        assert service["service.name"] == "edge-gateway"
        assert span.parent_span_id.hex() == parent  # type: ignore[attr-defined]
        attrs = attributes(span)
        assert attrs["gen_ai.request.model"] == "mock/echo"
        assert attrs["keel.customer"] == "acme"
        assert attrs["keel.request_id"] == answer.headers["x-keel-request-id"]
        assert receiver.headers[-1]["Authorization"] == "Bearer collector-token-77"
    finally:
        keel.stop()
    assert "collector-token-77" not in keel.log()
