"""Reads and writes of request records (`requests` and `request_payloads` tables).

Writes are idempotent by record id so the record pipeline can replay its log freely: a final
record replaces a stream's stub, a stub never replaces a final record, and the first final wins.
"""

from __future__ import annotations

import base64
import binascii
import functools
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, ColumnElement, Insert, Select, and_, false, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from keel.records.model import RequestRecord
from keel.storage.database import Database
from keel.storage.tables import request_payloads, requests

__all__ = [
    "MAX_LIMIT",
    "get_payload",
    "get_request",
    "list_requests",
    "upsert_records",
    "write_requests",
]

MAX_LIMIT = 1000
_REQUEST_COLUMNS = tuple(c.name for c in requests.columns)


async def upsert_records(db: Database, records: Sequence[RequestRecord]) -> None:
    """Write `records` in one transaction (see the module docstring for the merge rules)."""
    async with db.engine.begin() as conn:
        await write_requests(conn, db.dialect, records)


async def write_requests(
    conn: AsyncConnection, dialect: str, records: Sequence[RequestRecord]
) -> None:
    """Write `records` within the caller's transaction."""
    finals, stubs = _merge_by_id(records)
    await _write(conn, dialect, finals, replace=True)
    await _write(conn, dialect, stubs, replace=False)


def _merge_by_id(
    records: Sequence[RequestRecord],
) -> tuple[list[RequestRecord], list[RequestRecord]]:
    # The same rules as the database applies, within the batch: one statement must not touch
    # a row twice, and the outcome must not depend on the order the rows are sent in.
    chosen: dict[str, RequestRecord] = {}
    for record in records:
        seen = chosen.get(record.id)
        if seen is None or (record.final and not seen.final):
            chosen[record.id] = record
    finals = [r for r in chosen.values() if r.final]
    stubs = [r for r in chosen.values() if not r.final]
    return finals, stubs


async def _write(
    conn: AsyncConnection, dialect: str, records: list[RequestRecord], *, replace: bool
) -> None:
    if not records:
        return
    if dialect == "sqlite":
        await _write_sqlite(conn, records, replace=replace)
        return
    rows = [{name: getattr(r, name) for name in _REQUEST_COLUMNS} for r in records]
    await conn.execute(_upsert(dialect, requests, "id", replace=replace, only_stubs=True), rows)
    payloads = [
        {
            "request_id": r.id,
            "request_body": r.request_body,
            "response_body": r.response_body,
            "truncated": r.payload_truncated,
        }
        for r in records
        if r.request_body is not None or r.response_body is not None
    ]
    if payloads:
        stmt = _upsert(dialect, request_payloads, "request_id", replace=replace, only_stubs=False)
        await conn.execute(stmt, payloads)


# SQLite is the default store and its one writer runs on the same core as the gateway: its rows
# go to the driver as plain tuples, skipping SQLAlchemy's per-row parameter processing, which
# cost more than the inserts themselves. The statements are SQLAlchemy's own, compiled once.
_JSON_COLUMNS = frozenset(c.name for c in requests.columns if isinstance(c.type, JSON))


@functools.lru_cache(maxsize=8)
def _sqlite_statement(
    table: Any, key: str, replace: bool, only_stubs: bool
) -> tuple[str, tuple[str, ...]]:
    compiled = _upsert("sqlite", table, key, replace=replace, only_stubs=only_stubs).compile(
        dialect=sqlite.dialect()
    )
    assert compiled.positiontup is not None
    return str(compiled), tuple(compiled.positiontup)


def _sqlite_value(name: str, value: Any) -> Any:
    if name in _JSON_COLUMNS:
        return None if value is None else orjson.dumps(value).decode()
    return int(value) if isinstance(value, bool) else value


async def _write_sqlite(
    conn: AsyncConnection, records: list[RequestRecord], *, replace: bool
) -> None:
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    sql, names = _sqlite_statement(requests, "id", replace, True)
    rows = [tuple(_sqlite_value(n, getattr(r, n)) for n in names) for r in records]
    await _executemany(driver, sql, rows)
    payloads = [
        (r.id, r.request_body, r.response_body, int(r.payload_truncated))
        for r in records
        if r.request_body is not None or r.response_body is not None
    ]
    if payloads:
        sql, names = _sqlite_statement(request_payloads, "request_id", replace, False)
        order = ("request_id", "request_body", "response_body", "truncated")
        index = [order.index(n) for n in names]
        await _executemany(driver, sql, [tuple(p[i] for i in index) for p in payloads])


