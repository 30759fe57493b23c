"""The keys table through keel.keys.store, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from keel.keys import store, tokens
from keel.storage.tables import keys

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


async def test_create_returns_info_and_token_and_stores_only_a_hash(engine: AsyncEngine) -> None:
    row, token = await store.insert_key(
        engine,
        name="web app",
        customer="acme",
        expires_at=datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC),
        allowed_models=["gpt-4o", "mock/echo"],
        metadata={"team": "growth"},
    )
    info = row.info()
    key_id, secret = tokens.parse(token) or ("", "")
    assert key_id == info.id
    created = info.created_at
    assert info.to_dict() == {
        "id": key_id,
        "name": "web app",
        "prefix": f"sk-keel-{key_id}-…",
        "customer": "acme",
        "created_at": created,
        "expires_at": "2099-01-02T03:04:05Z",
        "revoked_at": None,
        "status": "active",
        "allowed_models": ["gpt-4o", "mock/echo"],
        "metadata": {"team": "growth"},
        "rpm": None,
        "tpm": None,
        "budget_usd": None,
        "budget_period": None,
    }
    assert abs(datetime.fromisoformat(created).timestamp() - time.time()) < 5
    async with engine.connect() as conn:
        row = (await conn.execute(select(keys))).mappings().one()
    assert secret not in str(dict(row)) and token not in str(dict(row))
    assert row["hash"] == tokens.hash_secret(row["salt"], secret)
    assert len(row["salt"]) == 32


async def test_insert_key_row_and_get_key(engine: AsyncEngine) -> None:
    row, token = await store.insert_key(engine, name="ci", now=T0, expires_at=T0 + 60)
    got = await store.get_key(engine, row.id)
    assert got == row
    assert got is not None and got.expires_at == T0 + 60 and got.created_at == T0
    assert got.allowed_models is None and got.metadata is None and got.customer is None
    assert row.salt not in repr(row) and row.hash not in repr(row)
    assert token not in repr(row)


async def test_empty_allowed_models_means_all(engine: AsyncEngine) -> None:
    row, _ = await store.insert_key(engine, name="x", allowed_models=[])
    assert row.info().allowed_models is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "  "}, "a key needs a name"),
        ({"name": "x" * 257}, "at most 256"),
        ({"name": "x", "customer": "c" * 257}, "at most 256"),
        ({"name": "x", "expires_at": 1000.0}, "expires_at is in the past"),
    ],
)
async def test_create_rejects_bad_input(
    engine: AsyncEngine, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await store.insert_key(engine, **kwargs)  # type: ignore[arg-type]
    assert await store.list_keys(engine, include_revoked=True) == []


async def test_list_revoke_and_load_active(engine: AsyncEngine) -> None:
    a, _ = await store.insert_key(engine, name="a", now=T0)
    b, _ = await store.insert_key(engine, name="b", now=T0 + 1)
    c, _ = await store.insert_key(engine, name="c", now=T0 + 2, expires_at=T0 + 10)
    assert [k.name for k in await store.list_keys(engine)] == ["a", "b", "c"]
    statuses = {k.name: k.status for k in await store.list_keys(engine)}
    assert statuses == {"a": "active", "b": "active", "c": "expired"}

    revoked = await store.revoke_key(engine, b.id, now=T0 + 5)
    assert revoked is not None
    assert (revoked.status, revoked.revoked_at) == ("revoked", "2026-01-01T00:00:05Z")
    again = await store.revoke_key(engine, b.id, now=T0 + 50)
    assert again == revoked  # the first revocation time stays

    assert [k.name for k in await store.list_keys(engine)] == ["a", "c"]
    assert [k.name for k in await store.list_keys(engine, include_revoked=True)] == ["a", "b", "c"]
    assert {r.id for r in await store.load_active(engine, now=T0 + 5)} == {a.id, c.id}
    assert {r.id for r in await store.load_active(engine, now=T0 + 10)} == {a.id}
    got = await store.get_key(engine, b.id)
    assert got is not None and got.revoked_at == T0 + 5


@pytest.mark.parametrize(
    "key_id",
    ["nosuchkey234", "' OR 1=1 --", "x' OR 'a'='a", "abcdefgh2345; DROP TABLE keys", ""],
)
async def test_unknown_or_hostile_ids(engine: AsyncEngine, key_id: str) -> None:
    row, _ = await store.insert_key(engine, name="a")
    assert await store.get_key(engine, key_id) is None
    assert await store.revoke_key(engine, key_id) is None
    assert [r.id for r in await store.load_active(engine)] == [row.id]


async def test_iso() -> None:
    assert store.iso(None) is None
    assert store.iso(T0) == "2026-01-01T00:00:00Z"
    assert store.iso(T0 + 0.9) == "2026-01-01T00:00:00Z"


async def test_limits_are_stored_and_changed(engine: AsyncEngine) -> None:
    row, _ = await store.insert_key(
        engine, name="a", rpm=60, tpm=1000, budget_usd=20.0, budget_period="month"
    )
    assert (row.rpm, row.tpm, row.budget_usd, row.budget_period) == (60, 1000, 20.0, "month")
    stored = await store.get_key(engine, row.id)
    assert stored == row
    changed = await store.update_limits(engine, row.id, {"rpm": None, "budget_usd": 5.5})
    assert changed is not None
    assert (changed.rpm, changed.tpm, changed.budget_usd, changed.budget_period) == (
        None,
        1000,
        5.5,
        "month",
    )
    assert await store.get_key(engine, row.id) == changed
    lifted = await store.update_limits(engine, row.id, {"budget_usd": None, "budget_period": None})
    assert lifted is not None and (lifted.budget_usd, lifted.budget_period) == (None, None)
    assert await store.update_limits(engine, "nosuchkey234", {"rpm": 1}) is None


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"rpm": 0}, "rpm must be a whole number above 0, got 0"),
        ({"tpm": -5}, "tpm must be a whole number above 0, got -5"),
        ({"budget_usd": 0.0, "budget_period": "day"}, "budget_usd must be an amount above 0"),
        ({"budget_usd": 10.0}, "budget_usd and budget_period go together"),
        ({"budget_period": "week"}, "budget_period must be one of day, month, total"),
    ],
)
async def test_bad_limits_are_refused(
    engine: AsyncEngine, limits: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await store.insert_key(engine, name="a", **limits)
    row, _ = await store.insert_key(engine, name="b", budget_usd=1.0, budget_period="day")
    change = {"budget_period": None} if "budget_usd" in limits else limits
    with pytest.raises(ValueError):
        await store.update_limits(engine, row.id, change)
    assert await store.get_key(engine, row.id) == row  # nothing changed
