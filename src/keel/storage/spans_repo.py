"""Writes of span records (the `spans` table); reads live with the trace queries.

Idempotent by (trace_id, span_id): the first copy of a span wins, so an exporter's retry and the
record pipeline's replay never duplicate or rewrite one.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import JSON, Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from keel.records.span import SpanRecord
from keel.storage.tables import spans

__all__ = ["insert_spans"]

_COLUMNS = tuple(c.name for c in spans.columns)
_JSON_COLUMNS = frozenset(c.name for c in spans.columns if isinstance(c.type, JSON))


async def insert_spans(conn: AsyncConnection, dialect: str, records: Sequence[SpanRecord]) -> None:
    """Insert the spans not yet stored, within the caller's transaction."""
    if not records:
        return
    if dialect == "sqlite":
        # Tuples straight to the driver, as for request records: SQLAlchemy's per-row
        # parameter processing costs more than SQLite's insert.
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        sql, names = _sqlite_statement()
        rows = [tuple(_sqlite_value(n, _value(r, n)) for n in names) for r in records]
        try:
            await driver.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
        return
    await conn.execute(_insert(dialect), [{n: _value(r, n) for n in _COLUMNS} for r in records])


def _value(record: SpanRecord, name: str) -> Any:
    return record.duration_ms if name == "duration_ms" else getattr(record, name)


def _sqlite_value(name: str, value: Any) -> Any:
    if name in _JSON_COLUMNS:
        return orjson.dumps(value).decode()
    return int(value) if isinstance(value, bool) else value


@functools.lru_cache(maxsize=2)
def _insert(dialect: str) -> Insert:
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(spans)
    return stmt.on_conflict_do_nothing(index_elements=["trace_id", "span_id"])


@functools.lru_cache(maxsize=1)
def _sqlite_statement() -> tuple[str, tuple[str, ...]]:
    compiled = _insert("sqlite").compile(dialect=sqlite.dialect())
    assert compiled.positiontup is not None
    return str(compiled), tuple(compiled.positiontup)
