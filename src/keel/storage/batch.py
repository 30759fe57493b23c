"""One transaction per batch of the record pipeline: request records, spans and the rollups of
the calls they count, together (so the dashboards never disagree with the rows).

With a span writer process (SQLite under `keel serve`, keel.storage.span_writer) the spans and
their rollups are its transactions (a few thousand spans each), the request records and theirs
this process's: each is idempotent on its own, so a batch retried after one of them failed
stores and counts nothing twice."""

from __future__ import annotations

from collections.abc import Sequence

from keel.analytics.rollups import BatchCounter
from keel.records.model import RequestRecord
from keel.records.span import SpanRecord
from keel.storage.database import Database
from keel.storage.requests_repo import write_requests
from keel.storage.span_writer import SpanWriterProcess
from keel.storage.spans_repo import SpanRow, insert_spans, is_counted_row, rollup_view, span_row

__all__ = ["Row", "write_batch"]

# A request record, or a span: as a record, or as the row the record pipeline logs
# (keel.storage.spans_repo.SPAN_COLUMNS)
Row = RequestRecord | SpanRecord | SpanRow


async def write_batch(
    db: Database, rows: Sequence[Row], span_writer: SpanWriterProcess | None = None
) -> None:
    """Write the batch idempotently (replaying a batch changes nothing, rollups included)."""
    requests: list[RequestRecord] = []
    spans: list[SpanRow] = []
    for row in rows:
        if isinstance(row, RequestRecord):
            requests.append(row)
        elif isinstance(row, SpanRecord):
            spans.append(span_row(row))
        else:
            spans.append(row)
    if span_writer is not None and spans:
        if requests:
            await _write(db, requests, [])
        await span_writer.write(spans)
        return
    await _write(db, requests, spans)


async def _write(db: Database, requests: list[RequestRecord], spans: list[SpanRow]) -> None:
    counted = [rollup_view(s) for s in spans if is_counted_row(s)]
    counter = BatchCounter(db.dialect, requests, counted)
    async with db.engine.begin() as conn:
        if db.dialect == "sqlite":
            # The write lock from the first statement: what `before_write` reads stays true
            # until the commit (the sqlite3 driver would otherwise begin at the first insert).
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        await counter.before_write(conn)
        if requests:
            await write_requests(conn, db.dialect, requests)
        if spans:
            await insert_spans(conn, db.dialect, spans)
        await counter.after_write(conn)
