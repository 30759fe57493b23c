"""A request's limits in one step each way, on both states: the reservation that takes the rate
limits along (`BudgetLedger.reserve(..., rates=)`) admits all or nothing, also across two
replicas racing, and the settlement that takes the output tokens along counts and charges."""

from __future__ import annotations

import asyncio

import pytest

from keel.limits import (
    BudgetExceeded,
    BudgetLedger,
    BudgetSpec,
    LimitError,
    LimitSpec,
    Notice,
    RateLimiter,
    RedisState,
    SharedState,
)
from tests.clock import Clock

BUDGET = BudgetSpec("key", "k1", 1.00, "total")


def remaining(headers: list[tuple[str, str]], kind: str) -> int:
    return int(dict(headers)[f"x-ratelimit-remaining-{kind}"])


async def test_a_budget_refusal_counts_on_no_rate_limit(state: SharedState, clock: Clock) -> None:
    limiter, ledger = RateLimiter(state, clock=clock), BudgetLedger(state, clock=clock)
    spec = [LimitSpec("key", "k1", rpm=5, tpm=1000)]
    admitted = await ledger.reserve([BUDGET], 0.60, rates=limiter.prepare(spec, tokens=100))
    assert admitted.decision is not None and admitted.decision.allowed
    assert remaining(admitted.decision.headers, "requests") == 4
    with pytest.raises(BudgetExceeded) as caught:
        await ledger.reserve([BUDGET], 0.60, rates=limiter.prepare(spec, tokens=100))
    assert caught.value.notices == [Notice("key", "k1", "total", "total", 100, 0.0, 1.00)]
    after = await limiter.check(spec, tokens=100)  # the refused request counted nothing
    assert (remaining(after.headers, "requests"), remaining(after.headers, "tokens")) == (3, 800)
    assert await ledger.spend(BUDGET) == (0.0, pytest.approx(0.60))


async def test_a_rate_limit_refusal_reserves_nothing(state: SharedState, clock: Clock) -> None:
    clock.now += 10  # 10 s into a minute
    limiter, ledger = RateLimiter(state, clock=clock), BudgetLedger(state, clock=clock)
    spec = [LimitSpec("key", "k1", rpm=1)]
    await ledger.reserve([BUDGET], 0.30, rates=limiter.prepare(spec, tokens=0))
    with pytest.raises(LimitError) as caught:
        await ledger.reserve([BUDGET], 0.30, rates=limiter.prepare(spec, tokens=0))
    error = caught.value
    assert (error.status, error.code, error.message) == (
        429,
        "rate_limit_exceeded",
        "rate limit of key 'k1' reached (1 requests per minute)",
    )
    assert (b"retry-after", b"110") in error.headers()  # 50 s to the minute's end, then 60
    assert (b"x-ratelimit-remaining-requests", b"0") in error.headers()
    assert await ledger.spend(BUDGET) == (0.0, pytest.approx(0.30))


async def test_the_rate_limits_alone_go_through_the_same_step(
    state: SharedState, clock: Clock
) -> None:
    limiter, ledger = RateLimiter(state, clock=clock), BudgetLedger(state, clock=clock)
    spec = [LimitSpec("customer", "acme", tpm=100)]
    reservation = await ledger.reserve([], 0.0, rates=limiter.prepare(spec, tokens=60))
    assert reservation.decision is not None
    assert remaining(reservation.decision.headers, "tokens") == 40
    with pytest.raises(LimitError):
        await ledger.reserve([], 0.0, rates=limiter.prepare(spec, tokens=41))


@pytest.mark.parametrize(
    ("amount", "admitted", "reserved"), [(0.08, 10, 0.80), (0.45, 2, 0.90)], ids=["rpm", "budget"]
)
async def test_forty_racing_requests_on_two_replicas_admit_what_both_limits_allow(
    states: tuple[SharedState, SharedState],
    clock: Clock,
    amount: float,
    admitted: int,
    reserved: float,
) -> None:
    limiters = [RateLimiter(s, clock=clock) for s in states]
    ledgers = [BudgetLedger(s, clock=clock) for s in states]
    spec = [LimitSpec("key", "k1", rpm=10)]
    barrier = asyncio.Barrier(40)

    async def one(i: int) -> bool:
        await barrier.wait()
        rates = limiters[i % 2].prepare(spec, tokens=0)
        try:
            await ledgers[i % 2].reserve([BUDGET], amount, rates=rates)
        except LimitError:  # a rate limit's 429 or BudgetExceeded
            return False
        return True

    assert sum(await asyncio.gather(*(one(i) for i in range(40)))) == admitted
    assert await ledgers[0].spend(BUDGET) == (0.0, pytest.approx(reserved))
    after = await limiters[1].check(spec, tokens=0)  # only the admitted counted
    assert (after.allowed, remaining(after.headers, "requests")) == (
        admitted < 10,
        max(0, 10 - admitted - 1),
    )


async def test_settling_counts_the_output_tokens_and_charges_in_one_step(
    state: SharedState, clock: Clock
) -> None:
    limiter, ledger = RateLimiter(state, clock=clock), BudgetLedger(state, clock=clock)
    spec = [LimitSpec("key", "k1", tpm=100), LimitSpec("model", "gpt-4o", rpm=10)]
    reservation = await ledger.reserve([BUDGET], 0.90, rates=limiter.prepare(spec, tokens=10))
    settlement = await ledger.settle(reservation, 0.85, tokens=limiter.tokens(spec, 30))
    assert (settlement.charged_usd, settlement.notices) == (
        0.85,
        [Notice("key", "k1", "total", "total", 80, 0.85, 1.00)],
    )
    assert await ledger.spend(BUDGET) == (pytest.approx(0.85), 0.0)
    assert not (await limiter.check(spec, tokens=61)).allowed  # 10 + 30 + 61 > 100
    assert (await limiter.check(spec, tokens=60)).allowed
    again = await ledger.settle(reservation, 0.85, tokens=limiter.tokens(spec, 5))
    assert (again.charged_usd, again.notices) == (0.0, [])  # settles once; the tokens count
    assert not (await limiter.check(spec, tokens=0)).allowed  # 10 + 30 + 60 + 5 > 100
    assert await ledger.spend(BUDGET) == (pytest.approx(0.85), 0.0)


async def test_unreachable_state_fails_the_whole_step_closed_or_open(
    dead_redis_url: str,
) -> None:
    state = RedisState(dead_redis_url)
    limiter = RateLimiter(state)
    spec = [LimitSpec("key", "k1", rpm=10)]
    with pytest.raises(LimitError) as caught:
        await BudgetLedger(state).reserve([BUDGET], 0.10, rates=limiter.prepare(spec, tokens=0))
    assert (caught.value.status, caught.value.code) == (503, "limits_unavailable")
    ledger = BudgetLedger(state, fail_open=True)
    reservation = await ledger.reserve([BUDGET], 0.10, rates=limiter.prepare(spec, tokens=0))
    assert reservation.decision is not None
    assert (reservation.checked, reservation.decision.allowed, ledger.failed_open) == (
        False,
        True,
        1,
    )
    settlement = await ledger.settle(reservation, 0.05, tokens=limiter.tokens(spec, 5))
    assert (settlement.recorded, ledger.lost_settles) == (False, 1)
    await state.close()
