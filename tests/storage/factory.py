"""Request records with fixed, readable values for storage and pipeline tests."""

from __future__ import annotations

from typing import Any

from keel.records.model import RequestRecord

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def make_record(n: int = 0, **overrides: Any) -> RequestRecord:
    """Record number `n`: id `req-<n>`, created `n` seconds after T0, a successful chat call."""
    values: dict[str, Any] = {
        "id": f"req-{n:06d}",
        "trace_id": f"{n:032x}",
        "span_id": f"{n:016x}",
        "created_at": T0 + n,
        "endpoint": "chat.completions",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "provider_model": "gpt-4o-mini-2024-07-18",
        "status_code": 200,
        "latency_ms": 120.5,
        "ttft_ms": 40.25,
        "input_tokens": 12,
        "output_tokens": 34,
        "cost_usd": 0.000123,
        "customer": "acme",
        "pipeline": "support",
        "tags": ["a", "b"],
    }
    values.update(overrides)
    return RequestRecord(**values)
