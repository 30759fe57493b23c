"""Authenticator rules: admin, virtual keys, open mode, revocation, expiry, negative cache."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from keel.keys import store, tokens
from keel.keys.auth import Authenticator, AuthError, Principal, authorize_model
from keel.keys.store import KeyRow

ADMIN_KEY = "admin-key-0123456789"
T0 = 1_767_225_600.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Ids the authenticator looked up in the database."""
    reads: list[str] = []
    real = store.get_key

    async def counting(engine: AsyncEngine, key_id: str) -> KeyRow | None:
        reads.append(key_id)
        return await real(engine, key_id)

    monkeypatch.setattr(store, "get_key", counting)
    return reads


async def _fail(authenticator: Authenticator, header: str | None) -> AuthError:
    with pytest.raises(AuthError) as info:
        await authenticator.authenticate(header)
    err = info.value
    credential = (header or "").split(" ", 1)[-1].strip()
    if credential:
        assert credential not in err.message
        assert credential not in str(err) and credential not in repr(err.args)
    return err


async def _new(engine: AsyncEngine, **kwargs: object) -> tuple[KeyRow, str]:
    kwargs.setdefault("now", T0)
    return await store.insert_key(engine, name="app", **kwargs)  # type: ignore[arg-type]


async def test_admin_key(engine: AsyncEngine) -> None:
    auth = Authenticator(engine, ADMIN_KEY)
    await auth.start()
    assert not auth.open_mode
    assert (await auth.authenticate(f"Bearer {ADMIN_KEY}")).kind == "admin"
    assert (await auth.authenticate(f"bearer   {ADMIN_KEY}  ")).kind == "admin"
    assert (await auth.authenticate(f"Bearer\t{ADMIN_KEY}")).kind == "admin"
    err = await _fail(auth, f"Bearer {ADMIN_KEY}x")
    assert (err.status, err.message) == (401, "invalid API key")
    err = await _fail(auth, None)
    assert (err.status, err.message) == (401, "missing API key: send Authorization: Bearer <key>")
    assert (await _fail(auth, "Bearer ")).message.startswith("missing API key")
    err = await _fail(auth, f"Basic {ADMIN_KEY}")
    assert err.message == "malformed Authorization header: send Authorization: Bearer <key>"
    assert (await _fail(auth, "Bearer ádmin")).message == "invalid API key"


async def test_virtual_key(engine: AsyncEngine, db_reads: list[str]) -> None:
    row, token = await _new(engine, customer="acme", allowed_models=["mock/echo"])
    auth = Authenticator(engine, ADMIN_KEY, clock=Clock())
    await auth.start()
    principal = await auth.authenticate(f"Bearer {token}")
    assert principal == Principal(
        kind="key", key_id=row.id, name="app", customer="acme", allowed_models=("mock/echo",)
    )
    assert db_reads == []  # loaded at start: no I/O on the request path
    key_id, secret = tokens.parse(token) or ("", "")
    wrong = f"sk-keel-{key_id}-{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    assert (await _fail(auth, f"Bearer {wrong}")).message == "invalid API key"
    assert db_reads == []


