"""Rate limits on both states: exact admission under concurrency, tokens, all-or-nothing,
headers, the sliding window over time, and failing closed or open without Redis."""

from __future__ import annotations

import asyncio
import time

import pytest

from keel.limits import LimitError, LimitSpec, RateLimiter, RedisState, SharedState
from tests.clock import Clock


async def test_forty_concurrent_requests_admit_exactly_ten_across_two_replicas(
    states: tuple[SharedState, SharedState], clock: Clock
) -> None:
    clock.now += 10  # 10 s into a minute
    limiters = [RateLimiter(s, clock=clock) for s in states]
    spec = [LimitSpec("key", "k1", rpm=10)]
    barrier = asyncio.Barrier(40)

    async def one(i: int) -> tuple[bool, float | None]:
        await barrier.wait()
        decision = await limiters[i % 2].check(spec, tokens=0)
        return decision.allowed, decision.retry_after

    results = await asyncio.gather(*(one(i) for i in range(40)))
    assert sum(allowed for allowed, _ in results) == 10
    # Refused: 50 s to the minute's end, then 6 s more until the minute, weighted as the
    # previous one, counts for 9 and one more request fits.
    assert [retry for allowed, retry in results if not allowed] == [pytest.approx(56.0)] * 30


async def test_real_clock_admits_exactly_ten(state: SharedState) -> None:
    limiter = RateLimiter(state)
    spec = [LimitSpec("key", "k-real", rpm=10)]
    decisions = await asyncio.gather(*(limiter.check(spec, tokens=0) for _ in range(40)))
    assert sum(d.allowed for d in decisions) == 10
    refused = [d for d in decisions if not d.allowed]
    assert all(d.retry_after is not None and d.retry_after > 0 for d in refused)
    error = refused[0].error()
    assert error.status == 429
    assert error.code == "rate_limit_exceeded"
    assert any(name == b"retry-after" and int(value) > 0 for name, value in error.headers())


async def test_tokens_per_minute_count_prompt_then_completion(
    state: SharedState, clock: Clock
) -> None:
    limiter = RateLimiter(state, clock=clock)
    spec = [LimitSpec("customer", "acme", tpm=100)]
    assert (await limiter.check(spec, tokens=60)).allowed
    refused = await limiter.check(spec, tokens=50)
    assert (refused.allowed, refused.reason) == (
        False,
        "rate limit of customer 'acme' reached (100 tokens per minute)",
    )
    assert (await limiter.check(spec, tokens=40)).allowed  # the refusal consumed nothing
    await limiter.add_tokens(spec, 30)  # completion tokens push the minute over its limit
    assert not (await limiter.check(spec, tokens=1)).allowed


async def test_a_request_larger_than_the_limit_is_refused_without_retry_after(
    state: SharedState, clock: Clock
) -> None:
    decision = await RateLimiter(state, clock=clock).check(
        [LimitSpec("key", "k1", tpm=100)], tokens=101
    )
    assert (decision.allowed, decision.retry_after, decision.reason) == (
        False,
        None,
        "request of 101 tokens exceeds the limit of key 'k1' (100 tokens per minute)",
    )


async def test_a_refusal_by_one_limit_consumes_none_of_the_others(
    state: SharedState, clock: Clock
) -> None:
    limiter = RateLimiter(state, clock=clock)
    key, model = LimitSpec("key", "k1", rpm=5), LimitSpec("model", "gpt-4o", rpm=2)
    results = [(await limiter.check([key, model], tokens=0)).allowed for _ in range(3)]
    assert results == [True, True, False]
    alone = await limiter.check([key], tokens=0)
    assert ("x-ratelimit-remaining-requests", "2") in alone.headers  # 5 - (2 + this one)


async def test_headers_name_the_tightest_limit_of_each_kind(
    state: SharedState, clock: Clock
) -> None:
    clock.now += 30  # half the previous minute still counts
    limiter = RateLimiter(state, clock=clock)
    specs = [
        LimitSpec("key", "k1", rpm=10, tpm=1000),
        LimitSpec("model", "gpt-4o", rpm=100, tpm=500),
    ]
    decision = await limiter.check(specs, tokens=100)
    assert decision == type(decision)(
        allowed=True,
        retry_after=None,
        headers=[
            ("x-ratelimit-limit-requests", "10"),
            ("x-ratelimit-remaining-requests", "9"),
            ("x-ratelimit-reset-requests", "1m30s"),
            ("x-ratelimit-limit-tokens", "500"),
            ("x-ratelimit-remaining-tokens", "400"),
            ("x-ratelimit-reset-tokens", "1m30s"),
        ],
    )


async def test_the_window_slides_open_after_retry_after(state: SharedState, clock: Clock) -> None:
    limiter = RateLimiter(state, clock=clock)
    spec = [LimitSpec("key", "k1", rpm=2)]
    assert [(await limiter.check(spec, tokens=0)).allowed for _ in range(3)] == [True, True, False]
    refused = await limiter.check(spec, tokens=0)
    assert refused.retry_after == pytest.approx(90.0)
    start = clock.now
    clock.now = start + 89
    assert not (await limiter.check(spec, tokens=0)).allowed
    clock.now = start + 90
    assert (await limiter.check(spec, tokens=0)).allowed
    clock.now = start + 240  # two quiet minutes later everything has slid out
    fresh = await limiter.check(spec, tokens=0)
    assert ("x-ratelimit-remaining-requests", "1") in fresh.headers


async def test_fails_closed_by_default_when_redis_is_unreachable(dead_redis_url: str) -> None:
    state = RedisState(dead_redis_url)
    limiter = RateLimiter(state)
    started = time.monotonic()
    with pytest.raises(LimitError) as caught:
        await limiter.check([LimitSpec("key", "k1", rpm=10)], tokens=0)
    assert time.monotonic() - started < 2
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        503,
        "limits_unavailable",
        "cannot check limits: shared state unreachable",
    )
    await limiter.add_tokens([LimitSpec("key", "k1", tpm=10)], 5)  # never raises after a call
    assert limiter.lost_updates == 1
    await state.close()


async def test_fails_open_when_configured(dead_redis_url: str) -> None:
    state = RedisState(dead_redis_url)
    limiter = RateLimiter(state, fail_open=True)
    decision = await limiter.check([LimitSpec("key", "k1", rpm=10)], tokens=0)
    assert (decision.allowed, decision.headers, limiter.failed_open) == (True, [], 1)
    await state.close()
