"""The query layer against a plain computation of the same metrics, on both dialects.

The rollups answer aligned ranges with at most one filter; edges and other queries read the raw
tables. Comparing every path with `reference` shows they agree, to the call.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from keel.analytics import query
from keel.analytics.query import DIMENSIONS, METRICS, Filters, breakdown, series, summary
from keel.analytics.rollups import HISTOGRAM_BOUNDS, histogram_bucket
from keel.records.model import RequestRecord
from keel.records.span import SpanRecord
from keel.storage.batch import write_batch
from keel.storage.database import Database
from keel.storage.tables import HISTOGRAM_BASE
from tests.analytics.helpers import (
    T0,
    Close,
    approx_reference,
    fields_of,
    llm_span,
    make_record,
    reference,
)

pytestmark = pytest.mark.timeout(120)

START = T0 - T0 % 3600 - 2 * 3600  # two hours before T0's hour
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet")
CUSTOMERS = ("acme", "globex", None)
TAGS = (["a"], ["a", "b"], [], ["c"])


def _calls(n: int = 600, seed: int = 7) -> list[RequestRecord | SpanRecord]:
    rng = random.Random(seed)
    calls: list[RequestRecord | SpanRecord] = []
    for i in range(n):
        at = START + rng.uniform(0, 30 * 3600)
        common: dict[str, Any] = {
            "model": rng.choice(MODELS),
            "customer": rng.choice(CUSTOMERS),
            "pipeline": rng.choice(("chat", "rag")),
            "tags": list(rng.choice(TAGS)),
            "cost_usd": rng.choice((None, round(rng.uniform(0, 0.05), 6))),
            "input_tokens": rng.randint(0, 500),
            "output_tokens": rng.choice((None, rng.randint(0, 300))),
            "ttft_ms": rng.choice((None, rng.lognormvariate(4, 1))),
            "prompt_name": rng.choice((None, "summarize", "classify")),
            "prompt_version": rng.choice((None, 1, 2)),
        }
        latency = rng.lognormvariate(6, 1.2)
        if i % 3:
            calls.append(
                make_record(
                    i,
                    created_at=at,
                    latency_ms=rng.choice((latency, None)),
                    status_code=rng.choice((200, 200, 200, 429, 500)),
                    provider=rng.choice(("openai", "mock")),
                    key_id=rng.choice(("k1", "k2", None)),
                    cache_status=rng.choice((None, "hit", "miss", "semantic-hit")),
                    cost_saved_usd=rng.choice((None, 0.01)),
                    **common,
                )
            )
        else:
            calls.append(
                llm_span(
                    i,
                    trace=i,
                    start_time=at,
                    end_time=at + latency / 1000,
                    status=rng.choice(("ok", "ok", "error", "unset")),
                    provider="anthropic",
                    kind=rng.choice(("llm", "embedding")),
                    **common,
                )
            )
    return calls


@pytest.fixture
async def calls(db: Database) -> list[RequestRecord | SpanRecord]:
    data = _calls()
    for start in range(0, len(data), 97):  # several batches, as the pipeline writes them
        await write_batch(db, data[start : start + 97])
    # Spans that are not counted calls: they must not show anywhere.
    await write_batch(db, [llm_span(5000, counted=False), llm_span(5001, kind="tool")])
    return data


RANGES = [
    (START, START + 30 * 3600),  # whole hours: hourly rollups only
    (START + 125.5, START + 20 * 3600 + 61.25),  # minute and raw edges
    (START + 3600 * 5 + 17, START + 3600 * 5 + 1500),  # within one hour
    (START + 30, START + 40),  # within one minute
]


def _keep(dimension: str, value: str) -> Any:
    def keep(f: dict[str, Any]) -> bool:
        if dimension == "tag":
            return value in f["tags"]
        if dimension == "prompt" and "@" not in value:
            return f["prompt"] is not None and f["prompt"].split("@")[0] == value
        return f[dimension] == value

    return keep


FILTERS = [
    ("model", "gpt-4o"),
    ("customer", "acme"),
    ("pipeline", "rag"),
    ("provider", "anthropic"),
    ("key_id", "k1"),
    ("prompt", "summarize"),
    ("prompt", "classify@2"),
    ("tag", "b"),
    ("source", "otlp"),
    ("source", "gateway"),
]


@pytest.mark.parametrize("since_until", RANGES)
async def test_summary_with_no_filter_one_filter_and_two_filters(
    db: Database, calls: list[Any], since_until: tuple[float, float]
) -> None:
    since, until = since_until
    assert await summary(db, since, until, Filters()) == approx_reference(calls, since, until)
    for dimension, value in FILTERS:
        filters = Filters(**{dimension: value})
        expected = approx_reference(calls, since, until, _keep(dimension, value))
        assert await summary(db, since, until, filters) == expected, (dimension, value)
    both = Filters(model="gpt-4o", tag="a")  # two filters: the raw tables answer
    keep_model, keep_tag = _keep("model", "gpt-4o"), _keep("tag", "a")
    expected = approx_reference(calls, since, until, lambda f: keep_model(f) and keep_tag(f))
    assert await summary(db, since, until, both) == expected


@pytest.mark.parametrize("step", [3600, 7200, 300, 60, 45])
async def test_series_steps_are_aligned_and_add_up_to_the_summary(
    db: Database, calls: list[Any], step: int
) -> None:
    hours = 20 if step >= 300 else 3  # fewer points for the reference to compute
    since, until = START + 125.5, START + hours * 3600 + 61.25
    for filters, keep in (
        (Filters(), lambda f: True),
        (Filters(customer="globex"), _keep("customer", "globex")),
    ):
        points = await series(db, since, until, step, filters)
        first = since - since % step
        assert [p["t"] for p in points] == list(range(int(first), int(until), step))
        for point in points:
            start, end = max(point["t"], since), min(point["t"] + step, until)
            assert point == Close({"t": point["t"], **reference(calls, start, end, keep)})
        total = await summary(db, since, until, filters)
        assert sum(p["requests"] for p in points) == total["requests"]
        assert sum(p["cost_usd"] for p in points) == pytest.approx(total["cost_usd"])


async def test_series_includes_empty_steps(db: Database, calls: list[Any]) -> None:
    since = START - 3 * 3600
    points = await series(db, since, START + 3600, 3600, Filters())
    assert [p["t"] for p in points] == [since, since + 3600, since + 7200, START]
    empty = {m: None for m in METRICS} | {
        "requests": 0,
        "errors": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "tokens": 0,
        "cost_usd": 0.0,
        "cost_saved_usd": 0.0,
    }
    assert points[:3] == [{"t": t, **empty} for t in (since, since + 3600, since + 7200)]
    assert points[3]["requests"] > 0


@pytest.mark.parametrize("since_until", RANGES[:2])
async def test_breakdowns_match_the_reference(
    db: Database, calls: list[Any], since_until: tuple[float, float]
) -> None:
    for dimension in DIMENSIONS:
        await _check_breakdown(db, calls, dimension, *since_until)


async def _check_breakdown(
    db: Database, calls: list[Any], dimension: str, since: float, until: float
) -> None:
    values: set[str | None] = set()
    for f in map(fields_of, calls):
        if since <= f["t"] < until:
            values.update(f["tags"] if dimension == "tag" else [f[dimension]])
    expected = [
        {"value": value, **reference(calls, since, until, _exactly(dimension, value))}
        for value in values
    ]
    expected.sort(key=lambda r: (-r["cost_usd"], r["value"] or ""))
    rows = await breakdown(db, since, until, dimension, Filters(), limit=1000)
    assert [r["value"] for r in rows] == [r["value"] for r in expected]
    assert rows == [Close(r) for r in expected]
    # With a filter on another dimension the raw tables answer; on the same one, the rollups.
    some = _SOME_VALUE.get(dimension, "x")
    for filters, keep in (
        (Filters(pipeline="rag"), _keep("pipeline", "rag")),
        (Filters(**{dimension: some}), _keep(dimension, some)),
    ):
        for row in await breakdown(db, since, until, dimension, filters, limit=1000):
            value = row.pop("value")
            both = _both(keep, _exactly(dimension, value))
            assert row == approx_reference(calls, since, until, both)


_SOME_VALUE = {"tag": "b", "source": "otlp", "model": "gpt-4o", "prompt": "classify"}


def _exactly(dimension: str, value: str | None) -> Any:
    """Calls whose value of `dimension` is exactly `value` (a tag: one of the call's tags)."""
    if dimension == "tag":
        return lambda f: value in f["tags"]
    return lambda f: f[dimension] == value


def _both(first: Any, second: Any) -> Any:
    return lambda f: first(f) and second(f)


async def test_breakdown_order_and_limit(db: Database, calls: list[Any]) -> None:
    since, until = START, START + 30 * 3600
    rows = await breakdown(db, since, until, "model", Filters(), limit=2, order_by="requests")
    everything = await breakdown(db, since, until, "model", Filters(), order_by="requests")
    assert len(rows) == 2 and rows == [Close(r) for r in everything[:2]]
    assert [r["requests"] for r in everything] == sorted(
        (r["requests"] for r in everything), reverse=True
    )
    by_tag = await breakdown(db, since, until, "tag", Filters(), order_by="requests")
    # A call with tags a and b counts under each; calls without tags under none.
    assert {r["value"] for r in by_tag} == {"a", "b", "c"}
    assert (
        sum(r["requests"] for r in by_tag)
        > (await summary(db, since, until, Filters(tag="a")))["requests"]
    )


async def test_percentiles_are_within_the_bucket_of_the_exact_value(db: Database) -> None:
    rng = random.Random(3)
    latencies = [rng.lognormvariate(5, 1.5) for _ in range(2000)]
    records = [make_record(i, latency_ms=v, created_at=T0 + i) for i, v in enumerate(latencies)]
    await write_batch(db, records)
    for since, until in ((T0 - T0 % 3600, T0 + 7200), (T0 + 0.5, T0 + 1999.5)):
        result = await summary(db, since, until, Filters())
        inside = sorted(r.latency_ms or 0.0 for r in records if since <= r.created_at < until)
        assert len(inside) in (2000, 1999)
        for q, metric in ((0.5, "latency_p50"), (0.95, "latency_p95"), (0.99, "latency_p99")):
            exact = inside[math.ceil(q * len(inside)) - 1]  # nearest rank
            bucket = histogram_bucket(exact)
            low = 0.0 if bucket == 0 else HISTOGRAM_BOUNDS[bucket - 1]
            high = HISTOGRAM_BOUNDS[bucket] if bucket < len(HISTOGRAM_BOUNDS) else math.inf
            estimate = result[metric]
            assert estimate is not None and low <= estimate <= high, (metric, exact, estimate)
            assert abs(estimate - exact) <= exact * (HISTOGRAM_BASE - 1)


async def test_window_value_and_no_data(db: Database, calls: list[Any]) -> None:
    since, until = START, START + 3600
    expected = reference(calls, since, until)
    assert await query.window_value(db, "requests", since, until, Filters()) == expected["requests"]
    nothing = (START - 7200, START - 3600)
    assert await query.window_value(db, "error_rate", *nothing, Filters()) is None
    assert await query.window_value(db, "requests", *nothing, Filters()) == 0
    assert await query.window_value(db, "latency_p95", *nothing, Filters(model="x")) is None


async def test_invalid_arguments_are_refused_with_the_reason(db: Database) -> None:
    with pytest.raises(ValueError, match="unknown dimension 'colour'"):
        await breakdown(db, 0, 10, "colour", Filters())
    with pytest.raises(ValueError, match="unknown metric 'speed'"):
        await query.window_value(db, "speed", 0, 10, Filters())
    with pytest.raises(ValueError, match="at most 10000"):
        await series(db, 0, 86400 * 30, 60, Filters())
    with pytest.raises(ValueError, match="step"):
        await series(db, 0, 10, 0, Filters())
    with pytest.raises(ValueError, match="until must not be before since"):
        await summary(db, 10, 0, Filters())
    with pytest.raises(ValueError, match="source must be"):
        Filters(source="kafka")
