"""Fixtures for the cache tests: a settable clock and `make_cache`, which builds a `Cache` on
the backend of the test's parameter (Redis: tests/conftest.py's `redis_url` and `prefix`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from keel.cache import (
    Cache,
    Embed,
    MemoryCache,
    MemorySemanticIndex,
    RedisCache,
    RedisSemanticIndex,
)
from tests.clock import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock(1_750_000_000.0)


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
