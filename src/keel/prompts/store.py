"""Reads and writes of prompts and their versions, the events they produce, and the locked
transaction that `keel.prompts.labels` (label moves) uses too.

Every write runs in one transaction that first locks the prompt's row (PostgreSQL: SELECT ...
FOR UPDATE; SQLite: BEGIN IMMEDIATE, which takes the database's write lock), so pushes and label
moves of one prompt happen one after the other: version numbers have no gaps or duplicates and
"the latest move" of a label is well defined. Validation and permissions are the caller's
(`keel.prompts.service`); this module only checks what needs the transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from keel.prompts.model import (
    PromptContent,
    PromptError,
    PromptSummary,
    PromptVersion,
    content_hash,
)
from keel.records.model import new_id
from keel.storage.database import Database
from keel.storage.requests_repo import decode_cursor, encode_cursor
from keel.storage.tables import events, prompt_labels, prompt_versions, prompts

__all__ = [
    "append_event",
    "find_prompt",
    "get_prompt",
    "get_version",
    "in_transaction",
    "label_rows",
    "list_events",
    "list_summaries",
    "lock_prompt",
    "push",
]

T = TypeVar("T")
_RETRIES = 5
_MAX_EVENTS = 1000


# -- transactions ---------------------------------------------------------------------------


@asynccontextmanager
async def _write(db: Database) -> AsyncIterator[AsyncConnection]:
    async with db.engine.begin() as conn:
        if db.dialect == "sqlite":
            # The sqlite3 driver would start a deferred transaction at the first write, after
            # our reads: two pushes could then read the same max(version). Lock up front.
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


async def in_transaction(db: Database, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    for attempt in range(_RETRIES):
        try:
            async with _write(db) as conn:
                return await work(conn)
        except (IntegrityError, OperationalError) as exc:
            # A safety net behind the row lock: a unique constraint or a lock timeout means
            # another writer got there first, and a fresh transaction will see its result.
            locked = isinstance(exc, OperationalError) and "locked" in str(exc.orig)
            if attempt == _RETRIES - 1 or not (locked or isinstance(exc, IntegrityError)):
                raise
            await asyncio.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")


async def lock_prompt(conn: AsyncConnection, name: str) -> Row[Any]:
    query = select(prompts).where(prompts.c.name == name).with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise PromptError(404, f"unknown prompt {name!r}")
    return row


async def _create_prompt(conn: AsyncConnection, dialect: str, name: str, now: float) -> None:
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(prompts)
    values = {"id": new_id(), "name": name, "created_at": now, "updated_at": now}
    await conn.execute(stmt.values(values).on_conflict_do_nothing(index_elements=["name"]))


async def append_event(
    conn: AsyncConnection, kind: str, actor: str, subject: str, data: dict[str, Any], at: float
) -> None:
    row = {"id": new_id(), "at": at, "kind": kind, "actor": actor, "subject": subject}
    await conn.execute(insert(events).values(**row, data=data))


# -- versions -------------------------------------------------------------------------------


async def push(
    db: Database, name: str, content: PromptContent, *, message: str | None, author: str, now: float
) -> tuple[PromptVersion, bool]:
    """The version holding `content` and whether this call created it (see module docs)."""
    digest = content_hash(content)

    async def work(conn: AsyncConnection) -> tuple[PromptVersion, bool]:
        await _create_prompt(conn, db.dialect, name, now)
        prompt = await lock_prompt(conn, name)
        same = prompt_versions.c.content_hash == digest
        found = (await conn.execute(_versions_of(prompt.id).where(same))).first()
        if found is not None:
            labels = await _labels_by_version(conn, prompt.id)
            return _to_version(name, found, labels), False
        latest = select(func.max(prompt_versions.c.version)).where(
            prompt_versions.c.prompt_id == prompt.id
        )
        number = ((await conn.execute(latest)).scalar() or 0) + 1
        row = _version_row(prompt.id, number, digest, content, message, author, now)
        await conn.execute(insert(prompt_versions).values(row))
        changes: dict[str, Any] = {"updated_at": now}
        if content.description is not None:
            changes["description"] = content.description
        await conn.execute(update(prompts).where(prompts.c.id == prompt.id).values(changes))
        data = {"prompt": name, "version": number, "content_hash": digest, "message": message}
        await append_event(conn, "prompt.version_created", author, f"prompt:{name}", data, now)
        version = PromptVersion(name, number, digest, content, message, author, now)
        return version, True

    return await in_transaction(db, work)


def _version_row(
    prompt_id: str,
    number: int,
    digest: str,
    content: PromptContent,
    message: str | None,
    author: str,
    now: float,
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "prompt_id": prompt_id,
        "version": number,
        "content_hash": digest,
        "kind": content.kind,
        "template": content.template,
        "messages": list(content.messages) if content.messages is not None else None,
        "variables": content.variables,
        "config": content.config,
        "description": content.description,
        "message": message,
        "author": author,
        "created_at": now,
    }


def _versions_of(prompt_id: str) -> Any:
    return select(prompt_versions).where(prompt_versions.c.prompt_id == prompt_id)


def _to_version(name: str, row: Any, labels: dict[int, list[str]]) -> PromptVersion:
    content = PromptContent(
        kind=row.kind,
        messages=tuple(row.messages) if row.messages is not None else None,
        template=row.template,
        variables=row.variables,
        config=dict(row.config or {}),
        description=row.description,
    )
    return PromptVersion(
        prompt=name,
        version=row.version,
        content_hash=row.content_hash,
        content=content,
        message=row.message,
        author=row.author,
        created_at=row.created_at,
        labels=tuple(sorted(labels.get(row.version, ()))),
    )


async def get_version(db: Database, name: str, version: int) -> PromptVersion:
    """Version `version` of prompt `name`, with the labels pointing at it now; 404 if unknown."""
    async with db.engine.connect() as conn:
        prompt = await find_prompt(conn, name)
        query = _versions_of(prompt.id).where(prompt_versions.c.version == version)
        row = (await conn.execute(query)).first()
        if row is None:
            raise PromptError(404, f"prompt {name!r} has no version {version}")
        return _to_version(name, row, await _labels_by_version(conn, prompt.id))


async def get_prompt(db: Database, name: str) -> tuple[PromptSummary, list[PromptVersion]]:
    """The prompt's summary and all its versions, newest first; 404 if unknown."""
    async with db.engine.connect() as conn:
        prompt = await find_prompt(conn, name)
        query = _versions_of(prompt.id).order_by(prompt_versions.c.version.desc())
        rows = (await conn.execute(query)).all()
        labels = await label_rows(conn, prompt.id)
    by_version: dict[int, list[str]] = {}
    for label in labels:
        by_version.setdefault(label.version, []).append(label.label)
    latest = rows[0].version if rows else 0
    summary = _summary(prompt, latest, labels)
    return summary, [_to_version(name, row, by_version) for row in rows]


