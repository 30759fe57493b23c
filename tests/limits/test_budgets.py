"""Budgets on both states: the concurrent race (one state, two clients, two processes),
settling, the hierarchy, periods, expired reservations, notices, and Redis being down."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from keel.limits import (
    BudgetExceeded,
    BudgetLedger,
    BudgetSpec,
    LimitError,
    Notice,
    RedisState,
    SharedState,
    worst_case_cost,
)
from tests.clock import Clock

ROOT = Path(__file__).resolve().parents[2]
ACME = BudgetSpec("customer", "acme", 1.00, "month")


@pytest.mark.parametrize("clients", [1, 2])
async def test_twenty_concurrent_reservations_admit_exactly_two(
    states: tuple[SharedState, SharedState], clock: Clock, clients: int
) -> None:
    ledgers = [BudgetLedger(s, clock=clock) for s in states[:clients]]
    barrier = asyncio.Barrier(20)

    async def one(i: int) -> object:
        await barrier.wait()
        try:
            return await ledgers[i % clients].reserve([ACME], 0.45)  # worst case: 2 fit in 1.00
        except BudgetExceeded as exc:
            return exc

    results = await asyncio.gather(*(one(i) for i in range(20)))
    admitted = [r for r in results if not isinstance(r, BudgetExceeded)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert (len(admitted), len(refused)) == (2, 18)
    assert {(e.status, e.code) for e in refused} == {(429, "budget_exceeded")}
    for reservation in admitted:
        await ledgers[0].settle(reservation, 0.40)  # type: ignore[arg-type]
    spent, reserved = await ledgers[-1].spend(ACME)
    assert (spent, reserved) == (pytest.approx(0.80), 0.0)
    assert spent <= ACME.limit_usd


def test_two_processes_reserving_concurrently_admit_exactly_two(
    redis_url: str, prefix: str
) -> None:
    args = [redis_url, prefix, "10", "1.00", "0.45"]
    cmd = [sys.executable, "-m", "tests.limits.reserve_worker", *args]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=30) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum(int(out.strip()) for out, _ in outputs) == 2


async def test_settle_replaces_the_reservation_with_the_actual_cost(
    state: SharedState, clock: Clock
) -> None:
    ledger = BudgetLedger(state, clock=clock)
    first = await ledger.reserve([ACME], 0.45)
    assert await ledger.spend(ACME) == (0.0, pytest.approx(0.45))
    assert (await ledger.settle(first, 0.10)).charged_usd == 0.10
    assert await ledger.spend(ACME) == (pytest.approx(0.10), 0.0)
    assert (await ledger.settle(first, 0.10)).charged_usd == 0.0  # settles once
    unknown = await ledger.reserve([ACME], 0.30)
    assert (await ledger.settle(unknown, None)).charged_usd == 0.30  # unpriced: the worst case
    assert await ledger.spend(ACME) == (pytest.approx(0.40), 0.0)
    released = await ledger.reserve([ACME], 0.30)
    await ledger.release(released)
    assert await ledger.spend(ACME) == (pytest.approx(0.40), 0.0)


async def test_the_whole_chain_must_fit_and_a_refusal_holds_nothing(
    state: SharedState, clock: Clock
) -> None:
    ledger = BudgetLedger(state, clock=clock)
    project = BudgetSpec("project", "p1", 10.00, "month")
    key = BudgetSpec("key", "k1", 1.00, "day")
    chain = [project, key, ACME]
    await ledger.reserve(chain, 0.60)
    with pytest.raises(BudgetExceeded) as caught:
        await ledger.reserve(chain, 0.60)
    assert (caught.value.message, caught.value.spec, caught.value.retry_after) == (
        "budget of key 'k1' (1.00 USD per day) is used up: "
        "0.40 USD left, this request may cost up to 0.60 USD",
        key,
        60.0,  # the clock is at 23:59:00 UTC
    )
    assert await ledger.spend(project) == (0.0, pytest.approx(0.60))
    assert await ledger.spend(ACME) == (0.0, pytest.approx(0.60))


async def test_periods_reset_at_utc_boundaries_and_total_never(
    state: SharedState, clock: Clock
) -> None:
    ledger = BudgetLedger(state, clock=clock)
    day, total = BudgetSpec("key", "k1", 1.00, "day"), BudgetSpec("key", "k2", 1.00, "total")
    for spec in (day, total):
        await ledger.settle(await ledger.reserve([spec], 0.90), 0.90)
    with pytest.raises(BudgetExceeded) as caught:
        await ledger.reserve([total], 0.20)
    assert caught.value.retry_after is None
    clock.now += 60  # 2025-04-01 00:00:00 UTC
    assert await ledger.spend(day) == (0.0, 0.0)
    assert await ledger.spend(total) == (pytest.approx(0.90), 0.0)
    await ledger.reserve([day], 0.90)


async def test_expired_reservations_are_released(state: SharedState, clock: Clock) -> None:
    ledger = BudgetLedger(state, clock=clock, reservation_ttl=60)
    spec = BudgetSpec("key", "k1", 1.00, "total")
    crashed = [await ledger.reserve([spec], 0.45) for _ in range(2)]  # never settled
    with pytest.raises(BudgetExceeded):
        await ledger.reserve([spec], 0.45)
    clock.now += 61
    assert await ledger.spend(spec) == (0.0, 0.0)
    await ledger.reserve([spec], 0.45)
    await ledger.settle(crashed[0], 0.20)  # a late settle still charges what was spent
    assert await ledger.spend(spec) == (pytest.approx(0.20), pytest.approx(0.45))


async def test_notices_at_80_and_100_percent_come_once_per_period(
    state: SharedState, clock: Clock
) -> None:
    ledger = BudgetLedger(state, clock=clock)
    spec = BudgetSpec("key", "k1", 1.00, "total")

    async def spend(reserve: float, actual: float) -> list[Notice]:
        return (await ledger.settle(await ledger.reserve([spec], reserve), actual)).notices

    assert await spend(0.50, 0.50) == []
    assert await spend(0.40, 0.35) == [Notice("key", "k1", "total", "total", 80, 0.85, 1.00)]
    assert await spend(0.10, 0.10) == []
    assert await spend(0.05, 0.05) == [Notice("key", "k1", "total", "total", 100, 1.00, 1.00)]
    with pytest.raises(BudgetExceeded) as caught:
        await ledger.reserve([spec], 0.01)
    assert caught.value.notices == []  # the 100% notice was already given


async def test_the_first_refusal_gives_the_100_percent_notice(
    state: SharedState, clock: Clock
) -> None:
    ledger = BudgetLedger(state, clock=clock)
    await ledger.reserve([ACME], 0.60)
    refusals = []
    for _ in range(2):
        with pytest.raises(BudgetExceeded) as caught:
            await ledger.reserve([ACME], 0.60)
        refusals.append(caught.value.notices)
    assert refusals == [[Notice("customer", "acme", "month", "m2025-03", 100, 0.0, 1.00)], []]


async def test_budgets_fail_closed_by_default_when_redis_is_unreachable(
    dead_redis_url: str,
) -> None:
    state = RedisState(dead_redis_url)
    ledger = BudgetLedger(state)
    with pytest.raises(LimitError) as caught:
        await ledger.reserve([ACME], 0.10)
    assert (caught.value.status, caught.value.code) == (503, "limits_unavailable")
    with pytest.raises(LimitError):
        await ledger.spend(ACME)
    await state.close()


async def test_budgets_fail_open_when_configured(dead_redis_url: str) -> None:
    state = RedisState(dead_redis_url)
    ledger = BudgetLedger(state, fail_open=True)
    reservation = await ledger.reserve([ACME], 0.10)
    assert (reservation.checked, ledger.failed_open) == (False, 1)
    settlement = await ledger.settle(reservation, 0.05)  # never raises after a call
    assert (settlement.recorded, ledger.lost_settles) == (False, 1)
    await state.close()


def test_worst_case_cost_prices_the_output_cap() -> None:
    def price(prompt: int, output: int) -> float | None:
        return prompt * 1e-6 + output * 4e-6

    assert worst_case_cost(price, 1000, 500) == pytest.approx(0.003)
    assert worst_case_cost(lambda p, o: None, 1000, 500) == 0.0
    assert worst_case_cost(lambda p, o: None, 1000, 500, unknown_usd=0.05) == 0.05
