"""Rollups written with each batch: exact once-only counting, replay, resend, stub→final."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from keel.analytics.query import Filters, summary
from keel.analytics.rollups import VALUE_COLUMNS, histogram_bucket
from keel.records.pipeline import INTERRUPTED_ERROR
from keel.storage.batch import write_batch
from keel.storage.database import Database
from keel.storage.tables import rollups
from tests.analytics.helpers import T0, Close, approx_reference, llm_span, make_record, reference
from tests.records.helpers import abandon, make_pipeline, until

pytestmark = pytest.mark.timeout(60)

EVERYTHING = (T0 - 86400, T0 + 86400)


async def _rows(db: Database, **where: Any) -> dict[tuple[str, int, str, str], dict[str, Any]]:
    query = select(rollups).where(*(rollups.c[k] == v for k, v in where.items()))
    async with db.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    out = {}
    for row in rows:
        values = {c: row._mapping[c] for c in VALUE_COLUMNS if row._mapping[c]}
        out[(row.grain, row.bucket, row.dimension, row.value)] = values
    return out


async def test_one_batch_makes_minute_totals_and_hourly_rows_per_dimension(db: Database) -> None:
    request = make_record(
        0,
        created_at=T0 + 5,
        key_id="k1",
        prompt_name="summarize",
        prompt_version=3,
        cache_status="hit",
        cost_saved_usd=0.5,
        cached_tokens=4,
    )
    span = llm_span(70, ttft_ms=None, tags=["x", "x", "y"], status="error")
    await write_batch(db, [request, span])

    minute0, minute1 = int(T0 // 60) * 60, int((T0 + 70) // 60) * 60
    hour = minute0 - minute0 % 3600
    lat = f"lat_{histogram_bucket(120.5):02d}"
    ttft = f"ttft_{histogram_bucket(40.25):02d}"
    span_lat = f"lat_{histogram_bucket(250.0):02d}"
    gateway = {
        "requests": 1,
        "input_tokens": 12,
        "output_tokens": 34,
        "cached_tokens": 4,
        "cost_usd": 0.000123,
        "cost_saved_usd": 0.5,
        "cache_hits": 1,
        "latency_count": 1,
        "latency_sum_ms": 120.5,
        "ttft_count": 1,
        "ttft_sum_ms": 40.25,
        lat: 1,
        ttft: 1,
    }
    otlp = {
        "requests": 1,
        "errors": 1,
        "input_tokens": 7,
        "output_tokens": 3,
        "cost_usd": 0.002,
        "latency_count": 1,
        "latency_sum_ms": 250.0,
        span_lat: 1,
    }
    both = {k: gateway.get(k, 0) + otlp.get(k, 0) for k in {*gateway, *otlp}}
    both[lat] = both[span_lat] = 1  # lat and span_lat are different buckets
    assert lat != span_lat
    assert await _rows(db) == {
        ("m", minute0, "", ""): gateway,
        ("m", minute1, "", ""): otlp,
        ("h", hour, "", ""): both,
        ("h", hour, "model", "gpt-4o-mini"): gateway,
        ("h", hour, "model", "claude-sonnet"): otlp,
        ("h", hour, "provider", "openai"): gateway,
        ("h", hour, "provider", "anthropic"): otlp,
        ("h", hour, "pipeline", "support"): gateway,
        ("h", hour, "pipeline", "agent"): otlp,
        ("h", hour, "customer", "acme"): gateway,
        ("h", hour, "customer", "globex"): otlp,
        ("h", hour, "key_id", "k1"): gateway,
        ("h", hour, "key_id", ""): otlp,
        ("h", hour, "prompt", "summarize@3"): gateway,
        ("h", hour, "prompt", ""): otlp,
        ("h", hour, "tag", "a"): gateway,
        ("h", hour, "tag", "b"): gateway,
        ("h", hour, "tag", "x"): otlp,  # a repeated tag counts once
        ("h", hour, "tag", "y"): otlp,
        ("h", hour, "source", "gateway"): gateway,
        ("h", hour, "source", "otlp"): otlp,
    }


async def test_only_counted_llm_and_embedding_spans_count(db: Database) -> None:
    calls = [
        llm_span(0),
        llm_span(1, kind="embedding"),
        llm_span(2, counted=False),  # an app's span of a call that went through the gateway
        llm_span(3, kind="chain"),
        llm_span(4, kind="tool"),
    ]
    await write_batch(db, calls)
    result = await summary(db, *EVERYTHING, Filters())
    assert result == approx_reference(calls[:2], *EVERYTHING)
    assert result["requests"] == 2


async def test_a_replayed_or_resent_batch_counts_once(db: Database) -> None:
    first = [make_record(i) for i in range(5)] + [llm_span(i) for i in range(5)]
    await write_batch(db, first)
    once = await _rows(db)
    await write_batch(db, first)  # the pipeline replays its log after a crash
    assert await _rows(db) == once
    resent = [llm_span(i) for i in range(3, 8)]  # an exporter re-sends, with new spans too
    await write_batch(db, resent)
    calls = first + [llm_span(i) for i in range(5, 8)]
    expected = reference(calls, *EVERYTHING)
    assert await summary(db, *EVERYTHING, Filters()) == Close(expected)
    assert expected["requests"] == 13


async def test_a_stub_replaced_by_its_final_record_counts_once_with_the_final_values(
    db: Database,
) -> None:
    final = make_record(1, latency_ms=900.0, output_tokens=50, cost_usd=0.01)
    stub = dataclasses.replace(
        final,
        final=False,
        latency_ms=None,
        ttft_ms=None,
        output_tokens=None,
        cost_usd=None,
        error=INTERRUPTED_ERROR,
        error_type="interrupted",
    )
    await write_batch(db, [stub])  # written as interrupted (the final came too late)
    assert await summary(db, *EVERYTHING, Filters()) == approx_reference([stub], *EVERYTHING)
    assert (await summary(db, *EVERYTHING, Filters()))["errors"] == 1
    await write_batch(db, [final])
    await write_batch(db, [final, stub])  # replays change nothing: the first final wins
    await write_batch(db, [stub])
    assert await summary(db, *EVERYTHING, Filters()) == approx_reference([final], *EVERYTHING)
    by_customer = await _rows(db, grain="h", dimension="customer")
    assert [v["requests"] for v in by_customer.values()] == [1]
    assert "errors" not in next(iter(by_customer.values()))


async def test_a_stub_and_its_final_in_one_batch_count_once(db: Database) -> None:
    final = make_record(2)
    stub = dataclasses.replace(final, final=False, error=INTERRUPTED_ERROR)
    await write_batch(db, [stub, final])
    assert await summary(db, *EVERYTHING, Filters()) == approx_reference([final], *EVERYTHING)


async def test_concurrent_writers_of_the_same_spans_count_them_once(database_url: str) -> None:
    # Two replicas receive the same export (a retry to another replica) and write it at once.
    dbs = [await Database.open(database_url) for _ in range(3)]
    try:
        batch = [llm_span(i) for i in range(200)] + [make_record(i) for i in range(50)]
        await asyncio.gather(*(write_batch(db, batch) for db in dbs))
        result = await summary(dbs[0], *EVERYTHING, Filters())
        assert result == approx_reference(batch, *EVERYTHING)
    finally:
        for db in dbs:
            await db.close()


async def test_the_pipeline_replaying_its_log_after_a_crash_counts_once(
    tmp_path: Path, db: Database
) -> None:
    calls = [llm_span(i, trace=7) for i in range(30)]
    pipeline = make_pipeline(tmp_path, db)
    await pipeline.start()
    pipeline.submit_spans(calls[:20])
    pipeline.submit(make_record(1))
    await until(lambda: pipeline.written_records == 21)
    abandon(pipeline)  # no checkpoint: the next start replays the same entries

    again = make_pipeline(tmp_path, db)
    await again.start()
    again.submit_spans(calls[15:])
    await until(lambda: again.pending_spans == 0 and again.pending_records == 0)
    await again.stop()
    expected = approx_reference([*calls, make_record(1)], *EVERYTHING)
    assert await summary(db, *EVERYTHING, Filters()) == expected
