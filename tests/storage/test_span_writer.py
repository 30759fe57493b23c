"""The span writer process (SQLite only: with PostgreSQL, spans are written in-process, which the
pipeline and storage tests cover on both databases).

Real child processes throughout: batches through the pipe, a child killed between batches, a
row SQLite refuses, and a `keel serve` killed with SIGKILL whose child must not outlive it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from keel.records.pipeline import RecordPipeline
from keel.storage import span_writer
from keel.storage.database import Database
from keel.storage.span_writer import SpanWriterError, SpanWriterProcess
from keel.storage.spans_repo import span_row
from keel.storage.tables import rollups, spans
from tests.records.helpers import make_pipeline, until
from tests.records.test_pipeline_spans import make_span
from tests.servers import KeelProcess
from tests.storage.factory import make_record
from tests.traces.otlp_helpers import json_export, json_span

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(f"sqlite:///{tmp_path / 'keel.db'}")
    yield database
    await database.close()


def with_writer(tmp_path: Path, db: Database) -> tuple[RecordPipeline, SpanWriterProcess]:
    assert db.sqlite_path is not None
    writer = SpanWriterProcess(db.sqlite_path)
    return make_pipeline(tmp_path, db, span_writer=writer), writer


async def span_count(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(spans))).scalar_one())


async def calls_counted(db: Database) -> int:
    """The calls the minute rollups count (llm/embedding spans with `counted`)."""
    async with db.engine.connect() as conn:
        query = select(func.coalesce(func.sum(rollups.c.requests), 0)).where(rollups.c.grain == "m")
        return int((await conn.execute(query)).scalar_one())


async def test_spans_go_through_the_process_once(tmp_path: Path, db: Database) -> None:
    # Spans and a request record in one batch: the record in-process, the spans in the child;
    # a re-sent export (the same spans again) stores and counts nothing twice.
    pipeline, writer = with_writer(tmp_path, db)
    await pipeline.start()
    pipeline.submit_spans([make_span(n, trace=1) for n in range(6)])
    pipeline.submit(make_record(0))
    pipeline.submit_spans([make_span(n, trace=1) for n in range(6)])
    await until(lambda: pipeline.pending_records == 0)
    assert writer.pid is not None
    assert await span_count(db) == 6
    assert await calls_counted(db) == 3 + 1  # spans 1, 3 and 5 are llm calls; and the record
    await pipeline.stop()
    assert writer.pid is None  # stopped with the pipeline


async def signal_between_batches(
    tmp_path: Path, db: Database, sig: signal.Signals, timeout: float = 10.0
) -> tuple[int, int | None]:
    """Two batches of two spans (one an llm call) with `sig` sent to the child between them;
    the child's pid before the signal and after the second batch."""
    pipeline, writer = with_writer(tmp_path, db)
    await pipeline.start()
    pipeline.submit_spans([make_span(n, trace=1) for n in range(2)])
    await until(lambda: pipeline.pending_records == 0)
    before = writer.pid
    assert before is not None
    os.kill(before, sig)
    pipeline.submit_spans([make_span(n, trace=2) for n in range(2)])
    await until(lambda: pipeline.pending_records == 0, timeout)
    after = writer.pid
    await pipeline.stop()
    return before, after


async def test_a_killed_child_is_replaced_and_nothing_is_lost(tmp_path: Path, db: Database) -> None:
    before, after = await signal_between_batches(tmp_path, db, signal.SIGKILL)
    assert after not in (None, before)
    assert await span_count(db) == 4
    assert await calls_counted(db) == 2


