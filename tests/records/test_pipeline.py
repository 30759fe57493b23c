"""The record pipeline against real databases: delivery, crash replay, stubs, poison rows."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from keel.records.pipeline import INTERRUPTED_ERROR, LogFullError
from keel.storage import requests_repo as repo
from keel.storage.database import Database
from tests.records.helpers import abandon, all_rows, make_pipeline, until
from tests.storage.factory import make_record

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    yield database
    await database.close()


async def test_records_reach_the_database(tmp_path: Path, db: Database) -> None:
    pipeline = make_pipeline(tmp_path, db, batch_size=7)
    await pipeline.start()
    for n in range(50):
        pipeline.submit(make_record(n))
    assert pipeline.pending_records > 0
    await until(lambda: pipeline.pending_records == 0)
    assert len(await all_rows(db)) == 50
    await pipeline.stop()
    assert (pipeline.written_records, pipeline.lost_records, pipeline.rejected_records) == (
        50,
        0,
        0,
    )
    assert pipeline.pending_bytes == 0
    assert pipeline.db_up and pipeline.last_write_error is None


async def test_stop_drains_the_log(tmp_path: Path, db: Database) -> None:
    pipeline = make_pipeline(tmp_path, db)
    await pipeline.start()
    for n in range(20):
        pipeline.submit(make_record(n))
    await pipeline.stop()
    assert len(await all_rows(db)) == 20
    assert pipeline.pending_records == 0


async def test_crash_replays_each_record_once(tmp_path: Path, db: Database) -> None:
    first = make_pipeline(tmp_path, db, batch_size=10)
    await first.start()
    for n in range(30):
        first.submit(make_record(n))
    await until(lambda: first.pending_records == 0)
    for n in range(30, 55):
        first.submit(make_record(n))
    abandon(first)  # these 25 never reached the database
    assert len(await all_rows(db)) == 30

    second = make_pipeline(tmp_path, db, batch_size=10)
    await second.start()  # replays before it returns
    rows = await all_rows(db)
    assert sorted(r["id"] for r in rows) == [f"req-{n:06d}" for n in range(55)]
    assert all(r["final"] for r in rows)
    assert second.written_records == 25  # only what the checkpoint did not cover
    assert second.pending_records == 0
    await second.stop()


async def test_stub_without_final_is_interrupted_after_restart(
    tmp_path: Path, db: Database
) -> None:
    first = make_pipeline(tmp_path, db)
    await first.start()
    first.submit(make_record(0, final=False, stream=True))
    first.submit(make_record(1))
    await until(lambda: first.written_records == 1)
    assert first.pending_records == 1  # the stub waits in memory for its final record
    assert await repo.get_request(db, "req-000000") is None
    abandon(first)

    second = make_pipeline(tmp_path, db)
    await second.start()
    stored = await repo.get_request(db, "req-000000")
    assert stored is not None
    assert stored["error"] == INTERRUPTED_ERROR
    assert (stored["error_type"], stored["final"], stored["interrupted"]) == (
        "interrupted",
        False,
        True,
    )
    assert (second.written_records, second.pending_records) == (2, 0)  # req-1 replayed too
    await second.stop()


async def test_stub_then_final_is_one_final_row(tmp_path: Path, db: Database) -> None:
    pipeline = make_pipeline(tmp_path, db)
    await pipeline.start()
    pipeline.submit(make_record(0, final=False, stream=True, output_tokens=None))
    pipeline.submit(make_record(1))
    await until(lambda: pipeline.written_records == 1)  # the stub was read in that batch
    pipeline.submit(make_record(0, stream=True, output_tokens=77, response_body="hi"))
    await until(lambda: pipeline.pending_records == 0)
    rows = await all_rows(db)
    assert [(r["id"], r["final"], r["output_tokens"]) for r in rows] == [
        ("req-000001", True, 34),
        ("req-000000", True, 77),
    ]
    await pipeline.stop()
    assert pipeline.written_records == 2


async def test_old_stub_is_written_as_interrupted_then_completed(
    tmp_path: Path, db: Database
) -> None:
    pipeline = make_pipeline(tmp_path, db, stub_timeout_s=0.2)
    await pipeline.start()
    pipeline.submit(make_record(0, final=False, stream=True))
    await until(lambda: pipeline.written_records == 1)
    stored = await repo.get_request(db, "req-000000")
    assert stored is not None and stored["interrupted"]
    pipeline.submit(make_record(0, stream=True))  # a very long stream does finish after all
    await pipeline.stop()
    stored = await repo.get_request(db, "req-000000")
    assert stored is not None and stored["final"] and stored["error"] is None


async def test_poison_row_is_set_aside(tmp_path: Path, db: Database) -> None:
    pipeline = make_pipeline(tmp_path, db)
    await pipeline.start()
    pipeline.submit(make_record(0))
    pipeline.submit(make_record(1, trace_id=None))  # NOT NULL: the database refuses the row
    pipeline.submit(make_record(2))
    await pipeline.stop()
    assert [r["id"] for r in await all_rows(db)] == ["req-000002", "req-000000"]
    assert (pipeline.rejected_records, pipeline.written_records) == (1, 2)
    lines = (tmp_path / "wal" / "rejected.jsonl").read_bytes().splitlines()
    rejected = orjson.loads(lines[0])
    assert len(lines) == 1
    assert rejected["id"] == "req-000001"
    assert rejected["reason"].split(":")[0] in {"IntegrityError", "NotNullViolationError"}
    assert pipeline.last_write_error is not None


async def test_undecodable_entry_is_set_aside(tmp_path: Path, db: Database) -> None:
    pipeline = make_pipeline(tmp_path, db)
    await pipeline.start()
    pipeline._wal.append(b"{not json")
    pipeline._appended += 1  # as submit would count it
    pipeline.submit(make_record(0))
    await pipeline.stop()
    assert [r["id"] for r in await all_rows(db)] == ["req-000000"]
    assert pipeline.rejected_records == 1
    assert pipeline.pending_records == 0


async def test_full_log_raises_and_disk_errors_fail_open(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = make_pipeline(tmp_path, db, max_bytes=4096)
    await pipeline.start()
    pipeline._task.cancel()  # type: ignore[union-attr]  # keep the log from draining
    with pytest.raises(LogFullError):
        for n in range(100):
            pipeline.submit(make_record(n))
    assert not pipeline.has_room(reserve=1024)

    def broken_disk(payload: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline._wal, "append", broken_disk)
    pipeline.submit(make_record(1000))
    pipeline.submit(make_record(1001))
    assert pipeline.lost_records == 2
    await pipeline.stop(timeout=0.1)


async def test_wait_durable(tmp_path: Path, db: Database) -> None:
    pipeline = make_pipeline(tmp_path, db, fsync="always", fsync_interval_ms=1000)
    await pipeline.start()
    pipeline.submit(make_record(0))
    await asyncio.wait_for(pipeline.wait_durable(), 5)
    assert pipeline._wal.durable_position == pipeline._wal.end_position
    await pipeline.stop()


@pytest.mark.parametrize("dialect", ["postgresql"])  # SQLite does not enforce lengths
async def test_value_the_database_refuses_is_set_aside(tmp_path: Path, db: Database) -> None:
    pipeline = make_pipeline(tmp_path, db)
    await pipeline.start()
    pipeline.submit(make_record(0, id="x" * 40))  # longer than requests.id's 32 characters
    pipeline.submit(make_record(1))
    await pipeline.stop()
    assert [r["id"] for r in await all_rows(db)] == ["req-000001"]
    assert pipeline.rejected_records == 1
    rejected = orjson.loads((tmp_path / "wal" / "rejected.jsonl").read_bytes())
    assert rejected["reason"].startswith("StringDataRightTruncationError: value too long")


def test_log_entry_is_the_record_dict() -> None:
    record = make_record(3, tags=["x"], request_body="{}", parent_span_id="ab" * 8)
    assert orjson.dumps(record) == orjson.dumps(record.to_dict())
