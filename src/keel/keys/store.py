"""Virtual keys in the database: create, list, read, revoke.

Only the salt and the hash of a key's secret are stored; the whole key is returned once, on
creation. Every statement is SQLAlchemy Core with bound parameters: a key or an id a client sent
is never part of the SQL text.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import null, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from keel.keys import tokens
from keel.limits.budgets import Period
from keel.limits.config import check_limits
from keel.storage.tables import keys

__all__ = [
    "KeyInfo",
    "KeyRow",
    "get_key",
    "insert_key",
    "iso",
    "list_keys",
    "load_active",
    "revoke_key",
    "update_limits",
]

KeyStatus = Literal["active", "revoked", "expired"]
_MAX_TEXT = 256


def iso(ts: float | None) -> str | None:
    """Unix seconds as an ISO 8601 UTC string (`2026-01-31T12:00:00Z`), None stays None."""
    if ts is None:
        return None
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What may be shown about a key: everything but its salt and hash. JSON-ready."""

    id: str
    name: str
    prefix: str
    customer: str | None
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    status: KeyStatus
    allowed_models: list[str] | None
    metadata: dict[str, Any] | None
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: Period | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "customer": self.customer,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "status": self.status,
            "allowed_models": None if self.allowed_models is None else list(self.allowed_models),
            "metadata": None if self.metadata is None else dict(self.metadata),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "budget_usd": self.budget_usd,
            "budget_period": self.budget_period,
        }


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A stored key as the authenticator needs it (times in unix seconds)."""

    id: str
    name: str
    salt: str = field(repr=False)
    hash: str = field(repr=False)
    customer: str | None = None
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    allowed_models: tuple[str, ...] | None = None
    metadata: Mapping[str, Any] | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: Period | None = None

    @classmethod
    def from_mapping(cls, row: Mapping[Any, Any]) -> KeyRow:
        models = row["allowed_models"]
        return cls(
            id=row["id"],
            name=row["name"],
            salt=row["salt"],
            hash=row["hash"],
            customer=row["customer"],
            created_at=float(row["created_at"]),
            expires_at=row["expires_at"],
            revoked_at=row["revoked_at"],
            allowed_models=tuple(models) if models is not None else None,
            metadata=row["metadata"],
            rpm=row["rpm"],
            tpm=row["tpm"],
            budget_usd=row["budget_usd"],
            budget_period=row["budget_period"],
        )

    def status(self, now: float) -> KeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def info(self, now: float | None = None) -> KeyInfo:
        return KeyInfo(
            id=self.id,
            name=self.name,
            prefix=tokens.display_prefix(self.id),
            customer=self.customer,
            created_at=iso(self.created_at) or "",
            expires_at=iso(self.expires_at),
            revoked_at=iso(self.revoked_at),
            status=self.status(time.time() if now is None else now),
            allowed_models=None if self.allowed_models is None else list(self.allowed_models),
            metadata=None if self.metadata is None else dict(self.metadata),
            rpm=self.rpm,
            tpm=self.tpm,
            budget_usd=self.budget_usd,
            budget_period=self.budget_period,
        )


def _unix(value: datetime | float | None) -> float | None:
    """A datetime (naive means UTC) or unix seconds, as unix seconds."""
    if value is None or isinstance(value, int | float):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _check(name: str, customer: str | None, expires_at: float | None, now: float) -> None:
    if not name.strip():
        raise ValueError("a key needs a name")
    if len(name) > _MAX_TEXT or (customer is not None and len(customer) > _MAX_TEXT):
        raise ValueError(f"name and customer may be at most {_MAX_TEXT} characters")
    if expires_at is not None and expires_at <= now:
        raise ValueError("expires_at is in the past")


def _values(row: KeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "salt": row.salt,
        "hash": row.hash,
        "customer": row.customer,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": None,
        # SQL NULL rather than the JSON text `null`
        "allowed_models": null() if row.allowed_models is None else list(row.allowed_models),
        "metadata": null() if row.metadata is None else dict(row.metadata),
        "rpm": row.rpm,
        "tpm": row.tpm,
        "budget_usd": row.budget_usd,
        "budget_period": row.budget_period,
    }


async def insert_key(
    engine: AsyncEngine,
    *,
    name: str,
    customer: str | None = None,
    expires_at: datetime | float | None = None,
    allowed_models: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    budget_usd: float | None = None,
    budget_period: Period | None = None,
    now: float | None = None,
) -> tuple[KeyRow, str]:
    """Store a new key; return its row and the whole key string (the only time it exists).

    An empty `allowed_models` means no restriction, like None. Limits are positive numbers and
    a budget needs its period (see `keel.limits.config.check_limits`). Raises ValueError on bad
    input.
    """
    created = time.time() if now is None else now
    expires = _unix(expires_at)
    _check(name, customer, expires, created)
    check_limits(rpm, tpm, budget_usd, budget_period)
    models = tuple(allowed_models) if allowed_models else None
    for _attempt in range(3):  # a 60-bit id collides about never; retry rather than 500
        new = tokens.generate()
        salt = tokens.new_salt()
        row = KeyRow(
            id=new.id,
            name=name,
            salt=salt,
            hash=tokens.hash_secret(salt, new.secret),
            customer=customer,
            created_at=created,
            expires_at=expires,
            allowed_models=models,
            metadata=dict(metadata) if metadata else None,
            rpm=rpm,
            tpm=tpm,
            budget_usd=budget_usd,
            budget_period=budget_period,
        )
        try:
            async with engine.begin() as conn:
                await conn.execute(keys.insert().values(_values(row)))
        except IntegrityError:
            continue
        return row, new.token
    raise RuntimeError("could not find a free key id")


async def list_keys(engine: AsyncEngine, include_revoked: bool = False) -> list[KeyInfo]:
    """Keys oldest first; revoked ones only when asked."""
    query = select(keys).order_by(keys.c.created_at, keys.c.id)
    if not include_revoked:
        query = query.where(keys.c.revoked_at.is_(None))
    async with engine.connect() as conn:
        result = await conn.execute(query)
        rows = [KeyRow.from_mapping(r) for r in result.mappings()]
    now = time.time()
    return [row.info(now) for row in rows]


async def get_key(engine: AsyncEngine, key_id: str) -> KeyRow | None:
    """The stored key with this id, None if there is none (or the id is malformed)."""
    if not tokens.is_key_id(key_id):
        return None
    async with engine.connect() as conn:
        result = await conn.execute(select(keys).where(keys.c.id == key_id))
        found = result.mappings().first()
    return None if found is None else KeyRow.from_mapping(found)


async def revoke_key(engine: AsyncEngine, key_id: str, now: float | None = None) -> KeyInfo | None:
    """Revoke a key (a second revoke keeps the first time); None if there is no such key."""
    if not tokens.is_key_id(key_id):
        return None
    at = time.time() if now is None else now
    async with engine.begin() as conn:
        await conn.execute(
            update(keys)
            .where(keys.c.id == key_id, keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        result = await conn.execute(select(keys).where(keys.c.id == key_id))
        found = result.mappings().first()
    return None if found is None else KeyRow.from_mapping(found).info(at)


_LIMIT_FIELDS = ("rpm", "tpm", "budget_usd", "budget_period")


async def update_limits(
    engine: AsyncEngine, key_id: str, changes: Mapping[str, Any]
) -> KeyRow | None:
    """Change some of a key's rpm, tpm, budget_usd, budget_period (None lifts a limit).

    Fields not in `changes` keep their value; the result must pass `check_limits` (ValueError
    otherwise, and nothing changes). None if there is no such key. A revoked key can be changed
    too: its limits matter to nobody, but refusing would only surprise a script.
    """
    unknown = sorted(set(changes) - set(_LIMIT_FIELDS))
    if unknown:
        raise ValueError(f"not a limit: {', '.join(unknown)}")
    if not tokens.is_key_id(key_id):
        return None
    async with engine.begin() as conn:
        result = await conn.execute(select(keys).where(keys.c.id == key_id))
        found = result.mappings().first()
        if found is None:
            return None
        merged = {name: changes.get(name, found[name]) for name in _LIMIT_FIELDS}
        check_limits(**merged)
        await conn.execute(update(keys).where(keys.c.id == key_id).values(merged))
        result = await conn.execute(select(keys).where(keys.c.id == key_id))
        return KeyRow.from_mapping(result.mappings().one())


async def load_active(engine: AsyncEngine, now: float | None = None) -> list[KeyRow]:
    """Keys that are neither revoked nor expired: what the authenticator keeps in memory."""
    at = time.time() if now is None else now
    query = select(keys).where(
        keys.c.revoked_at.is_(None),
        or_(keys.c.expires_at.is_(None), keys.c.expires_at > at),
    )
    async with engine.connect() as conn:
        result = await conn.execute(query)
        return [KeyRow.from_mapping(r) for r in result.mappings()]
