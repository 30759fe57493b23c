"""Fixtures for the cache tests: a settable clock, real Redis (`redis_url`), a key prefix per
test, and `make_cache`, which builds a `Cache` on the backend of the test's parameter.

Redis is the server at KEEL_TEST_REDIS_URL (default: the local one). Outside CI a missing
server skips the Redis tests with the reason; in CI (CI=true) it fails them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest
import redis

from keel.cache import (
    Cache,
    Embed,
    MemoryCache,
    MemorySemanticIndex,
    RedisCache,
    RedisSemanticIndex,
)

REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


class Clock:
    """A settable clock: `clock()` returns `clock.now`."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(1_750_000_000.0)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis, checked once per session."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1).ping()
    except redis.RedisError as exc:
        if IN_CI:
            pytest.fail(f"Redis at {REDIS_URL} is required in CI: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    value = f"keeltest:{uuid.uuid4().hex}:"
    yield value
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{value}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def dead_redis_url() -> str:
    """A Redis URL on a loopback port that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def vectors(table: dict[str, Sequence[float]]) -> tuple[Embed, list[str]]:
    """An `embed` answering from `table` (unknown text: a fixed far-away vector), and the list
    of texts it was asked for."""
    asked: list[str] = []

    async def embed(text: str) -> list[float]:
        asked.append(text)
        return list(table.get(text, (0.0, 0.0, 0.0, 1.0)))

    return embed, asked


MakeCache = Callable[..., Cache]


@pytest.fixture(params=["memory", "redis"])
async def make_cache(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[MakeCache]:
    """Build caches on this test's backend; memory ones run on `clock`, Redis ones on real
    time (Redis expires keys by its own clock). All are closed afterwards."""
    made: list[Cache] = []
    kind = request.param

    def make(
        *,
        ttl_s: int = 60,
        max_entry_bytes: int = 1 << 20,
        embed: Embed | None = None,
        threshold: float = 0.95,
        **options: Any,
    ) -> Cache:
        if kind == "memory":
            backend: Any = MemoryCache(1000, 1 << 24, clock=clock)
            index: Any = MemorySemanticIndex(100, 100, clock=clock)
            cache = Cache(
                backend,
                ttl_s=ttl_s,
                max_entry_bytes=max_entry_bytes,
                index=index,
                embed=embed,
                threshold=threshold,
                clock=clock,
                **options,
            )
        else:
            url: str = request.getfixturevalue("redis_url")
            pre: str = request.getfixturevalue("prefix")
            backend = RedisCache(url, prefix=pre)
            index = RedisSemanticIndex(backend.redis, prefix=pre, max_per_scope=100)
            cache = Cache(
                backend,
                ttl_s=ttl_s,
                max_entry_bytes=max_entry_bytes,
                index=index,
                embed=embed,
                threshold=threshold,
                **options,
            )
        made.append(cache)
        return cache

    make.kind = kind  # type: ignore[attr-defined]
    yield make
    for cache in made:
        await cache.close()
