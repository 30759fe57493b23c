"""The demo application's tracing: keel.sdk's `init()` with an OTLP exporter that counts.

The counts let the summary say how many spans Keel accepted, rather than assume it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from keel.demo.client import DemoError
from keel.sdk import tracing

__all__ = ["CountingExporter", "DemoTracing"]

SERVICE_NAME = "keel-demo"


class CountingExporter(SpanExporter):
    """Passes spans on to `inner`, counting those it exported and those it could not."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.exported = 0
        self.failed = 0
        self._abandoned = False
        self._lock = threading.Lock()

    def abandon(self) -> None:
        """Count what is left as failed without sending it (Keel is gone)."""
        self._abandoned = True

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = SpanExportResult.FAILURE if self._abandoned else self.inner.export(spans)
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class DemoTracing:
    """keel.sdk tracing for the length of the demo: `start`, then `close` (which flushes)."""

    def __init__(self, exporter: CountingExporter) -> None:
        self.exporter = exporter

    @classmethod
    def start(cls, url: str, api_key: str | None) -> DemoTracing:
        if tracing.current() is not None:
            raise DemoError("keel.sdk tracing already runs in this process")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        otlp = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers=headers, timeout=5)
        exporter = CountingExporter(otlp)
        tracing.init(
            url,
            api_key,
            service_name=SERVICE_NAME,
            instrument_openai=False,  # the demo calls the gateway with httpx, spans made here
            set_global=False,
            exporter=exporter,
        )
        return cls(exporter)

    def flush(self, timeout_s: float = 15.0) -> bool:
        return tracing.flush(timeout_s)

    def close(self) -> None:
        tracing.shutdown()