async def test_cached_key_needs_no_database(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = await _new(engine)
    auth = Authenticator(engine, ADMIN_KEY, clock=Clock())
    await auth.start()
    await engine.dispose()

    async def down(*args: object, **kwargs: object) -> None:
        raise AssertionError("the database was used")

    monkeypatch.setattr(store, "get_key", down)
    monkeypatch.setattr(store, "load_active", down)
    assert (await auth.authenticate(f"Bearer {token}")).kind == "key"


async def test_key_created_elsewhere_is_found_with_one_read(
    engine: AsyncEngine, db_reads: list[str]
) -> None:
    auth = Authenticator(engine, ADMIN_KEY, clock=Clock())
    await auth.start()
    row, token = await _new(engine)  # another replica created it
    for _ in range(3):
        assert (await auth.authenticate(f"Bearer {token}")).key_id == row.id
    assert db_reads == [row.id]


async def test_remember_makes_a_new_key_work_without_a_read(
    engine: AsyncEngine, db_reads: list[str]
) -> None:
    auth = Authenticator(engine, ADMIN_KEY, clock=Clock())
    await auth.start()
    row, token = await _new(engine)
    auth.remember(row)
    assert (await auth.authenticate(f"Bearer {token}")).key_id == row.id
    assert db_reads == []


async def test_revoked_at_once_after_forget(engine: AsyncEngine) -> None:
    row, token = await _new(engine)
    auth = Authenticator(engine, ADMIN_KEY, clock=Clock())
    await auth.start()
    assert (await auth.authenticate(f"Bearer {token}")).kind == "key"
    await store.revoke_key(engine, row.id, now=T0 + 1)
    auth.forget(row.id)
    err = await _fail(auth, f"Bearer {token}")
    assert (err.status, err.message) == (401, "this API key was revoked")
    await auth.refresh()
    assert (await _fail(auth, f"Bearer {token}")).message == "this API key was revoked"


async def test_revoked_on_another_replica_is_seen_after_refresh(engine: AsyncEngine) -> None:
    row, token = await _new(engine)
    auth = Authenticator(engine, ADMIN_KEY, clock=Clock())
    await auth.start()
    assert (await auth.authenticate(f"Bearer {token}")).kind == "key"
    await store.revoke_key(engine, row.id, now=T0 + 1)  # no forget(): another process did it
    await auth.refresh()
    assert (await _fail(auth, f"Bearer {token}")).message == "this API key was revoked"


async def test_a_refresh_in_flight_does_not_bring_back_a_forgotten_key(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    row, token = await _new(engine)
    auth = Authenticator(engine, ADMIN_KEY, clock=Clock())
    await auth.start()
    real = store.load_active

    async def stale_then_revoked(engine: AsyncEngine, now: float | None = None) -> list[KeyRow]:
        rows = await real(engine, now)  # read before the revocation committed
        await store.revoke_key(engine, row.id, now=T0)
        auth.forget(row.id)
        return rows

    monkeypatch.setattr(store, "load_active", stale_then_revoked)
    await auth.refresh()
    assert (await _fail(auth, f"Bearer {token}")).message == "this API key was revoked"


async def test_expired(engine: AsyncEngine) -> None:
    clock = Clock(T0 + 1)
    _, token = await _new(engine, expires_at=T0 + 60)
    auth = Authenticator(engine, ADMIN_KEY, clock=clock)
    await auth.start()
    assert (await auth.authenticate(f"Bearer {token}")).kind == "key"
    clock.now = T0 + 60
    err = await _fail(auth, f"Bearer {token}")
    assert (err.status, err.message) == (401, "this API key expired")
    await auth.refresh()
    assert (await _fail(auth, f"Bearer {token}")).message == "this API key expired"


async def test_revoked_status_is_not_told_without_the_secret(engine: AsyncEngine) -> None:
    row, token = await _new(engine)
    await store.revoke_key(engine, row.id)
    auth = Authenticator(engine, ADMIN_KEY)
    await auth.start()
    forged = f"sk-keel-{row.id}-{'A' * 43}"
    assert (await _fail(auth, f"Bearer {forged}")).message == "invalid API key"
    assert (await _fail(auth, f"Bearer {token}")).message == "this API key was revoked"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer sk-keel-' OR 1=1 --",
        "Bearer sk-keel-abcdefgh2345-' OR '1'='1'; DROP TABLE keys; --xxxxxxxxxxxxxxx",
        "Bearer sk-proj-abc",
        "Bearer " + "x" * 10_000,
    ],
)
async def test_malformed_keys_never_reach_the_database(
    engine: AsyncEngine, db_reads: list[str], header: str
) -> None:
    auth = Authenticator(engine, ADMIN_KEY)
    await auth.start()
    assert (await _fail(auth, header)).message == "invalid API key"
    open_auth = Authenticator(engine, None)
    await open_auth.start()
    assert (await open_auth.authenticate(header)).kind == "open"
    assert db_reads == []


async def test_open_mode(engine: AsyncEngine) -> None:
    row, token = await _new(engine, customer="acme")
    revoked, revoked_token = await _new(engine)
    await store.revoke_key(engine, revoked.id)
    auth = Authenticator(engine, None, clock=Clock())
    await auth.start()
    assert auth.open_mode
    for header in [None, "", "Bearer ", "Bearer sk-anything", "Bearer not-needed", "Basic xyz"]:
        assert await auth.authenticate(header) == Principal(kind="open")
    principal = await auth.authenticate(f"Bearer {token}")
    assert (principal.kind, principal.key_id, principal.customer) == ("key", row.id, "acme")
    bad = f"sk-keel-{row.id}-{'A' * 43}"
    assert (await _fail(auth, f"Bearer {bad}")).message == "invalid API key"
    unknown = tokens.generate().token
    assert (await _fail(auth, f"Bearer {unknown}")).message == "invalid API key"
    assert (await _fail(auth, f"Bearer {revoked_token}")).message == "this API key was revoked"


async def test_negative_cache_is_bounded_and_expires(
    engine: AsyncEngine, db_reads: list[str]
) -> None:
    clock = Clock()
    auth = Authenticator(engine, ADMIN_KEY, negative_max=3, negative_ttl=30, clock=clock)
    await auth.start()
    made_up = [tokens.generate().token for _ in range(5)]
    for token in made_up:
        await _fail(auth, f"Bearer {token}")
    assert len(db_reads) == 5
    assert len(auth._negative) == 3
    for token in made_up[-3:]:  # remembered: no new reads
        await _fail(auth, f"Bearer {token}")
    assert len(db_reads) == 5
    await _fail(auth, f"Bearer {made_up[0]}")  # evicted: read again
    assert len(db_reads) == 6
    clock.now += 31
    await _fail(auth, f"Bearer {made_up[-1]}")  # expired: read again
    assert len(db_reads) == 7


async def test_database_down_fails_closed(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = Authenticator(engine, ADMIN_KEY)
    await auth.start()

    async def down(engine: AsyncEngine, key_id: str) -> KeyRow | None:
        raise OperationalError("SELECT", {}, ConnectionRefusedError())

    monkeypatch.setattr(store, "get_key", down)
    token = tokens.generate().token
    err = await _fail(auth, f"Bearer {token}")
    assert err.status == 503
    assert err.message == "cannot check the API key: the database is unavailable"


def test_authorize_model() -> None:
    authorize_model(Principal(kind="admin"), "anything")
    authorize_model(Principal(kind="open"), "anything")
    limited = Principal(kind="key", key_id="k", allowed_models=("a", "b"))
    authorize_model(limited, "a")
    with pytest.raises(AuthError) as info:
        authorize_model(limited, "c")
    assert (info.value.status, info.value.message) == (
        403,
        "this API key may not use model 'c'; allowed: a, b",
    )
