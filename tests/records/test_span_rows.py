"""Span rows in the record pipeline's log: the row layout, entries of older Keel versions,
malformed and refused rows, and the pending-spans count."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from keel.records import pipeline as pipeline_module
from keel.records.pipeline import SPAN_ROWS
from keel.records.wal import WriteAheadLog
from keel.storage.database import Database
from keel.storage.spans_repo import SPAN_COLUMNS, SpanRowView, rollup_view, row_dict, span_row
from keel.storage.tables import spans
from tests.records.helpers import all_rows, make_pipeline, until
from tests.records.test_pipeline_spans import make_span, span_rows
from tests.storage.factory import make_record

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    yield database
    await database.close()


def rejected_lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "wal" / "rejected.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def log_entries(tmp_path: Path, *payloads: bytes) -> None:
    """Append raw entries to the pipeline's log, as an earlier run (or Keel version) left them."""
    wal = WriteAheadLog(
        tmp_path / "wal",
        max_bytes=16 << 20,
        segment_bytes=64 << 10,
        fsync="batch",
        fsync_interval_ms=5,
    )
    wal.open()
    for payload in payloads:
        wal.append(payload)
    wal.close()


def test_the_row_layout_is_the_tables() -> None:
    # A new column changes what a logged row means: it needs a new SPAN_ROWS format.
    assert tuple(c.name for c in spans.columns) == SPAN_COLUMNS
    renamed = {"tags_json": "tags", "attributes_json": "attributes", "events_json": "events"}
    assert tuple(renamed.get(f, f) for f in SpanRowView._fields) == SPAN_COLUMNS


def test_a_row_holds_the_records_values() -> None:
    record = make_span(1)
    record.events = [{"name": "e", "time": 1.5, "attributes": {"k": "v"}}]
    row = span_row(record)
    assert row_dict(orjson.loads(orjson.dumps(row))) == {
        **record.to_dict(),
        "duration_ms": 500.0,
    }
    view = rollup_view(list(row))
    for name in ("trace_id", "kind", "model", "start_time", "input_tokens", "counted", "tags"):
        assert getattr(view, name) == getattr(record, name)
    assert view.duration_ms == record.duration_ms


async def test_entries_of_an_older_keel_replay(tmp_path: Path, db: Database) -> None:
    # Before format 2 a span entry was a JSON array of span objects; one object this version
    # cannot make a span of goes to rejected.jsonl, its neighbours are stored.
    old = [make_span(n).to_dict() for n in range(3)]
    old[1]["a_field_from_a_later_version"] = "ignored"
    broken = {"trace_id": f"{1:032x}", "span_id": f"{9:016x}"}  # no name, no times
    log_entries(tmp_path, orjson.dumps([*old, broken]))
    pipeline = make_pipeline(tmp_path, db)
    await pipeline.start()
    await until(lambda: pipeline.pending_records == 0)
    rows = await span_rows(db)
    assert [r["name"] for r in rows] == ["step 0", "step 1", "step 2"]
    assert rows[1]["attributes"] == {"odd key \u2603": [1, 2]}
    assert [line["span"] for line in rejected_lines(tmp_path)] == [broken]
    assert pipeline.pending_spans == 0  # replayed spans are not this run's
    await pipeline.stop()


async def test_old_and_new_entries_store_the_same_rows(tmp_path: Path, db: Database) -> None:
    log_entries(tmp_path, orjson.dumps([make_span(n, trace=1) for n in range(4)]))
    pipeline = make_pipeline(tmp_path, db)
    await pipeline.start()
    pipeline.submit_spans([make_span(n, trace=2) for n in range(4)])
    await until(lambda: pipeline.pending_records == 0)
    await pipeline.stop()
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for row in await span_rows(db):
        by_trace.setdefault(str(row.pop("trace_id")), []).append(row)
    assert by_trace[f"{1:032x}"] == by_trace[f"{2:032x}"]


async def test_malformed_rows_and_unknown_formats_are_rejected(
    tmp_path: Path, db: Database
) -> None:
    good = list(span_row(make_span(0)))
    short = good[:-1]
    nested = list(span_row(make_span(1)))
    nested[SPAN_COLUMNS.index("attributes")] = {"not": "text"}
    later = orjson.dumps([SPAN_ROWS + 1, {"spans": []}])
    log_entries(tmp_path, orjson.dumps([SPAN_ROWS, good, short, nested]), later)
    pipeline = make_pipeline(tmp_path, db)
    await pipeline.start()
    await until(lambda: pipeline.pending_records == 0)
    assert [r["name"] for r in await span_rows(db)] == ["step 0"]
    lines = rejected_lines(tmp_path)
    assert [line.get("span") for line in lines] == [short, nested, None]
    assert "unknown span entry format" in lines[2]["reason"]
    assert lines[2]["payload"] == later.decode()
    assert pipeline.rejected_records == 3
    await pipeline.stop()


