"""RedisState specifics: calls batched into one pipeline stay atomic and run exactly once, also
when Redis has forgotten the scripts (restart, SCRIPT FLUSH)."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from keel.limits import BudgetLedger, BudgetSpec, LimitSpec, RateLimiter, RedisState, lua


async def test_forgotten_scripts_are_reloaded_and_each_call_runs_once(
    redis_url: str, prefix: str
) -> None:
    state = RedisState(redis_url, prefix=prefix)
    limiter, ledger = RateLimiter(state), BudgetLedger(state)
    spec, budget = LimitSpec("key", "k1", rpm=10), BudgetSpec("key", "k1", 1.00, "total")
    await limiter.check([spec], tokens=0)
    admin = aioredis.Redis.from_url(redis_url)
    await admin.script_flush()
    await admin.script_load(lua.WINDOW_HIT)  # one script known, the other not: a mixed batch
    await admin.aclose()
    decision, _ = await asyncio.gather(
        limiter.check([spec], tokens=0), ledger.reserve([budget], 0.25)
    )
    assert ("x-ratelimit-remaining-requests", "8") in decision.headers
    assert await ledger.spend(budget) == (0.0, 0.25)
    await state.close()