async def list_summaries(db: Database) -> list[PromptSummary]:
    """Every prompt, by name."""
    latest = select(prompt_versions.c.prompt_id, func.max(prompt_versions.c.version)).group_by(
        prompt_versions.c.prompt_id
    )
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(prompts).order_by(prompts.c.name))).all()
        latest_of = {pid: n for pid, n in (await conn.execute(latest)).all()}
        labels = (await conn.execute(select(prompt_labels))).all()
    labels_of: dict[str, list[Any]] = {}
    for label in labels:
        labels_of.setdefault(label.prompt_id, []).append(label)
    return [_summary(p, latest_of.get(p.id, 0), labels_of.get(p.id, [])) for p in rows]


def _summary(prompt: Any, latest: int, labels: list[Any]) -> PromptSummary:
    ordered = sorted(labels, key=lambda r: r.label)
    return PromptSummary(
        name=prompt.name,
        description=prompt.description,
        latest_version=latest,
        labels={r.label: r.version for r in ordered},
        protected_labels=tuple(r.label for r in ordered if r.protected),
        created_at=prompt.created_at,
        updated_at=prompt.updated_at,
    )


async def find_prompt(conn: AsyncConnection, name: str) -> Row[Any]:
    row = (await conn.execute(select(prompts).where(prompts.c.name == name))).first()
    if row is None:
        raise PromptError(404, f"unknown prompt {name!r}")
    return row


async def label_rows(conn: AsyncConnection, prompt_id: str) -> list[Any]:
    query = select(prompt_labels).where(prompt_labels.c.prompt_id == prompt_id)
    return list((await conn.execute(query)).all())


async def _labels_by_version(conn: AsyncConnection, prompt_id: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for row in await label_rows(conn, prompt_id):
        out.setdefault(row.version, []).append(row.label)
    return out


# -- events ---------------------------------------------------------------------------------


async def list_events(
    db: Database, *, limit: int = 100, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Events newest first and the cursor of the next page (None on the last page)."""
    if limit < 1:
        raise PromptError(400, f"limit must be at least 1, got {limit}")
    limit = min(limit, _MAX_EVENTS)
    query = select(events).order_by(events.c.at.desc(), events.c.id.desc()).limit(limit + 1)
    if cursor is not None:
        try:
            at, last_id = decode_cursor(cursor)
        except ValueError as exc:
            raise PromptError(400, str(exc)) from None
        query = query.where((events.c.at < at) | ((events.c.at == at) & (events.c.id < last_id)))
    async with db.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    page = [dict(row._mapping) for row in rows[:limit]]
    if len(rows) <= limit:
        return page, None
    last = rows[limit - 1]
    return page, encode_cursor(last.at, last.id)