async def test_a_stuck_child_is_killed_and_replaced(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("keel.storage.span_writer._TRANSACTION_TIMEOUT_S", 1.0)
    before, after = await signal_between_batches(tmp_path, db, signal.SIGSTOP, timeout=30)
    assert after not in (None, before)  # alive but never answering: killed past the timeout
    assert await span_count(db) == 4
    assert await calls_counted(db) == 2


async def test_sigterm_to_the_group_leaves_the_child_to_its_parent(
    tmp_path: Path, db: Database
) -> None:
    # A service manager stopping Keel signals every process of its group: the child keeps
    # writing until Keel closes its input after the last batch.
    before, after = await signal_between_batches(tmp_path, db, signal.SIGTERM)
    assert after == before
    assert await span_count(db) == 4
    assert await calls_counted(db) == 2


async def test_a_row_sqlite_refuses_is_rejected_alone(tmp_path: Path, db: Database) -> None:
    pipeline, _ = with_writer(tmp_path, db)
    await pipeline.start()
    bad = list(span_row(make_span(1, trace=3)))
    bad[3] = None  # no name: the NOT NULL constraint refuses it
    good = [span_row(make_span(n, trace=3)) for n in (0, 2)]
    pipeline.submit_span_rows([good[0], tuple(bad), good[1]])
    await until(lambda: pipeline.pending_records == 0)
    assert await span_count(db) == 2
    rejected = (tmp_path / "wal" / "rejected.jsonl").read_bytes().splitlines()
    assert len(rejected) == 1
    assert "IntegrityError" in orjson.loads(rejected[0])["reason"]
    await pipeline.stop()


async def test_a_batch_in_parts_counts_once_when_a_later_part_fails(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Transactions of two spans: the first part commits, the second holds a row SQLite
    # refuses; the retry (row by row) writes the first part again, which changes nothing.
    monkeypatch.setattr("keel.storage.span_writer._ROWS_PER_TRANSACTION", 2)
    monkeypatch.setattr("keel.storage.span_writer._FIRST_PART", 2)
    pipeline, _ = with_writer(tmp_path, db)
    await pipeline.start()
    rows = [span_row(make_span(n, trace=4)) for n in range(5)]
    bad = list(rows[2])
    bad[3] = None  # no name
    pipeline.submit_span_rows([rows[0], rows[1], tuple(bad), rows[3], rows[4]])
    await until(lambda: pipeline.pending_records == 0)
    assert await span_count(db) == 4
    assert await calls_counted(db) == 2  # spans 1 and 3, the llm calls, once each
    # Rows go to the child with None as NaN and the flags as 0/1: stored as if in-process.
    async with db.engine.connect() as conn:
        stored = (
            await conn.execute(
                select(spans.c.model, spans.c.output_tokens, spans.c.counted).order_by(
                    spans.c.span_id
                )
            )
        ).all()
    assert [tuple(r) for r in stored] == [
        (None, None, True),
        ("gpt-4o-mini", None, True),
        ("gpt-4o-mini", None, True),
        (None, None, True),
    ]
    assert len((tmp_path / "wal" / "rejected.jsonl").read_bytes().splitlines()) == 1
    await pipeline.stop()


async def test_a_part_partly_stored_adds_only_its_new_calls(tmp_path: Path, db: Database) -> None:
    # The second write holds the first again: its part has calls stored already (1 and 3), so
    # the child sums its rollups itself, from the rows as sent (None as NaN), without them.
    assert db.sqlite_path is not None
    writer = SpanWriterProcess(db.sqlite_path)
    await writer.write([span_row(make_span(n, trace=5)) for n in range(4)])
    await writer.write([span_row(make_span(n, trace=5)) for n in range(8)])
    await writer.stop()
    assert await span_count(db) == 8
    assert await calls_counted(db) == 4
    async with db.engine.connect() as conn:
        sums = (
            await conn.execute(
                select(
                    func.sum(rollups.c.input_tokens),
                    func.sum(rollups.c.output_tokens),
                    func.sum(rollups.c.latency_sum_ms),
                ).where(rollups.c.grain == "m")
            )
        ).one()
    assert tuple(sums) == (40, 0, 2000.0)


def test_a_batch_starts_with_a_short_part() -> None:
    sizes = [(p.start, p.stop) for p in span_writer._parts(9000)]
    assert sizes == [(0, 512), (512, 4608), (4608, 8704), (8704, 9000)]
    assert [(p.start, p.stop) for p in span_writer._parts(300)] == [(0, 300)]


async def test_errors_say_what_failed(tmp_path: Path) -> None:
    writer = SpanWriterProcess(str(tmp_path / "missing" / "keel.db"))  # no such folder
    with pytest.raises(SpanWriterError, match="did not start") as info:
        await writer.write([span_row(make_span(0))])
    assert not info.value.data  # the database's fault, not the row's: the pipeline retries
    await writer.stop()


def child_of(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_the_child_does_not_outlive_a_killed_keel(tmp_path: Path) -> None:
    keel = KeelProcess(tmp_path / "keel").start()
    try:
        response = httpx.post(
            f"{keel.url}/v1/traces",
            content=orjson.dumps(json_export([json_span("one")])),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200
        assert keel.proc is not None
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{keel.proc.pid}/task/{keel.proc.pid}/children").read_text():
            assert time.monotonic() < deadline, "no span writer process started"
            time.sleep(0.05)
        child = child_of(keel.proc.pid)
    finally:
        keel.kill()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists():
        status = Path(f"/proc/{child}/status").read_text()
        if "State:\tZ" in status:  # dead, waiting for init to reap it
            break
        assert time.monotonic() < deadline, "the span writer outlived keel"
        time.sleep(0.05)
