"""Turns one gateway call into its request record: tokens, cost, payloads, metrics, the log.

Everything a record needs is settled here, so the request handlers only say what happened.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from keel.costs.pricing import Pricer
from keel.costs.tokens import estimate_usage, load_in_background
from keel.gateway.errors import GatewayError
from keel.gateway.metadata import RequestMeta, TraceContext
from keel.metrics import Metrics
from keel.providers.base import Usage
from keel.records.model import RequestRecord, new_id

__all__ = ["RecordSink", "Recorder"]


class RecordSink(Protocol):
    def submit(self, record: RequestRecord) -> None: ...

    async def wait_durable(self) -> None: ...

    def has_room(self) -> bool: ...


def _cap(text: str | None, limit: int) -> tuple[str | None, bool]:
    if text is None or len(text) <= limit:
        return text, False
    return text[:limit], True


class Recorder:
    def __init__(
        self,
        sink: RecordSink,
        pricer: Pricer,
        metrics: Metrics,
        *,
        store_payloads: bool,
        payload_max_bytes: int,
        durable: bool,
    ) -> None:
        self.sink = sink
        self.pricer = pricer
        self.metrics = metrics
        self.store_payloads = store_payloads
        self.payload_max = payload_max_bytes
        self.durable = durable
        self._series: dict[tuple[str, str], _Series] = {}

    def begin(
        self,
        endpoint: str,
        model: str | None,
        meta: RequestMeta,
        trace: TraceContext,
        key_id: str | None,
        stream: bool,
    ) -> RequestRecord:
        return RequestRecord(
            id=new_id(),
            trace_id=trace.trace_id,
            span_id=trace.span_id,
            parent_span_id=trace.parent_span_id,
            created_at=time.time(),
            endpoint=endpoint,
            model=model,
            customer=meta.customer,
            pipeline=meta.pipeline,
            tags=meta.tags,
            stream=stream,
            key_id=key_id,
        )

    def settle(
        self,
        record: RequestRecord,
        usage: Usage | None,
        *,
        price_model: str,
        provider_id: str | None,
        messages: Sequence[Any] | None,
        output_text: str,
    ) -> None:
        """Fill tokens and cost; count tokens offline (flagged) when the provider gave none."""
        if usage is None or usage.input_tokens is None:
            load_in_background()  # the tokenizer costs memory only once some call needs it
            estimated = estimate_usage(messages or [], output_text)
            if usage is not None and usage.output_tokens is not None:
                estimated.output_tokens = usage.output_tokens
            usage = estimated
        record.input_tokens = usage.input_tokens
        record.output_tokens = usage.output_tokens
        record.cached_tokens = usage.cached_tokens
        record.cache_write_tokens = usage.cache_write_tokens
        record.reasoning_tokens = usage.reasoning_tokens
        record.tokens_estimated = usage.estimated
        cost = self.pricer.cost(usage, model=price_model, provider_id=provider_id)
        record.cost_usd = cost.usd
        record.cost_estimated = cost.estimated

    def settle_cached(self, record: RequestRecord, usage: Usage | None) -> None:
        """A cached answer: the original call's tokens, and nothing paid this time."""
        if usage is not None:
            record.input_tokens = usage.input_tokens
            record.output_tokens = usage.output_tokens
            record.cached_tokens = usage.cached_tokens
            record.reasoning_tokens = usage.reasoning_tokens
            record.tokens_estimated = usage.estimated
        record.cost_usd = 0.0

    def fail(self, record: RequestRecord, err: GatewayError) -> None:
        record.status_code = record.status_code or err.status
        record.error = err.message
        record.error_type = err.type

    def payloads(self, record: RequestRecord, request: bytes, response: str | None) -> None:
        if not self.store_payloads:
            return
        req_text, cut_req = _cap(request.decode("utf-8", "replace"), self.payload_max)
        resp_text, cut_resp = _cap(response, self.payload_max)
        record.request_body = req_text
        record.response_body = resp_text
        record.payload_truncated = cut_req or cut_resp

    def stub(self, record: RequestRecord) -> None:
        """Log a stream's record before its status line goes out; the final one replaces it."""
        stub = RequestRecord.from_dict(record.to_dict())
        stub.final = False
        stub.status_code = 200
        stub.request_body = stub.response_body = None
        self.sink.submit(stub)

    def commit(self, record: RequestRecord, started: float) -> None:
        """Log the final record (raises LogFullError) and count it in the metrics."""
        if record.latency_ms is None:
            record.latency_ms = (time.perf_counter() - started) * 1000.0
        self.sink.submit(record)
        self._observe(record)

    def _observe(self, record: RequestRecord) -> None:
        model = (record.model or "-") if record.provider else "-"
        provider = record.provider or "-"
        series = self._series.get((model, provider))
        if series is None:
            series = self._series_for(model, provider)
        series.requests(record.status_code).inc()
        if record.error_type:
            self.metrics.errors.labels(model, provider, record.error_type).inc()
        if record.latency_ms is not None:
            series.latency.observe(record.latency_ms / 1000.0)
        if record.ttft_ms is not None:
            series.ttft.observe(record.ttft_ms / 1000.0)
        if record.input_tokens:
            series.input_tokens.inc(record.input_tokens)
        if record.output_tokens:
            series.output_tokens.inc(record.output_tokens)
        if record.cached_tokens:
            series.tokens("cached").inc(record.cached_tokens)
        if record.reasoning_tokens:
            series.tokens("reasoning").inc(record.reasoning_tokens)
        if record.cost_usd:
            series.cost.inc(record.cost_usd)

    def _series_for(self, model: str, provider: str) -> _Series:
        # Looking a labelled child up costs more than updating it: keep them per model. The
        # labels are bounded: unknown models are counted under "-".
        series = _Series(self.metrics, model, provider)
        if len(self._series) < 10_000:
            self._series[(model, provider)] = series
        return series


class _Series:
    """The metric children of one (model, provider)."""

    def __init__(self, m: Metrics, model: str, provider: str) -> None:
        self._m, self._model, self._provider = m, model, provider
        self._requests: dict[int, Any] = {}
        self.latency = m.latency.labels(model, provider)
        self.ttft = m.ttft.labels(model, provider)
        self.input_tokens = m.tokens.labels(model, provider, "input")
        self.output_tokens = m.tokens.labels(model, provider, "output")
        self.cost = m.cost.labels(model, provider)

    def requests(self, status: int) -> Any:
        child = self._requests.get(status)
        if child is None:
            child = self._requests[status] = self._m.requests.labels(
                self._model, self._provider, str(status)
            )
        return child

    def tokens(self, kind: str) -> Any:
        return self._m.tokens.labels(self._model, self._provider, kind)
