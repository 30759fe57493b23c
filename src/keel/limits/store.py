"""Limit policies set through the API, in the `limit_policies` table: set, delete, load.

SQLAlchemy Core with bound parameters only. A set is one upsert on the primary key, so two
replicas setting the same subject at once leave one of the two policies, whole.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from keel.limits.config import SCOPES, Limits, Policy, Scope
from keel.storage.tables import limit_policies

__all__ = ["check_subject", "delete_policy", "load_policies", "set_policy"]

_MAX_SUBJECT = 256


def check_subject(scope: str, subject: str) -> Scope:
    """The scope, typed, if (scope, subject) can name a policy; ValueError otherwise."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}: use {', '.join(SCOPES)}")
    if not subject.strip() or len(subject) > _MAX_SUBJECT:
        raise ValueError(f"a subject is 1 to {_MAX_SUBJECT} characters")
    if scope == "project" and subject != "default":
        raise ValueError("the project has one subject: default")
    return scope


def _policy(row: Any) -> Policy:
    return Policy(
        scope=row["scope"],
        subject=row["subject"],
        limits=Limits(row["rpm"], row["tpm"], row["budget_usd"], row["budget_period"]),
        source="api",
        updated_at=float(row["updated_at"]),
    )


async def set_policy(
    engine: AsyncEngine, scope: str, subject: str, limits: Limits, now: float | None = None
) -> Policy:
    """Store the policy of a subject (replacing any); ValueError on a bad scope or subject."""
    typed = check_subject(scope, subject)
    if typed == "model" and limits.budget_usd is not None:
        raise ValueError(
            "a model takes rpm and tpm only (budgets are per project, key, customer and pipeline)"
        )
    at = time.time() if now is None else now
    values = {**limits.to_dict(), "updated_at": at}
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(limit_policies).values(scope=scope, subject=subject, **values)
    stmt = stmt.on_conflict_do_update(index_elements=["scope", "subject"], set_=values)
    async with engine.begin() as conn:
        await conn.execute(stmt)
    return Policy(typed, subject, limits, "api", at)


async def delete_policy(engine: AsyncEngine, scope: str, subject: str) -> bool:
    """Delete a subject's API policy; False if it had none."""
    async with engine.begin() as conn:
        done = await conn.execute(
            delete(limit_policies).where(
                limit_policies.c.scope == scope, limit_policies.c.subject == subject
            )
        )
    return bool(done.rowcount)


async def load_policies(engine: AsyncEngine) -> list[Policy]:
    """Every API policy (what `LimitPolicies.replace_api` takes)."""
    query = select(limit_policies).order_by(limit_policies.c.scope, limit_policies.c.subject)
    async with engine.connect() as conn:
        result = await conn.execute(query)
        return [_policy(r) for r in result.mappings()]
