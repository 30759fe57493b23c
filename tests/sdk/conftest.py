"""Fixtures for keel.sdk tracing tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import keel.sdk


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """keel.sdk.init() exporting to memory (not the global provider, no OpenAI patching)."""
    memory = InMemorySpanExporter()
    keel.sdk.init(
        "http://127.0.0.1:9",
        exporter=memory,
        instrument_openai=False,
        set_global=False,
        service_name="sdk-tests",
    )
    try:
        yield memory
    finally:
        keel.sdk.shutdown()
