"""Keel's own spans, exported over OTLP/HTTP to an operator's collector (optional).

Each gateway call is a span in its caller's trace (the gateway honours `traceparent`). With
`otlp_export_url` set, the record writer hands every stored request record to `SpanExporter`,
which sends them as OTLP protobuf in batches from a background task. Export is logging, so it
fails open: a slow or dead collector costs a bounded queue and a counter of dropped spans, never
a user's call and never a record (the database copy is written first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from keel import __version__
from keel.records.model import RequestRecord

__all__ = ["SpanExporter", "request_span"]

log = logging.getLogger(__name__)

_OPERATIONS = {"chat.completions": "chat", "embeddings": "embeddings"}
_RETRYABLE = {429, 502, 503, 504}


def request_span(record: RequestRecord) -> Span:
    """The OTLP span of one gateway call, named and attributed per the GenAI conventions."""
    operation = _OPERATIONS.get(record.endpoint, record.endpoint)
    start_ns = int(record.created_at * 1e9)
    failed = record.status_code >= 400 or record.error is not None
    span = Span(
        trace_id=bytes.fromhex(record.trace_id),
        span_id=bytes.fromhex(record.span_id),
        name=f"{operation} {record.model}" if record.model else operation,
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + int((record.latency_ms or 0.0) * 1e6),
        status=Status(
            code=Status.STATUS_CODE_ERROR if failed else Status.STATUS_CODE_OK,
            message=(record.error or "") if failed else "",
        ),
    )
    if record.parent_span_id:
        span.parent_span_id = bytes.fromhex(record.parent_span_id)
    span.attributes.extend(_attributes(record, operation))
    return span


def _attributes(record: RequestRecord, operation: str) -> list[KeyValue]:
    values: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": record.provider,
        "gen_ai.request.model": record.model,
        "gen_ai.response.model": record.provider_model,
        "gen_ai.usage.input_tokens": record.input_tokens,
        "gen_ai.usage.output_tokens": record.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": record.cached_tokens,
        "gen_ai.usage.reasoning.output_tokens": record.reasoning_tokens,
        "http.response.status_code": record.status_code or None,
        "error.type": record.error_type,
        "keel.request_id": record.id,
        "keel.cost_usd": record.cost_usd,
        "keel.cost_estimated": record.cost_estimated or None,
        "keel.ttft_ms": record.ttft_ms,
        "keel.customer": record.customer,
        "keel.pipeline": record.pipeline,
        "keel.tags": list(record.tags) or None,
        "keel.prompt.name": record.prompt_name,
        "keel.prompt.version": record.prompt_version,
        "keel.cache": record.cache_status,
        "keel.stream": record.stream,
    }
    return [KeyValue(key=k, value=_any(v)) for k, v in values.items() if v is not None]


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(_any(v) for v in value)
        return out
    return AnyValue(string_value=str(value))


class SpanExporter:
    """A bounded queue of request records and the task that exports them in batches."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        service_name: str = "keel",
        max_queue: int = 10_000,
        batch_size: int = 512,
        interval_s: float = 1.0,
        timeout_s: float = 10.0,
        attempts: int = 3,
    ) -> None:
        self.url = url
        self._headers = {**(headers or {}), "content-type": "application/x-protobuf"}
        self._resource = ResourceSpans()
        self._resource.resource.attributes.extend(
            [
                KeyValue(key="service.name", value=_any(service_name)),
                KeyValue(key="service.version", value=_any(__version__)),
            ]
        )
        self._queue: deque[RequestRecord] = deque()
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._interval = interval_s
        self._timeout = timeout_s
        self._attempts = attempts
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._failing = False
        self.exported = 0
        self.dropped = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def offer(self, records: Iterable[RequestRecord]) -> None:
        """Queue records for export; when the queue is full they are dropped and counted."""
        for record in records:
            if len(self._queue) >= self._max_queue:
                self.dropped += 1
                continue
            self._queue.append(record)
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    async def start(self) -> None:
        # No redirects and no proxies from the environment: the collector is the operator's URL.
        self._client = httpx.AsyncClient(
            timeout=self._timeout, follow_redirects=False, trust_env=False
        )
        self._task = asyncio.create_task(self._run(), name="keel-otlp-export")

    async def stop(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Send what is queued (for at most `timeout` seconds), then close."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while self._queue:
                        await self._send_batch()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self.dropped += len(self._queue)
        self._queue.clear()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            while self._queue:
                await self._send_batch()

    async def _send_batch(self) -> None:
        batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
        request = ExportTraceServiceRequest()
        resource = request.resource_spans.add()
        resource.CopyFrom(self._resource)
        scope = resource.scope_spans.add()
        scope.scope.name = "keel.gateway"
        scope.scope.version = __version__
        scope.spans.extend(request_span(r) for r in batch)
        body = request.SerializeToString()
        for attempt in range(self._attempts):
            problem, retryable = await self._post(body)
            if problem is None:
                self.exported += len(batch)
                if self._failing:
                    self._failing = False
                    log.info("OTLP export works again")
                return
            if not retryable:
                break
            if attempt + 1 < self._attempts:
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt) * (0.5 + random.random()))
        self.dropped += len(batch)
        if not self._failing:  # once per outage, and never the URL's credentials or headers
            self._failing = True
            log.warning("OTLP export failed, %d spans dropped: %s", len(batch), problem)

    async def _post(self, body: bytes) -> tuple[str | None, bool]:
        """(None, _) when the collector took the batch, else (what went wrong, retryable)."""
        assert self._client is not None
        try:
            response = await self._client.post(self.url, content=body, headers=self._headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__, True
        if response.status_code < 300:
            return None, False
        retryable = response.status_code in _RETRYABLE
        return f"collector answered {response.status_code}", retryable
