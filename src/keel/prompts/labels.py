"""Labels: which version each label of a prompt points at, their moves, protection, rollback.

Every move runs in the prompt's locked transaction (`store.in_transaction`, `store.lock_prompt`)
and is kept in `prompt_label_moves` with an event, so history and "the latest move" that a
rollback undoes are exact. Permissions are checked here because they depend on the label's row.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keel.prompts import store
from keel.prompts.model import LabelMove, PromptError
from keel.storage.database import Database
from keel.storage.tables import prompt_label_moves, prompt_labels, prompt_versions, prompts

__all__ = ["history", "label_target", "move_label"]

Action = Literal["promote", "rollback"]


async def label_target(db: Database, name: str, label: str) -> int:
    """The version `label` of prompt `name` points at; 404 naming the labels it has otherwise."""
    query = (
        select(prompt_labels.c.version)
        .join(prompts, prompts.c.id == prompt_labels.c.prompt_id)
        .where(prompts.c.name == name, prompt_labels.c.label == label)
    )
    async with db.engine.connect() as conn:
        version = (await conn.execute(query)).scalar()
        if version is not None:
            return int(version)
        prompt = await store.find_prompt(conn, name)
        names = sorted(r.label for r in await store.label_rows(conn, prompt.id))
    listed = ", ".join(names) or "none"
    raise PromptError(404, f"prompt {name!r} has no label {label!r}; labels: {listed}")


async def move_label(
    db: Database,
    name: str,
    label: str,
    version: int | None,
    *,
    actor: str,
    is_admin: bool,
    protect: bool | None,
    now: float,
) -> LabelMove:
    """Point `label` at `version`, or with version None roll it back one move (see service)."""

    async def work(conn: AsyncConnection) -> LabelMove:
        prompt = await store.lock_prompt(conn, name)
        query = _label_rows_query(prompt.id, label)
        current = (await conn.execute(query)).first()
        _check_protection(label, current, is_admin=is_admin, protect=protect)
        action: Action = "rollback" if version is None else "promote"
        if version is None:
            target = await _rollback_target(conn, prompt.id, name, label, current)
        else:
            target = await _existing(conn, prompt.id, name, version)
        move = LabelMove(
            name, label, current.version if current else None, target, actor, now, action
        )
        protected = bool(current.protected) if current else False
        if protect is not None and protect != protected:
            await _set_protection(conn, prompt.id, move, protect)
            protected = protect
        if current is not None and current.version == target:
            return move  # already there: nothing moved, so nothing to record
        await _record_move(conn, prompt.id, move, protected, new=current is None)
        return move

    return await store.in_transaction(db, work)


def _label_rows_query(prompt_id: str, label: str) -> Any:
    return select(prompt_labels).where(
        prompt_labels.c.prompt_id == prompt_id, prompt_labels.c.label == label
    )


def _check_protection(label: str, current: Any, *, is_admin: bool, protect: bool | None) -> None:
    if is_admin:
        return
    if current is not None and current.protected:
        raise PromptError(403, f"label {label!r} is protected: only the admin key moves it")
    if protect is not None:
        raise PromptError(403, f"only the admin key protects or unprotects label {label!r}")


async def _existing(conn: AsyncConnection, prompt_id: str, name: str, version: int) -> int:
    query = select(prompt_versions.c.version).where(
        prompt_versions.c.prompt_id == prompt_id, prompt_versions.c.version == version
    )
    if (await conn.execute(query)).first() is None:
        raise PromptError(404, f"prompt {name!r} has no version {version}")
    return version


async def _rollback_target(
    conn: AsyncConnection, prompt_id: str, name: str, label: str, current: Any
) -> int:
    if current is None:
        raise PromptError(404, f"prompt {name!r} has no label {label!r}")
    query = (
        select(prompt_label_moves.c.from_version)
        .where(prompt_label_moves.c.prompt_id == prompt_id, prompt_label_moves.c.label == label)
        .order_by(prompt_label_moves.c.id.desc())
        .limit(1)
    )
    previous = (await conn.execute(query)).scalar()
    if previous is None:
        raise PromptError(
            409, f"label {label!r} of prompt {name!r} has no earlier version to roll back to"
        )
    return int(previous)


async def _set_protection(
    conn: AsyncConnection, prompt_id: str, move: LabelMove, protect: bool
) -> None:
    if move.from_version is not None:  # a new label gets its flag with the move
        where = (prompt_labels.c.prompt_id == prompt_id) & (prompt_labels.c.label == move.label)
        await conn.execute(update(prompt_labels).where(where).values(protected=protect))
    data = {"prompt": move.prompt, "label": move.label, "protected": protect}
    subject = f"prompt:{move.prompt}"
    await store.append_event(conn, "prompt.label_protected", move.actor, subject, data, move.at)


async def _record_move(
    conn: AsyncConnection, prompt_id: str, move: LabelMove, protected: bool, *, new: bool
) -> None:
    values = {"version": move.to_version, "updated_at": move.at, "updated_by": move.actor}
    if new:
        row = {"prompt_id": prompt_id, "label": move.label, "protected": protected, **values}
        await conn.execute(insert(prompt_labels).values(row))
    else:
        where = (prompt_labels.c.prompt_id == prompt_id) & (prompt_labels.c.label == move.label)
        await conn.execute(update(prompt_labels).where(where).values(values))
    move_row = {
        "prompt_id": prompt_id,
        "label": move.label,
        "from_version": move.from_version,
        "to_version": move.to_version,
        "actor": move.actor,
        "at": move.at,
        "action": move.action,
    }
    await conn.execute(insert(prompt_label_moves).values(move_row))
    data = {
        "prompt": move.prompt,
        "label": move.label,
        "from": move.from_version,
        "to": move.to_version,
        "action": move.action,
    }
    subject = f"prompt:{move.prompt}"
    await store.append_event(conn, "prompt.label_moved", move.actor, subject, data, move.at)


async def history(db: Database, name: str, label: str | None = None) -> list[LabelMove]:
    """The label moves of prompt `name` (of one label if given), newest first."""
    async with db.engine.connect() as conn:
        prompt = await store.find_prompt(conn, name)
        query = select(prompt_label_moves).where(prompt_label_moves.c.prompt_id == prompt.id)
        if label is not None:
            query = query.where(prompt_label_moves.c.label == label)
        rows = (await conn.execute(query.order_by(prompt_label_moves.c.id.desc()))).all()
    return [
        LabelMove(name, r.label, r.from_version, r.to_version, r.actor, r.at, r.action)
        for r in rows
    ]
