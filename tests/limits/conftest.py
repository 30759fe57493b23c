"""Fixtures for the limits tests: a settable clock and both shared states (in memory, and on
the real Redis of tests/conftest.py's `redis_url`, under the test's own key `prefix`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keel.limits import MemoryState, RedisState, SharedState
from tests.clock import Clock


@pytest.fixture
def clock() -> Clock:
    # 2025-03-31 23:59:00 UTC: the start of a minute, one minute before a day and a month end.
    return Clock(1743465540.0)


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
