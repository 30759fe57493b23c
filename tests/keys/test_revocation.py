"""Revocation across replicas: two Authenticators sharing one database and one real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from keel.keys import store
from keel.keys.auth import Authenticator, AuthError
from keel.keys.revocation import RevocationFeed

ADMIN_KEY = "admin-key-0123456789"


async def _replica(engine: AsyncEngine, url: str, pre: str) -> tuple[Authenticator, RevocationFeed]:
    auth = Authenticator(engine, ADMIN_KEY)
    await auth.start()
    feed = RevocationFeed(url, auth, prefix=pre)
    assert await feed.start()
    return auth, feed


@pytest.fixture
async def replicas(
    engine: AsyncEngine,
    redis_url: str,
    prefix: str,
) -> AsyncIterator[tuple[tuple[Authenticator, RevocationFeed], ...]]:
    a = await _replica(engine, redis_url, prefix)
    b = await _replica(engine, redis_url, prefix)
    yield a, b
    await a[1].stop()
    await b[1].stop()


async def _rejected_within(auth: Authenticator, token: str, seconds: float) -> float:
    """Seconds until `auth` refuses the key as revoked; fails after `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            await auth.authenticate(f"Bearer {token}")
        except AuthError as exc:
            assert exc.message == "this API key was revoked"
            return time.monotonic() - started
        await asyncio.sleep(0.005)
    raise AssertionError(f"the key still worked after {seconds} s")


async def test_a_revocation_reaches_the_other_replica_at_once(
    engine: AsyncEngine,
    replicas: tuple[tuple[Authenticator, RevocationFeed], ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (auth_a, feed_a), (auth_b, _) = replicas
    row, token = await store.insert_key(engine, name="app", expires_at=time.time() + 3600)
    await auth_a.refresh()
    await auth_b.refresh()
    assert (await auth_b.authenticate(f"Bearer {token}")).key_id == row.id  # cached on B

    async def no_refresh(*args: object, **kwargs: object) -> None:
        raise AssertionError("B must not need a refresh")

    monkeypatch.setattr(auth_b, "refresh", no_refresh)
    await store.revoke_key(engine, row.id)
    assert await feed_a.publish(row.id, row.expires_at)
    assert await _rejected_within(auth_b, token, 1.0) < 1.0
    assert auth_b.is_revoked(row.id)
    with pytest.raises(AuthError, match="revoked"):
        await auth_a.authenticate(f"Bearer {token}")


async def test_a_stale_read_cannot_bring_a_revoked_key_back(
    engine: AsyncEngine,
    replicas: tuple[tuple[Authenticator, RevocationFeed], ...],
) -> None:
    (_, feed_a), (auth_b, _) = replicas
    row, token = await store.insert_key(engine, name="app")
    # published before B's database shows it (say a lagging read replica): B still refuses
    await feed_a.publish(row.id)
    await _rejected_within(auth_b, token, 1.0)
    await auth_b.refresh()  # the database still says active
    with pytest.raises(AuthError, match="revoked"):
        await auth_b.authenticate(f"Bearer {token}")


async def test_a_replica_starting_later_reads_the_revoked_set(
    engine: AsyncEngine,
    replicas: tuple[tuple[Authenticator, RevocationFeed], ...],
    redis_url: str,
    prefix: str,
) -> None:
    (_, feed_a), _ = replicas
    forever, _ = await store.insert_key(engine, name="forever")
    expired, _ = await store.insert_key(engine, name="short", expires_at=time.time() + 3600)
    await feed_a.publish(forever.id)
    await feed_a.publish(expired.id, time.time() - 1)  # already expired: not worth keeping
    auth_c, feed_c = await _replica(engine, redis_url, prefix)
    try:
        assert auth_c.is_revoked(forever.id)
        assert not auth_c.is_revoked(expired.id)
    finally:
        await feed_c.stop()
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    members = await client.zrange(f"{prefix}revoked", 0, -1, withscores=True)
    await client.aclose()
    assert members == [(forever.id, float("inf"))]


async def test_a_limit_change_reaches_the_other_replica(
    engine: AsyncEngine,
    replicas: tuple[tuple[Authenticator, RevocationFeed], ...],
) -> None:
    (_, feed_a), (auth_b, _) = replicas
    row, token = await store.insert_key(engine, name="app", rpm=10)
    await auth_b.refresh()
    assert (await auth_b.authenticate(f"Bearer {token}")).rpm == 10
    await store.update_limits(engine, row.id, {"rpm": 20})
    assert await feed_a.publish_change(row.id)
    deadline = time.monotonic() + 1.0
    while (await auth_b.authenticate(f"Bearer {token}")).rpm != 20:
        assert time.monotonic() < deadline, "B did not see the new limit within 1 s"
        await asyncio.sleep(0.005)


async def test_redis_down(engine: AsyncEngine, dead_redis_url: str) -> None:
    """Publishing never raises; the revocation holds here; cached keys keep working."""
    row, token = await store.insert_key(engine, name="app")
    other, other_token = await store.insert_key(engine, name="other")
    auth = Authenticator(engine, ADMIN_KEY)
    await auth.start()
    feed = RevocationFeed(dead_redis_url, auth, timeout=0.2)
    try:
        started = time.monotonic()
        assert await feed.start() is False
        assert not feed.subscribed
        await store.revoke_key(engine, row.id)
        assert await feed.publish(row.id) is False
        assert time.monotonic() - started < 3
        assert feed.failed_publishes == 1
        with pytest.raises(AuthError, match="revoked"):
            await auth.authenticate(f"Bearer {token}")
        assert (await auth.authenticate(f"Bearer {other_token}")).key_id == other.id
        assert await feed.publish_change(other.id) is False
    finally:
        await feed.stop()


async def test_resubscribes_after_losing_redis(
    engine: AsyncEngine,
    replicas: tuple[tuple[Authenticator, RevocationFeed], ...],
    redis_url: str,
) -> None:
    """A revocation published while B is disconnected reaches B from the set on reconnect."""
    (_, feed_a), (auth_b, feed_b) = replicas
    row, token = await store.insert_key(engine, name="app")
    await auth_b.refresh()
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    for entry in await client.client_list():
        if entry.get("name") == "keel-revocations":
            await client.client_kill_filter(_id=entry["id"])
    await client.aclose()
    deadline = time.monotonic() + 5
    while feed_b.subscribed:
        assert time.monotonic() < deadline, "B did not notice the lost connection"
        await asyncio.sleep(0.01)
    await store.revoke_key(engine, row.id)
    await feed_a.publish(row.id)  # B is not listening now
    await _rejected_within(auth_b, token, 5.0)
    assert feed_b.subscribed
