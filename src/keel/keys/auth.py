"""Who is calling: the admin, a virtual key, or anyone (open mode). Runs on every request.

Active keys live in memory, so a known key is checked with one sha256 and no I/O. A miss costs
one database read; misses are remembered for a while in a bounded negative cache, so a flood
of made-up ids cannot turn into a flood of queries. Revocation in this process is immediate
(`forget`). Revocations on other replicas arrive at once through `keys.revocation` when Redis
is configured (`revoked`, which also keeps a local set of revoked ids that no stale read can
bring back), else with the next `refresh`; keys this process has not cached are read fresh.
The request path never waits on Redis.

The decision depends only on the Authorization value: never on the Host header or the client's
address. Error messages never contain the presented key.

A UI token (`keys.ui_tokens`, minted by the web UI after an admin login) is accepted as the admin
acting through the UI: an admin principal named "ui".
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from keel.keys import store, tokens, ui_tokens
from keel.keys.store import KeyRow
from keel.limits.budgets import Period

__all__ = ["AuthError", "Authenticator", "Principal", "authorize_model"]

MISSING_KEY = "missing API key: send Authorization: Bearer <key>"
INVALID_KEY = "invalid API key"
MALFORMED_HEADER = "malformed Authorization header: send Authorization: Bearer <key>"
REVOKED_KEY = "this API key was revoked"
EXPIRED_KEY = "this API key expired"
INVALID_UI_TOKEN = "invalid or expired UI token: reload the page or log in again"  # noqa: S105


class AuthError(Exception):
    """Authentication (401) or authorization (403) failed; `message` is safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request."""

    kind: Literal["admin", "key", "open"]
    key_id: str | None = None
    name: str | None = None
    customer: str | None = None
    allowed_models: tuple[str, ...] | None = None
    rpm: int | None = None  # the key's own limits (keel.limits.config.LimitPolicies.specs_for)
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: Period | None = None


ADMIN = Principal(kind="admin", name="admin")
OPEN = Principal(kind="open")
UI = Principal(kind="admin", name="ui")


def authorize_model(principal: Principal, model: str) -> None:
    """Raise AuthError(403) when the caller's key may not use `model`."""
    allowed = principal.allowed_models
    if allowed is not None and model not in allowed:
        raise AuthError(
            403, f"this API key may not use model {model!r}; allowed: {', '.join(allowed)}"
        )


def _bearer(authorization: str | None) -> str | None:
    """The credential in `Bearer <credential>`; '' for a header of another shape."""
    parts = authorization.split(None, 1) if authorization else []
    if not parts:
        return None
    if parts[0].lower() != "bearer":
        return ""
    return parts[1].strip() if len(parts) == 2 else None


