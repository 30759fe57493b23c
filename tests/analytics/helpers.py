"""Counted calls with fixed values, a reference computation of the metrics, and an ASGI app
with the trace, score, metrics and cost routes, for the analytics, trace and API tests."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from keel.analytics.query import _percentile
from keel.analytics.rollups import SCALAR_COLUMNS, histogram_bucket
from keel.api import costs, metrics, scores, traces
from keel.api.app import _validation_handler
from keel.api.auth import ApiError, api_error_handler
from keel.keys.auth import Authenticator
from keel.records.model import RequestRecord
from keel.records.span import SpanRecord
from keel.storage.database import Database
from keel.storage.tables import HISTOGRAM_BUCKETS
from tests.storage.factory import T0, make_record

__all__ = [
    "T0",
    "Close",
    "approx_reference",
    "build_app",
    "fields_of",
    "llm_span",
    "make_record",
    "reference",
]

HOUR = 3600.0


def llm_span(n: int, trace: int = 1, **overrides: Any) -> SpanRecord:
    """Span number `n` of trace `trace`: an llm call starting `n` seconds after T0."""
    values: dict[str, Any] = {
        "trace_id": f"{trace:032x}",
        "span_id": f"{n + 1:016x}",
        "name": f"llm {n}",
        "start_time": T0 + n,
        "end_time": T0 + n + 0.25,
        "kind": "llm",
        "provider": "anthropic",
        "model": "claude-sonnet",
        "input_tokens": 7,
        "output_tokens": 3,
        "cost_usd": 0.002,
        "customer": "globex",
        "pipeline": "agent",
        "tags": ["x"],
        "status": "ok",
    }
    values.update(overrides)
    return SpanRecord(**values)


Call = RequestRecord | SpanRecord


def fields_of(call: Call) -> dict[str, Any]:
    if isinstance(call, RequestRecord):
        return {
            "t": call.created_at,
            "source": "gateway",
            "model": call.model,
            "provider": call.provider,
            "pipeline": call.pipeline,
            "customer": call.customer,
            "key_id": call.key_id,
            "prompt": call.prompt_name
            if call.prompt_version is None or call.prompt_name is None
            else f"{call.prompt_name}@{call.prompt_version}",
            "tags": call.tags,
            "error": call.status_code >= 400 or call.error is not None,
            "latency": call.latency_ms,
            "ttft": call.ttft_ms,
            "saved": call.cost_saved_usd or 0.0,
            "hit": call.cache_status in ("hit", "semantic-hit"),
            "input": call.input_tokens or 0,
            "output": call.output_tokens or 0,
            "cost": call.cost_usd or 0.0,
        }
    return {
        "t": call.start_time,
        "source": "otlp",
        "model": call.model,
        "provider": call.provider,
        "pipeline": call.pipeline,
        "customer": call.customer,
        "key_id": None,
        "prompt": call.prompt_name
        if call.prompt_version is None or call.prompt_name is None
        else f"{call.prompt_name}@{call.prompt_version}",
        "tags": call.tags,
        "error": call.status == "error",
        "latency": call.duration_ms,
        "ttft": call.ttft_ms,
        "saved": 0.0,
        "hit": False,
        "input": call.input_tokens or 0,
        "output": call.output_tokens or 0,
        "cost": call.cost_usd or 0.0,
    }


def reference(
    calls: Iterable[Call],
    since: float,
    until: float,
    keep: Callable[[dict[str, Any]], bool] = lambda f: True,
) -> dict[str, Any]:
    """The metrics of the counted calls in [since, until) that `keep`, computed the plain way."""
    chosen = [f for f in map(fields_of, calls) if since <= f["t"] < until and keep(f)]
    n = len(chosen)
    latencies = [f["latency"] for f in chosen if f["latency"] is not None]
    ttfts = [f["ttft"] for f in chosen if f["ttft"] is not None]
    errors = sum(f["error"] for f in chosen)
    vector = [0.0] * (len(SCALAR_COLUMNS) + 2 * HISTOGRAM_BUCKETS)
    for value in latencies:
        vector[len(SCALAR_COLUMNS) + histogram_bucket(value)] += 1
    for value in ttfts:
        vector[len(SCALAR_COLUMNS) + HISTOGRAM_BUCKETS + histogram_bucket(value)] += 1
    first_lat, first_ttft = len(SCALAR_COLUMNS), len(SCALAR_COLUMNS) + HISTOGRAM_BUCKETS
    return {
        "requests": n,
        "errors": errors,
        "error_rate": errors / n if n else None,
        "latency_avg": sum(latencies) / len(latencies) if latencies else None,
        "latency_p50": _percentile(vector, first_lat, 0.5),
        "latency_p95": _percentile(vector, first_lat, 0.95),
        "latency_p99": _percentile(vector, first_lat, 0.99),
        "ttft_avg": sum(ttfts) / len(ttfts) if ttfts else None,
        "ttft_p50": _percentile(vector, first_ttft, 0.5),
        "ttft_p95": _percentile(vector, first_ttft, 0.95),
        "input_tokens": sum(f["input"] for f in chosen),
        "output_tokens": sum(f["output"] for f in chosen),
        "tokens": sum(f["input"] + f["output"] for f in chosen),
        "cost_usd": math.fsum(f["cost"] for f in chosen),
        "cost_saved_usd": math.fsum(f["saved"] for f in chosen),
        "cache_hit_rate": sum(f["hit"] for f in chosen) / n if n else None,
    }


def approx_reference(
    calls: Iterable[Call],
    since: float,
    until: float,
    keep: Callable[[dict[str, Any]], bool] = lambda f: True,
) -> Any:
    """`reference`, compared with float tolerance (sums in another order round differently)."""
    return Close(reference(calls, since, until, keep))


class Close:
    """Equal to a dict with the same keys, None where this has None, floats within 1e-9."""

    def __init__(self, expected: dict[str, Any]) -> None:
        self.expected = expected

    def __eq__(self, actual: object) -> bool:
        if not isinstance(actual, dict) or actual.keys() != self.expected.keys():
            return False
        return all(_close(actual[k], v) for k, v in self.expected.items())

    def __repr__(self) -> str:
        return f"Close({self.expected!r})"


def _close(actual: Any, expected: Any) -> bool:
    if expected is None or actual is None:
        return actual is expected
    if isinstance(expected, str) or isinstance(actual, str):
        return bool(actual == expected)
    return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12)


def build_app(db: Database, authenticator: Authenticator) -> FastAPI:
    """The analytics-facing routes under /api/v1, as the real server mounts them."""
    app = FastAPI(openapi_url="/api/v1/openapi.json")
    for module in (traces, scores, metrics, costs):
        app.include_router(module.router, prefix="/api/v1")
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.state.authenticator = authenticator
    app.state.db = db
    return app