async def test_a_row_the_database_refuses_is_rejected_alone(tmp_path: Path, db: Database) -> None:
    pipeline = make_pipeline(tmp_path, db)
    await pipeline.start()
    refused = list(span_row(make_span(1)))
    refused[SPAN_COLUMNS.index("name")] = None  # NOT NULL
    pipeline.submit_span_rows([span_row(make_span(0)), tuple(refused), span_row(make_span(2))])
    assert pipeline.pending_spans == 3
    await until(lambda: pipeline.pending_records == 0)
    assert [r["name"] for r in await span_rows(db)] == ["step 0", "step 2"]
    (line,) = rejected_lines(tmp_path)
    assert {k: line[k] for k in ("trace_id", "span_id", "name", "tags")} == {
        "trace_id": f"{1:032x}",
        "span_id": f"{2:016x}",
        "name": None,
        "tags": ["a", "b"],
    }
    assert pipeline.pending_spans == 0
    assert pipeline.rejected_records == 1
    await pipeline.stop()


async def test_pending_spans_settle_when_exports_repeat_a_span(
    tmp_path: Path, db: Database
) -> None:
    # Both exports land in one writer batch, which writes the shared span once: every span
    # submitted still settles.
    pipeline = make_pipeline(tmp_path, db)
    await pipeline.start()
    pipeline.submit_spans([make_span(n) for n in range(3)])
    pipeline.submit_spans([make_span(n) for n in range(2, 5)])
    assert pipeline.pending_spans == 6
    await until(lambda: pipeline.pending_records == 0)
    assert len(await span_rows(db)) == 5
    assert pipeline.pending_spans == 0
    await pipeline.stop()


async def test_a_batch_stops_at_its_byte_budget(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Entries of many spans: the writer takes fewer of them per transaction, and loses none.
    monkeypatch.setattr("keel.records.pipeline._BATCH_BYTES", 4096)
    pipeline = make_pipeline(tmp_path, db, batch_size=1000)
    batches: list[int] = []
    write = pipeline_module.write_batch

    async def counting_write(database: Database, rows: Any, span_writer: Any = None) -> None:
        batches.append(len(rows))
        await write(database, rows, span_writer)

    monkeypatch.setattr(pipeline_module, "write_batch", counting_write)
    await pipeline.start()
    pipeline.submit_spans([make_span(n, trace=1) for n in range(4)])
    await until(lambda: pipeline.pending_records == 0)  # the writer learns the entries' size
    for batch in range(1, 10):
        pipeline.submit_spans([make_span(n, trace=batch + 1) for n in range(4)])
    await until(lambda: pipeline.pending_records == 0)
    assert len(await span_rows(db)) == 40
    assert pipeline.pending_spans == 0
    assert sum(batches) == 40
    assert max(batches[1:]) < 36  # a few entries at a time, not the nine waiting
    await pipeline.stop()


async def test_the_writer_takes_this_runs_spans_from_memory(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Span entries reach the database without being read back from the log; request records
    # between them are read from it; everything is written once.
    pipeline = make_pipeline(tmp_path, db)
    reads: list[tuple[int, int | None]] = []
    read = pipeline._wal.read

    def counting_read(position: int, max_entries: int, stop: int | None = None) -> Any:
        found = read(position, max_entries, stop)
        reads.append((len(found[0]), stop))
        return found

    monkeypatch.setattr(pipeline._wal, "read", counting_read)
    await pipeline.start()
    await until(lambda: pipeline.pending_records == 0)
    reads.clear()
    pipeline.submit_spans([make_span(n, trace=1) for n in range(3)])
    pipeline.submit(make_record(0))
    pipeline.submit_spans([make_span(n, trace=2) for n in range(3)])
    await until(lambda: pipeline.pending_records == 0)
    assert len(await span_rows(db)) == 6
    assert [r["id"] for r in await all_rows(db)] == [make_record(0).id]
    assert sum(count for count, _ in reads) == 1  # the request record alone
    assert pipeline.pending_spans == 0
    await pipeline.stop()


async def test_spans_beyond_the_memory_budget_are_read_from_the_log(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While the writer is held up, entries past the memory budget are only in the log; the
    # writer reads those back and still writes every span once.
    monkeypatch.setattr("keel.records.pipeline._FRESH_BYTES", 3000)
    pipeline = make_pipeline(tmp_path, db, batch_size=4)
    held = asyncio.Event()
    write = pipeline_module.write_batch

    async def held_write(database: Database, rows: Any, span_writer: Any = None) -> None:
        await held.wait()
        await write(database, rows, span_writer)

    monkeypatch.setattr(pipeline_module, "write_batch", held_write)
    await pipeline.start()
    for batch in range(12):
        pipeline.submit_spans([make_span(n, trace=batch + 1) for n in range(3)])
    assert 0 < len(pipeline._fresh) < 12
    held.set()
    await until(lambda: pipeline.pending_records == 0)
    assert len(await span_rows(db)) == 36
    assert pipeline.pending_spans == 0
    assert not pipeline._fresh
    await pipeline.stop()