class _NegativeCache:
    """Ids recently looked up and found unusable (unknown, revoked or expired), bounded."""

    def __init__(self, max_entries: int, ttl: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._entries: OrderedDict[str, tuple[float, KeyRow | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_id: str, now: float) -> tuple[bool, KeyRow | None]:
        entry = self._entries.get(key_id)
        if entry is None:
            return False, None
        if entry[0] <= now:
            del self._entries[key_id]
            return False, None
        return True, entry[1]

    def put(self, key_id: str, row: KeyRow | None, now: float) -> None:
        self._entries.pop(key_id, None)
        self._entries[key_id] = (now + self.ttl, row)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, key_id: str) -> None:
        self._entries.pop(key_id, None)


class Authenticator:
    """Turns an Authorization header into a Principal, or raises AuthError."""

    def __init__(
        self,
        engine: AsyncEngine,
        admin_key: str | None,
        *,
        negative_max: int = 10_000,
        negative_ttl: float = 30.0,
        revoked_max: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._admin = admin_key.encode("utf-8") if admin_key else None
        self._ui_secret = ui_tokens.derive_secret(admin_key, "api") if admin_key else None
        self._clock = clock
        self._keys: dict[str, KeyRow] = {}
        self._negative = _NegativeCache(negative_max, negative_ttl)
        # id -> when forget() was called; keeps a refresh or lookup that was already reading
        # from the database from putting a just-revoked key back into the cache
        self._forgotten: dict[str, float] = {}
        # id -> expiry (None: never) of keys revoked on any replica, as told by the revocation
        # feed; checked after the secret, so a stale cache or read cannot let one through
        self._revoked: OrderedDict[str, float | None] = OrderedDict()
        self._revoked_max = revoked_max

    @property
    def open_mode(self) -> bool:
        """True when no admin key is configured."""
        return self._admin is None

    async def start(self) -> None:
        """Load the active keys."""
        await self.refresh()

    async def refresh(self) -> None:
        """Reload the active keys, to see keys created or revoked by other replicas."""
        started = self._clock()
        rows = await store.load_active(self._engine, started)
        fresh = {
            row.id: row
            for row in rows
            if row.id not in self._forgotten and row.id not in self._revoked
        }
        # a forget() older than this read is already reflected by the database
        self._forgotten = {k: t for k, t in self._forgotten.items() if t >= started}
        self._keys = fresh
        expired = [
            k for k, until in self._revoked.items() if until is not None and until <= started
        ]
        for key_id in expired:  # an expired key is refused as expired anyway
            del self._revoked[key_id]

    def remember(self, row: KeyRow) -> None:
        """Cache a key at once (just created here)."""
        self._negative.discard(row.id)
        self._keys[row.id] = row

    def forget(self, key_id: str) -> None:
        """Drop a key at once (just revoked here); its next use reads the database."""
        self._keys.pop(key_id, None)
        self._negative.discard(key_id)
        self._forgotten[key_id] = self._clock()

    def revoked(self, key_id: str, expires_at: float | None = None) -> None:
        """A key was revoked (here or on another replica): refuse it from now on, even if a
        stale read still shows it active. `expires_at` bounds how long the id is kept."""
        self.forget(key_id)
        self._revoked.pop(key_id, None)
        self._revoked[key_id] = expires_at
        while len(self._revoked) > self._revoked_max:
            # the oldest revocations go first; the database still knows them
            self._revoked.popitem(last=False)

    def is_revoked(self, key_id: str) -> bool:
        """True when this process was told the key is revoked."""
        return key_id in self._revoked

    async def reload(self, key_id: str) -> None:
        """Read one key again (its limits changed on another replica) and cache it if active.

        Never raises: if the database is unreachable, the key is dropped from the cache and
        its next use reads it (and fails closed while the database is down)."""
        try:
            row = await store.get_key(self._engine, key_id)
        except (SQLAlchemyError, OSError):
            self.forget(key_id)
            return
        if row is None or row.status(self._clock()) != "active" or key_id in self._revoked:
            self.forget(key_id)
            return
        self._negative.discard(key_id)
        self._keys[key_id] = row

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an Authorization header value (None when there is none)."""
        credential = _bearer(authorization)
        if credential is None:
            if self._admin is None:
                return OPEN
            raise AuthError(401, MISSING_KEY)
        if self._admin is not None and hmac.compare_digest(credential.encode("utf-8"), self._admin):
            return ADMIN
        if self._ui_secret is not None and ui_tokens.looks_like(credential):
            if ui_tokens.verify(self._ui_secret, credential, now=self._clock()):
                return UI
            raise AuthError(401, INVALID_UI_TOKEN)
        parsed = tokens.parse(credential)
        if parsed is None:
            # open mode: SDKs insist on some api_key, so a foreign one is simply ignored
            if self._admin is None:
                return OPEN
            raise AuthError(401, INVALID_KEY if credential else MALFORMED_HEADER)
        return await self._check_key(*parsed)

    async def _check_key(self, key_id: str, secret: str) -> Principal:
        row = await self._lookup(key_id)
        # the secret is checked first: without it, nobody learns whether an id was revoked
        if row is None or not tokens.verify(row.salt, row.hash, secret):
            raise AuthError(401, INVALID_KEY)
        if row.revoked_at is not None or key_id in self._revoked:
            raise AuthError(401, REVOKED_KEY)
        if row.expires_at is not None and row.expires_at <= self._clock():
            raise AuthError(401, EXPIRED_KEY)
        return Principal(
            kind="key",
            key_id=row.id,
            name=row.name,
            customer=row.customer,
            allowed_models=row.allowed_models,
            rpm=row.rpm,
            tpm=row.tpm,
            budget_usd=row.budget_usd,
            budget_period=row.budget_period,
        )

    async def _lookup(self, key_id: str) -> KeyRow | None:
        row = self._keys.get(key_id)
        if row is not None:
            return row
        now = self._clock()
        known, cached = self._negative.get(key_id, now)
        if known:
            return cached
        try:
            row = await store.get_key(self._engine, key_id)
        except (SQLAlchemyError, OSError) as exc:
            # enforcement fails closed
            raise AuthError(503, "cannot check the API key: the database is unavailable") from exc
        if row is not None and row.status(now) == "active" and key_id not in self._revoked:
            if key_id not in self._forgotten:
                self._keys[key_id] = row
        else:
            self._negative.put(key_id, row, now)
        return row
