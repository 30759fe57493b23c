"""Span batches through the record pipeline: delivery, idempotency, crash replay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from keel.records.span import SpanRecord
from keel.storage.database import Database
from keel.storage.tables import spans
from tests.records.helpers import abandon, all_rows, make_pipeline, until
from tests.storage.factory import make_record

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    yield database
    await database.close()


def make_span(n: int, trace: int = 1) -> SpanRecord:
    return SpanRecord(
        trace_id=f"{trace:032x}",
        span_id=f"{n + 1:016x}",
        parent_span_id=None if n == 0 else f"{1:016x}",
        name=f"step {n}",
        start_time=1_700_000_000.0 + n,
        end_time=1_700_000_000.5 + n,
        kind="llm" if n % 2 else "chain",
        model="gpt-4o-mini" if n % 2 else None,
        input_tokens=10 if n % 2 else None,
        tags=["a", "b"],
        attributes={"odd key \u2603": [1, 2]},
    )


async def span_rows(db: Database) -> list[dict[str, object]]:
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(spans).order_by(spans.c.span_id))).all()
    return [dict(r._mapping) for r in rows]


async def test_spans_and_requests_share_the_log(tmp_path: Path, db: Database) -> None:
    pipeline = make_pipeline(tmp_path, db)
    await pipeline.start()
    pipeline.submit_spans([make_span(n) for n in range(5)])
    pipeline.submit(make_record(0))
    pipeline.submit_spans([make_span(n) for n in range(5, 8)])
    assert pipeline.pending_spans == 8
    await until(lambda: pipeline.pending_records == 0)
    rows = await span_rows(db)
    assert [r["name"] for r in rows] == [f"step {n}" for n in range(8)]
    assert rows[1]["duration_ms"] == 500.0
    assert rows[1]["tags"] == ["a", "b"]
    assert rows[1]["attributes"] == {"odd key \u2603": [1, 2]}
    assert len(await all_rows(db)) == 1
    assert pipeline.pending_spans == 0
    await pipeline.stop()


async def test_a_resent_batch_is_stored_once(tmp_path: Path, db: Database) -> None:
    pipeline = make_pipeline(tmp_path, db)
    await pipeline.start()
    batch = [make_span(n) for n in range(4)]
    pipeline.submit_spans(batch)
    pipeline.submit_spans(batch)  # an exporter retrying after a timeout
    await until(lambda: pipeline.pending_records == 0)
    assert pipeline.pending_spans == 0  # the retry's spans settle too, stored or not
    await pipeline.stop()
    async with db.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(spans)) == 4


async def test_spans_survive_a_crash(tmp_path: Path, db: Database) -> None:
    first = make_pipeline(tmp_path, db, batch_size=2)
    await first.start()
    first.submit_spans([make_span(n, trace=1) for n in range(3)])
    await until(lambda: first.pending_records == 0)
    first.submit_spans([make_span(n, trace=2) for n in range(3)])
    abandon(first)  # killed before the writer saw the second batch
    second = make_pipeline(tmp_path, db)
    await second.start()
    await until(lambda: second.pending_records == 0)
    assert len(await span_rows(db)) == 6
    await second.stop()
