"""Fixtures for the limits tests: real Redis (`redis_url`), a key prefix per test, both states.

Redis is the server at KEEL_TEST_REDIS_URL (default: the local one). Outside CI a missing
server skips the Redis tests with the reason; in CI (CI=true) it fails them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from keel.limits import MemoryState, RedisState, SharedState

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
    # 2025-03-31 23:59:00 UTC: the start of a minute, one minute before a day and a month end.
    return Clock(1743465540.0)


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


@pytest.fixture(params=["memory", "redis"])
async def states(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SharedState, SharedState]]:
    """Two handles on one shared state: on Redis two clients (two pools, as two replicas
    would have); in memory the same object twice (one process has one)."""
    if request.param == "memory":
        state = MemoryState()
        yield state, state
        return
    url: str = request.getfixturevalue("redis_url")
    pre: str = request.getfixturevalue("prefix")
    a, b = RedisState(url, prefix=pre), RedisState(url, prefix=pre)
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture
def state(states: tuple[SharedState, SharedState]) -> SharedState:
    return states[0]


@pytest.fixture
def dead_redis_url() -> str:
    """A Redis URL on a loopback port that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"
