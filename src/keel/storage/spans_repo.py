"""Writes of span records (the `spans` table); reads live with the trace queries.

The writer handles spans as rows: a tuple of the table's values in `SPAN_COLUMNS` order, the
JSON columns (tags, attributes, events) already encoded as JSON text. That is what the record
pipeline logs and what SQLite takes, so a span is never rebuilt as an object on its way to the
database.

Idempotent by (trace_id, span_id): the first copy of a span wins, so an exporter's retry and the
record pipeline's replay never duplicate or rewrite one.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Insert, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from keel.records.span import SpanRecord
from keel.storage.tables import spans

__all__ = [
    "JSON_COLUMNS",
    "SPAN_COLUMNS",
    "SpanRow",
    "SpanRowView",
    "insert_spans",
    "is_counted_row",
    "rollup_view",
    "row_dict",
    "span_row",
    "sqlite_insert_sql",
]

# The layout of a span row, and of the rows the record pipeline logs (format version 2): a
# logged row must keep meaning the same, so this list is spelled out rather than read from the
# table. A new column means a new log format version (tests/records/test_span_rows.py checks).
SPAN_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "service",
    "start_time",
    "end_time",
    "duration_ms",
    "status",
    "error",
    "provider",
    "model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_estimated",
    "ttft_ms",
    "customer",
    "session_id",
    "pipeline",
    "tags",
    "prompt_name",
    "prompt_version",
    "counted",
    "input",
    "output",
    "attributes",
    "events",
)
JSON_COLUMNS = ("tags", "attributes", "events")
_INDEX = {name: i for i, name in enumerate(SPAN_COLUMNS)}
_JSON_POSITIONS = tuple(_INDEX[name] for name in JSON_COLUMNS)
_KIND, _COUNTED = _INDEX["kind"], _INDEX["counted"]
_COUNTED_KINDS = frozenset({"llm", "embedding"})  # keel.analytics.rollups.COUNTED_KINDS

SpanRow = tuple[Any, ...] | list[Any]  # a tuple when made here, a list when read from the log


def span_row(record: SpanRecord) -> tuple[Any, ...]:
    """The row of a span record."""
    dumps = orjson.dumps
    return (
        record.trace_id,
        record.span_id,
        record.parent_span_id,
        record.name,
        record.kind,
        record.service,
        record.start_time,
        record.end_time,
        record.duration_ms,
        record.status,
        record.error,
        record.provider,
        record.model,
        record.response_model,
        record.input_tokens,
        record.output_tokens,
        record.cached_tokens,
        record.reasoning_tokens,
        record.cost_usd,
        record.cost_estimated,
        record.ttft_ms,
        record.customer,
        record.session_id,
        record.pipeline,
        dumps(record.tags).decode(),
        record.prompt_name,
        record.prompt_version,
        record.counted,
        record.input,
        record.output,
        dumps(record.attributes).decode(),
        dumps(record.events).decode(),
    )


def row_dict(row: SpanRow) -> dict[str, Any]:
    """The row by column name, JSON columns decoded (raises ValueError for a malformed row)."""
    if len(row) != len(SPAN_COLUMNS):
        raise ValueError(f"a span row has {len(SPAN_COLUMNS)} values, not {len(row)}")
    values = dict(zip(SPAN_COLUMNS, row, strict=True))
    for name in JSON_COLUMNS:
        values[name] = orjson.loads(values[name])
    return values


def is_counted_row(row: SpanRow) -> bool:
    """The span counts as a call in the analytics (keel.analytics.rollups.is_counted_span)."""
    return bool(row[_COUNTED]) and row[_KIND] in _COUNTED_KINDS


class SpanRowView(NamedTuple):
    """A span row read by column name (what the rollups read of a span); made in one call."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    service: str | None
    start_time: float
    end_time: float
    duration_ms: float
    status: str
    error: str | None
    provider: str | None
    model: str | None
    response_model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    cost_estimated: bool
    ttft_ms: float | None
    customer: str | None
    session_id: str | None
    pipeline: str | None
    tags_json: str
    prompt_name: str | None
    prompt_version: int | None
    counted: bool
    input: str | None
    output: str | None
    attributes_json: str
    events_json: str

    @property
    def tags(self) -> list[str]:
        tags: list[str] = orjson.loads(self.tags_json)
        return tags


def rollup_view(row: SpanRow) -> SpanRowView:
    """The row as the rollups read a span (keel.analytics.rollups.CountedSpan)."""
    return SpanRowView._make(row)


async def insert_spans(
    conn: AsyncConnection, dialect: str, spans_or_rows: Sequence[SpanRow | SpanRecord]
) -> None:
    """Insert the spans (rows, or records) not yet stored, within the caller's transaction."""
    if not spans_or_rows:
        return
    rows = [span_row(r) if isinstance(r, SpanRecord) else r for r in spans_or_rows]
    if dialect == "sqlite":
        # The rows straight to the driver: SQLAlchemy's per-row parameter processing costs more
        # than SQLite's insert, and the rows are already in the statement's order.
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        sql = sqlite_insert_sql()
        try:
            await driver.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
        return
    await conn.execute(_insert(dialect), [row_dict(r) for r in rows])


@functools.lru_cache(maxsize=2)
def _insert(dialect: str) -> Insert:
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(spans)
    return stmt.on_conflict_do_nothing(index_elements=["trace_id", "span_id"])


@functools.lru_cache(maxsize=1)
def sqlite_insert_sql() -> str:
    """SQLite: the insert of one row, its values in SPAN_COLUMNS order, a stored key kept."""
    stmt = _insert("sqlite").values({n: bindparam(n) for n in SPAN_COLUMNS})
    compiled = stmt.compile(dialect=sqlite.dialect())
    assert compiled.positiontup is not None
    assert tuple(compiled.positiontup) == SPAN_COLUMNS
    return str(compiled)
