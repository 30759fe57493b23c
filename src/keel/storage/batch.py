"""One transaction per batch of the record pipeline: request records and spans together."""

from __future__ import annotations

from collections.abc import Sequence

from keel.records.model import RequestRecord
from keel.records.span import SpanRecord
from keel.storage.database import Database
from keel.storage.requests_repo import write_requests
from keel.storage.spans_repo import insert_spans

__all__ = ["Row", "write_batch"]

Row = RequestRecord | SpanRecord


async def write_batch(db: Database, rows: Sequence[Row]) -> None:
    """Write the batch idempotently (replaying a batch changes nothing)."""
    requests = [r for r in rows if isinstance(r, RequestRecord)]
    spans = [r for r in rows if isinstance(r, SpanRecord)]
    async with db.engine.begin() as conn:
        if requests:
            await write_requests(conn, db.dialect, requests)
        if spans:
            await insert_spans(conn, db.dialect, spans)
