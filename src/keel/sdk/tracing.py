"""Send an application's traces to Keel: one OpenTelemetry tracer provider, set up by `init()`.

```python
import keel.sdk

keel.sdk.init()                      # KEEL_URL (http://127.0.0.1:4000), KEEL_API_KEY
```

Spans go through a BatchSpanProcessor to Keel's OTLP/HTTP ingest (`{url}/v1/traces`, protobuf,
`Authorization: Bearer <key>`). The provider becomes OpenTelemetry's global one only when the
app has none yet; an app that set up its own keeps it, and Keel's spans (`@observe`, the OpenAI
instrumentation) use Keel's provider directly. Buffered spans are flushed at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from keel import __version__
from keel.sdk.payload import DEFAULT_LIMIT
from keel.sdk.prompts import DEFAULT_URL
from keel.sdk.scope import ScopeProcessor

__all__ = ["Tracing", "current", "flush", "get_tracer", "init", "shutdown"]

log = logging.getLogger("keel.sdk")

TRACER_NAME = "keel.sdk"


@dataclass(frozen=True, slots=True)
class Settings:
    url: str
    api_key: str | None = field(repr=False)
    service_name: str | None
    environment: str | None
    instrument_openai: bool
    sample_rate: float
    capture_content: bool
    max_payload_chars: int
    set_global: bool
    export_timeout_s: float
    exporter: SpanExporter | None


@dataclass(slots=True)
class Tracing:
    """What `init()` set up. `owns_global` tells whether Keel's provider is the global one."""

    settings: Settings
    provider: TracerProvider
    tracer: trace.Tracer
    owns_global: bool

    @property
    def url(self) -> str:
        return self.settings.url

    def flush(self, timeout_s: float = 10.0) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000))


_state: Tracing | None = None
_lock = threading.Lock()
_atexit_registered = False


def current() -> Tracing | None:
    """The active setup, or None before `init()` (and after `shutdown()`)."""
    return _state


def get_tracer() -> trace.Tracer:
    """Keel's tracer after `init()`; before it, the global provider's (a no-op one by default)."""
    state = _state
    return state.tracer if state is not None else _fallback_tracer


# Follows the global provider, even one set after this line (a ProxyTracer until then).
_fallback_tracer = trace.get_tracer(TRACER_NAME, __version__)


def init(
    url: str | None = None,
    api_key: str | None = None,
    *,
    service_name: str | None = None,
    environment: str | None = None,
    instrument_openai: bool = True,
    sample_rate: float = 1.0,
    exporter: SpanExporter | None = None,
    capture_content: bool = True,
    max_payload_chars: int = DEFAULT_LIMIT,
    set_global: bool = True,
    export_timeout_s: float = 5.0,
) -> Tracing:
    """Start sending traces to Keel. Calling it again returns the running setup unchanged.

    `url`/`api_key` default to KEEL_URL (http://127.0.0.1:4000) and KEEL_API_KEY.
    `service_name` defaults to OTEL_SERVICE_NAME. `sample_rate` keeps that fraction of new
    traces (children follow their parent's decision). `exporter` replaces the OTLP exporter
    (tests use an InMemorySpanExporter). `capture_content=False` records no inputs, outputs or
    messages. `set_global=False` never touches OpenTelemetry's global provider.
    `export_timeout_s` bounds one export, retries included: with Keel unreachable, spans are
    dropped after it (and the interpreter's exit waits at most that long).
    """
    global _state
    if not 0.0 <= sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be between 0 and 1, not {sample_rate}")
    if max_payload_chars < 0 or export_timeout_s <= 0:
        raise ValueError("max_payload_chars must be >= 0 and export_timeout_s > 0")
    settings = Settings(
        url=(url or os.environ.get("KEEL_URL") or DEFAULT_URL).rstrip("/"),
        api_key=api_key if api_key is not None else os.environ.get("KEEL_API_KEY") or None,
        service_name=service_name,
        environment=environment,
        instrument_openai=instrument_openai,
        sample_rate=sample_rate,
        capture_content=capture_content,
        max_payload_chars=max_payload_chars,
        set_global=set_global,
        export_timeout_s=export_timeout_s,
        exporter=exporter,
    )
    with _lock:
        if _state is not None:
            if _state.settings != settings:
                log.warning("keel.sdk.init() already ran; call shutdown() first to change settings")
            return _state
        _state = _start(settings)
        _register_atexit()
    if instrument_openai:
        from keel.sdk.openai_instrument import instrument_openai as _instrument

        _instrument()
    return _state


def _start(settings: Settings) -> Tracing:
    attributes: dict[str, Any] = {}
    if settings.service_name:
        attributes["service.name"] = settings.service_name
    if settings.environment:
        attributes["deployment.environment.name"] = settings.environment
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(settings.sample_rate)),
        resource=Resource.create(attributes),
        shutdown_on_exit=False,  # our atexit hook flushes, then shuts down
    )
    provider.add_span_processor(ScopeProcessor())
    provider.add_span_processor(BatchSpanProcessor(settings.exporter or _otlp_exporter(settings)))
    owns_global = False
    if settings.set_global and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
        owns_global = True
    tracer = provider.get_tracer(TRACER_NAME, __version__)
    return Tracing(settings, provider, tracer, owns_global)


def _otlp_exporter(settings: Settings) -> SpanExporter:
    # Imported here: it pulls in `requests`, which an app that never calls init() need not load.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    return OTLPSpanExporter(
        endpoint=f"{settings.url}/v1/traces", headers=headers, timeout=settings.export_timeout_s
    )


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True


def flush(timeout_s: float = 10.0) -> bool:
    """Export every finished span now; False if that did not complete within `timeout_s`."""
    state = _state
    return state.flush(timeout_s) if state is not None else True


def shutdown() -> None:
    """Flush, stop exporting and remove the OpenAI instrumentation. `init()` may run again.

    When Keel's provider had become the global one, it stays registered there (OpenTelemetry
    allows setting the global provider once) but no longer exports.
    """
    global _state
    with _lock:
        state, _state = _state, None
    if state is None:
        return
    if state.settings.instrument_openai:
        from keel.sdk.openai_instrument import uninstrument_openai

        uninstrument_openai()
    state.provider.shutdown()  # flushes the batch processor first
