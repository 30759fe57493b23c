"""Helpers for pipeline tests: a pipeline factory, waiting for a condition, reading rows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keel.records.pipeline import RecordPipeline
from keel.storage import requests_repo as repo
from keel.storage.database import Database


def make_pipeline(data_dir: Path, db: Database, **overrides: Any) -> RecordPipeline:
    options: dict[str, Any] = {
        "max_bytes": 16 << 20,
        "segment_bytes": 64 << 10,
        "fsync": "batch",
        "fsync_interval_ms": 5,
        "batch_size": 100,
        "max_backoff_s": 0.2,
    }
    options.update(overrides)
    return RecordPipeline(data_dir, db, **options)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition that only changes in the background (the writer task)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def all_rows(db: Database) -> list[dict[str, Any]]:
    items, cursor = await repo.list_requests(db, limit=1000)
    assert cursor is None
    return items


def abandon(pipeline: RecordPipeline) -> None:
    """What SIGKILL leaves: no drain, no checkpoint. The entries are with the kernel already.

    The writer is cancelled before it can run again, and the log's files are closed so the next
    pipeline can take the folder lock, as the kernel does for a killed process.
    """
    assert pipeline._task is not None
    pipeline._task.cancel()
    pipeline._wal.close()
