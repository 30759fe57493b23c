"""Alert rules and their history in the `alert_rules` and `alert_events` tables.

SQLAlchemy Core with bound parameters only, the same on SQLite and PostgreSQL. A rule's state
moves only through `transition`, a compare-and-set on (state, state_since): with several
replicas evaluating the same rule, exactly one wins each transition, and only the winner
notifies. `alert_events` is append-only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from keel.alerts.rules import Channel, Rule, RuleError, check_channels, check_filters, check_rule
from keel.alerts.states import Step
from keel.records.model import new_id
from keel.storage.database import Database
from keel.storage.tables import alert_events, alert_rules

__all__ = [
    "RuleExists",
    "add_event",
    "create_rule",
    "delete_rule",
    "get_rule",
    "list_events",
    "list_rules",
    "load_rules",
    "touch",
    "transition",
    "update_rule",
]

EDITABLE = (
    "name",
    "metric",
    "filters",
    "window_s",
    "comparator",
    "threshold",
    "for_s",
    "channels",
    "enabled",
)
MAX_EVENTS = 1000


class RuleExists(RuleError):
    """Another rule has this name."""


def _rule(row: Any) -> Rule:
    return Rule(
        id=row["id"],
        name=row["name"],
        metric=row["metric"],
        filters=dict(row["filters"] or {}),
        window_s=int(row["window_s"]),
        comparator=row["comparator"],
        threshold=float(row["threshold"]),
        for_s=int(row["for_s"]),
        channels=tuple(Channel(c["type"], c["url"]) for c in row["channels"] or []),
        enabled=bool(row["enabled"]),
        state=row["state"],
        state_since=row["state_since"],
        last_value=row["last_value"],
        last_evaluated_at=row["last_evaluated_at"],
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
    )


def _columns(rule: Rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "metric": rule.metric,
        "filters": dict(rule.filters),
        "window_s": int(rule.window_s),
        "comparator": rule.comparator,
        "threshold": float(rule.threshold),
        "for_s": int(rule.for_s),
        "channels": [{"type": c.type, "url": c.url} for c in rule.channels],
        "enabled": rule.enabled,
        "state": rule.state,
        "state_since": rule.state_since,
        "updated_at": rule.updated_at,
    }


def _ref(ref: str) -> ColumnElement[bool]:
    return or_(alert_rules.c.id == ref, alert_rules.c.name == ref)


async def create_rule(
    db: Database,
    *,
    name: str,
    metric: str,
    window_s: int,
    comparator: str,
    threshold: float,
    for_s: int = 0,
    filters: Mapping[str, Any] | None = None,
    channels: Sequence[Any] = (),
    enabled: bool = True,
    now: float | None = None,
) -> Rule:
    """Store a new rule (state ok); RuleError on a bad field, RuleExists on a taken name."""
    at = time.time() if now is None else now
    rule = check_rule(
        Rule(
            id=new_id(),
            name=name,
            metric=metric,
            filters=check_filters(filters),
            window_s=window_s,
            comparator=comparator,
            threshold=threshold,
            for_s=for_s,
            channels=check_channels(channels),
            enabled=enabled,
            created_at=at,
            updated_at=at,
        )
    )
    try:
        async with db.engine.begin() as conn:
            await conn.execute(
                insert(alert_rules).values(id=rule.id, created_at=at, **_columns(rule))
            )
    except IntegrityError:
        raise RuleExists(f"an alert rule named {name!r} exists") from None
    return rule


async def get_rule(db: Database, ref: str) -> Rule | None:
    """The rule with id or name `ref`."""
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(alert_rules).where(_ref(ref)))).mappings().all()
    by_id = [r for r in rows if r["id"] == ref]
    return _rule((by_id or rows)[0]) if rows else None


async def update_rule(
    db: Database, ref: str, changes: Mapping[str, Any], now: float | None = None
) -> Rule | None:
    """Apply `changes` (fields of EDITABLE) to the rule `ref`; None when there is none.

    A disabled rule goes back to state ok without a notification; its next alert starts over.
    """
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise RuleError(f"cannot change {', '.join(sorted(unknown))}")
    current = await get_rule(db, ref)
    if current is None:
        return None
    values = {f: getattr(current, f) for f in EDITABLE} | dict(changes)
    values["filters"] = check_filters(values["filters"])
    values["channels"] = check_channels(values["channels"])
    state, since = current.state, current.state_since
    if not values["enabled"]:
        state, since = "ok", None
    at = time.time() if now is None else now
    rule = check_rule(
        Rule(
            **{**_fields(current), **values},
            state=state,
            state_since=since,
            updated_at=at,
        )
    )
    try:
        async with db.engine.begin() as conn:
            done = await conn.execute(
                update(alert_rules).where(alert_rules.c.id == rule.id).values(**_columns(rule))
            )
    except IntegrityError:
        raise RuleExists(f"an alert rule named {rule.name!r} exists") from None
    return rule if done.rowcount else None


def _fields(rule: Rule) -> dict[str, Any]:
    keep = ("id", "last_value", "last_evaluated_at", "created_at")
    return {k: getattr(rule, k) for k in keep}


async def delete_rule(db: Database, ref: str) -> Rule | None:
    """Delete the rule `ref` (its events stay); the deleted rule, or None."""
    rule = await get_rule(db, ref)
    if rule is None:
        return None
    async with db.engine.begin() as conn:
        done = await conn.execute(delete(alert_rules).where(alert_rules.c.id == rule.id))
    return rule if done.rowcount else None


async def load_rules(engine: AsyncEngine, *, enabled_only: bool = False) -> list[Rule]:
    """Every rule, by name."""
    query = select(alert_rules).order_by(alert_rules.c.name)
    if enabled_only:
        query = query.where(alert_rules.c.enabled.is_(True))
    async with engine.connect() as conn:
        return [_rule(r) for r in (await conn.execute(query)).mappings()]


async def list_rules(db: Database) -> list[dict[str, Any]]:
    """Every rule as a JSON-ready dict, channel URLs redacted."""
    return [r.to_dict() for r in await load_rules(db.engine)]


async def transition(db: Database, rule: Rule, to: Step, value: float | None, now: float) -> bool:
    """Move `rule` from the state it was read in to `to`; False if another writer moved it first
    (another replica, or an edit that disabled the rule)."""
    c = alert_rules.c
    since = (
        c.state_since.is_(None) if rule.state_since is None else c.state_since == rule.state_since
    )
    query = (
        update(alert_rules)
        .where(and_(c.id == rule.id, c.enabled.is_(True), c.state == rule.state, since))
        .values(state=to.state, state_since=to.since, last_value=value, last_evaluated_at=now)
    )
    async with db.engine.begin() as conn:
        done = await conn.execute(query)
    return bool(done.rowcount)


async def touch(db: Database, rule_id: str, value: float | None, now: float) -> None:
    """Note the last value seen for a rule whose state did not change."""
    query = (
        update(alert_rules)
        .where(alert_rules.c.id == rule_id)
        .values(last_value=value, last_evaluated_at=now)
    )
    async with db.engine.begin() as conn:
        await conn.execute(query)


async def add_event(
    db: Database,
    *,
    rule_id: str | None,
    rule_name: str,
    kind: str,
    at: float,
    value: float | None,
    threshold: float | None,
    message: str,
    deliveries: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Append one event to the history; the event as `list_events` shows it."""
    event = {
        "id": new_id(),
        "rule_id": rule_id,
        "rule_name": rule_name,
        "kind": kind,
        "at": at,
        "value": value,
        "threshold": threshold,
        "message": message,
        "deliveries": [dict(d) for d in deliveries],
    }
    async with db.engine.begin() as conn:
        await conn.execute(insert(alert_events).values(**event))
    return event


async def list_events(
    db: Database, *, rule_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The latest events first (of one rule, by id, if given), at most `limit` (≤ 1000)."""
    e = alert_events.c
    query = select(alert_events).order_by(e.at.desc(), e.id.desc())
    query = query.limit(max(1, min(limit, MAX_EVENTS)))
    if rule_id is not None:
        query = query.where(e.rule_id == rule_id)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [
        {
            "id": r["id"],
            "rule_id": r["rule_id"],
            "rule_name": r["rule_name"],
            "kind": r["kind"],
            "at": r["at"],
            "value": r["value"],
            "threshold": r["threshold"],
            "message": r["message"],
            "deliveries": list(r["deliveries"] or []),
        }
        for r in rows
    ]
