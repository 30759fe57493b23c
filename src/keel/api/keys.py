"""Routes for virtual keys, mounted under `/api/v1`: create, list, read, change limits, revoke.

Uses `app.state.db_engine` (an AsyncEngine) and `app.state.authenticator`, which it tells about
new, changed and revoked keys so they take effect in this process at once, and, when the runtime
set one, `app.state.revocations` (a `keys.revocation.RevocationFeed`), which tells the other
replicas at once too.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from keel.api.auth import ApiError, require_admin
from keel.keys import store, tokens
from keel.keys.auth import Authenticator
from keel.keys.revocation import RevocationFeed
from keel.keys.store import KeyRow

__all__ = [
    "CreateKeyRequest",
    "CreatedKey",
    "KeyList",
    "KeyOut",
    "UpdateKeyRequest",
    "router",
]

PeriodName = Literal["day", "month", "total"]


class _LimitFields(BaseModel):
    """A key's limits; null: no limit of that kind."""

    rpm: int | None = Field(None, ge=1, description="Requests per minute.")
    tpm: int | None = Field(None, ge=1, description="Tokens (prompt and completion) per minute.")
    budget_usd: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Spend allowed per budget_period, in USD."
    )
    budget_period: PeriodName | None = Field(
        None, description="day or month (UTC calendar), or total; required with budget_usd."
    )


router = APIRouter(tags=["keys"], dependencies=[Depends(require_admin)])


class CreateKeyRequest(_LimitFields):
    """A new key. Give `expires_at` or `expires_in_days`, or neither: it never expires."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256, description="A name people recognise.")
    customer: str | None = Field(
        None, max_length=256, description="Customer that requests with this key are billed to."
    )
    expires_at: datetime | None = Field(None, description="ISO 8601; without a zone, UTC.")
    expires_in_days: float | None = Field(None, gt=0, description="Expiry relative to now.")
    allowed_models: list[str] | None = Field(
        None, description="Models this key may call; null or empty: all models."
    )
    metadata: dict[str, Any] | None = Field(None, description="Free-form JSON kept with the key.")

    @model_validator(mode="after")
    def _one_expiry(self) -> CreateKeyRequest:
        if self.expires_at is not None and self.expires_in_days is not None:
            raise ValueError("give expires_at or expires_in_days, not both")
        if (self.budget_usd is None) != (self.budget_period is None):
            raise ValueError("budget_usd and budget_period go together: give both or neither")
        return self

    def expiry(self, now: float) -> datetime | float | None:
        if self.expires_in_days is not None:
            return now + self.expires_in_days * 86400
        return self.expires_at


class KeyOut(BaseModel):
    """A key as shown after creation: never its secret."""

    id: str
    name: str
    prefix: str = Field(description="`sk-keel-<id>-…`: enough to recognise the key.")
    customer: str | None
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    status: Literal["active", "revoked", "expired"]
    allowed_models: list[str] | None
    metadata: dict[str, Any] | None
    rpm: int | None
    tpm: int | None
    budget_usd: float | None
    budget_period: PeriodName | None


class UpdateKeyRequest(_LimitFields):
    """New limits for a key: the fields given change (null lifts a limit), the others stay."""

    model_config = ConfigDict(extra="forbid")


class CreatedKey(KeyOut):
    key: str = Field(description="The whole key. Shown once: Keel keeps only its hash.")


class KeyList(BaseModel):
    data: list[KeyOut]


def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.db_engine
    return engine


def _authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator


def _feed(request: Request) -> RevocationFeed | None:
    feed: RevocationFeed | None = getattr(request.app.state, "revocations", None)
    return feed


def _not_found(key_id: str) -> ApiError:
    # echo the id only when it is one; never whatever else (a whole key, say) was sent
    shown = f" {key_id}" if tokens.is_key_id(key_id) else ""
    return ApiError(404, f"no API key with id{shown}")


@router.post("/keys", status_code=201, response_model=CreatedKey)
async def create_key(body: CreateKeyRequest, request: Request) -> CreatedKey:
    """Create a key. The response holds the whole key, once."""
    now = time.time()
    try:
        row, token = await store.insert_key(
            _engine(request),
            name=body.name,
            customer=body.customer,
            expires_at=body.expiry(now),
            allowed_models=body.allowed_models,
            metadata=body.metadata,
            rpm=body.rpm,
            tpm=body.tpm,
            budget_usd=body.budget_usd,
            budget_period=body.budget_period,
            now=now,
        )
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    _authenticator(request).remember(row)
    return CreatedKey(**row.info(now).to_dict(), key=token)


@router.get("/keys", response_model=KeyList)
async def list_keys(request: Request, include_revoked: bool = False) -> KeyList:
    """Keys, oldest first; revoked ones only with `include_revoked=true`."""
    infos = await store.list_keys(_engine(request), include_revoked=include_revoked)
    return KeyList(data=[KeyOut(**info.to_dict()) for info in infos])


@router.get("/keys/{key_id}", response_model=KeyOut)
async def get_key(key_id: str, request: Request) -> KeyOut:
    """One key."""
    row = await store.get_key(_engine(request), key_id)
    if row is None:
        raise _not_found(key_id)
    return KeyOut(**row.info().to_dict())


@router.patch("/keys/{key_id}", response_model=KeyOut)
async def update_key(key_id: str, body: UpdateKeyRequest, request: Request) -> KeyOut:
    """Change a key's limits (rpm, tpm, budget_usd, budget_period); effective at once."""
    try:
        row = await store.update_limits(
            _engine(request), key_id, body.model_dump(exclude_unset=True)
        )
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if row is None:
        raise _not_found(key_id)
    now = time.time()
    if row.status(now) == "active":
        _authenticator(request).remember(row)
        feed = _feed(request)
        if feed is not None:
            await feed.publish_change(key_id)
    return KeyOut(**row.info(now).to_dict())


async def _revoke(key_id: str, request: Request) -> KeyOut:
    info = await store.revoke_key(_engine(request), key_id)
    if info is None:
        raise _not_found(key_id)
    _authenticator(request).forget(key_id)
    feed = _feed(request)
    if feed is not None:
        row: KeyRow | None = await store.get_key(_engine(request), key_id)
        await feed.publish(key_id, None if row is None else row.expires_at)
    return KeyOut(**info.to_dict())


@router.post("/keys/{key_id}/revoke", response_model=KeyOut)
async def revoke_key(key_id: str, request: Request) -> KeyOut:
    """Revoke a key; it stops working at once. Revoking twice is harmless."""
    return await _revoke(key_id, request)


@router.delete("/keys/{key_id}", response_model=KeyOut)
async def delete_key(key_id: str, request: Request) -> KeyOut:
    """Same as revoke: the row stays, so records that name the key keep their meaning."""
    return await _revoke(key_id, request)