async def _executemany(driver: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
    try:
        await driver.executemany(sql, rows)
    except sqlite3.Error as exc:
        # The same exception classes SQLAlchemy raises, so callers tell data errors (a row the
        # database refuses) from outages the same way on every path.
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc


@functools.lru_cache(maxsize=16)  # built once per shape: statement construction is not free
def _upsert(dialect: str, table: Any, key: str, *, replace: bool, only_stubs: bool) -> Insert:
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    if not replace:
        return stmt.on_conflict_do_nothing(index_elements=[key])
    values = {c.name: stmt.excluded[c.name] for c in table.columns if c.name != key}
    where = table.c.final == false() if only_stubs else None
    return stmt.on_conflict_do_update(index_elements=[key], set_=values, where=where)


async def get_request(db: Database, request_id: str) -> dict[str, Any] | None:
    """The record with this id as a JSON-ready dict, or None."""
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(requests).where(requests.c.id == request_id))).first()
    return None if row is None else _to_json(row._mapping)


async def get_payload(db: Database, request_id: str) -> dict[str, Any] | None:
    """The stored request and response bodies of a record, or None when none were kept."""
    query = select(request_payloads).where(request_payloads.c.request_id == request_id)
    async with db.engine.connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        return None
    return {
        "request_id": row.request_id,
        "request_body": row.request_body,
        "response_body": row.response_body,
        "truncated": bool(row.truncated),
    }


async def list_requests(
    db: Database,
    *,
    model: str | None = None,
    customer: str | None = None,
    pipeline: str | None = None,
    provider: str | None = None,
    status: int | str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 50,
    cursor: str | None = None,
    prompt: str | None = None,
    prompt_version: int | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Records newest first, and the cursor of the next page (None on the last page).

    `status` is a status code, "error" (status >= 400 or an error message) or "success";
    `since` (inclusive) and `until` (exclusive) are unix seconds; `limit` is capped at 1000.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    limit = min(limit, MAX_LIMIT)
    conditions = _filters(model, customer, pipeline, provider, status, since, until)
    if prompt is not None:
        conditions.append(requests.c.prompt_name == prompt)
    if prompt_version is not None:
        conditions.append(requests.c.prompt_version == prompt_version)
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        conditions.append(
            or_(
                requests.c.created_at < created_at,
                and_(requests.c.created_at == created_at, requests.c.id < last_id),
            )
        )
    query: Select[Any] = (
        select(requests)
        .where(*conditions)
        .order_by(requests.c.created_at.desc(), requests.c.id.desc())
        .limit(limit + 1)
    )
    async with db.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    page = [_to_json(row._mapping) for row in rows[:limit]]
    if len(rows) <= limit:
        return page, None
    last = rows[limit - 1]
    return page, encode_cursor(last.created_at, last.id)


def _filters(
    model: str | None,
    customer: str | None,
    pipeline: str | None,
    provider: str | None,
    status: int | str | None,
    since: float | None,
    until: float | None,
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    for column, value in (
        (requests.c.model, model),
        (requests.c.customer, customer),
        (requests.c.pipeline, pipeline),
        (requests.c.provider, provider),
    ):
        if value is not None:
            conditions.append(column == value)
    if status is not None:
        conditions.append(_status_filter(status))
    if since is not None:
        conditions.append(requests.c.created_at >= since)
    if until is not None:
        conditions.append(requests.c.created_at < until)
    return conditions


def _status_filter(status: int | str) -> ColumnElement[bool]:
    failed = or_(requests.c.status_code >= 400, requests.c.error.is_not(None))
    if status == "error":
        return failed
    if status == "success":
        return and_(requests.c.status_code < 400, requests.c.error.is_(None))
    if isinstance(status, int) or status.isdigit():
        return requests.c.status_code == int(status)
    raise ValueError(f"status must be a status code, 'error' or 'success', got {status!r}")


def encode_cursor(created_at: float, request_id: str) -> str:
    """The opaque cursor that resumes a listing after the record (created_at, id)."""
    return base64.urlsafe_b64encode(orjson.dumps([created_at, request_id])).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Inverse of `encode_cursor`; ValueError with a clear message for anything else."""
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}: not one this API returned") from exc
    match value:
        case [int() | float() as created_at, str() as request_id] if not isinstance(
            created_at, bool
        ):
            return float(created_at), request_id
    raise ValueError(f"invalid cursor {cursor!r}: not one this API returned")


def _to_json(row: Any) -> dict[str, Any]:
    out = {name: row[name] for name in _REQUEST_COLUMNS}
    out["created_at"] = _iso(row["created_at"])
    out["tags"] = list(row["tags"] or [])
    for name in ("tokens_estimated", "cost_estimated", "stream", "final"):
        out[name] = bool(out[name])
    out["interrupted"] = not out["final"]
    return out


def _iso(unix_seconds: float) -> str:
    moment = datetime.fromtimestamp(unix_seconds, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
