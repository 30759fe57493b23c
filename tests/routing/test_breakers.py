"""Circuit breakers: the state machine on a fake clock, then against real fake upstreams."""

from __future__ import annotations

import asyncio
import time

import pytest

from keel.gateway.breakers import BreakerBoard, BreakerState
from keel.gateway.routing import RetryPolicy, RoutingError
from keel.metrics import Metrics
from keel.providers.base import Provider
from keel.providers.client import UpstreamClient
from tests.fakes import FakeOpenAI
from tests.routing.conftest import FakeClock, FakeSleep, chain, chat, ok, router, skipped

KEY = ("a", "gpt-4o")


def board(clock: FakeClock, **kw: float) -> BreakerBoard:
    return BreakerBoard(
        failure_threshold=int(kw.get("threshold", 3)),
        window_s=kw.get("window", 30.0),
        cooldown_s=kw.get("cooldown", 30.0),
        clock=clock,
        wall=lambda: clock.now + 1_700_000_000.0,
    )


def test_opens_after_threshold_failures_within_the_window() -> None:
    clock = FakeClock()
    b = board(clock)
    b.failure(KEY)
    clock.now += 31  # the first failure leaves the window
    b.failure(KEY)
    b.failure(KEY)
    assert b.state(KEY) is BreakerState.CLOSED and b.allow(KEY)
    b.failure(KEY)
    assert b.state(KEY) is BreakerState.OPEN and not b.allow(KEY)


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = FakeClock()
    b = board(clock, threshold=1)
    b.failure(KEY)
    clock.now += 29.9
    assert not b.allow(KEY)
    clock.now += 0.1
    assert b.state(KEY) is BreakerState.HALF_OPEN
    assert b.allow(KEY)  # the probe
    assert not b.allow(KEY)  # everyone else skips while it runs
    b.release(KEY)  # the probe got a 400: no verdict, the slot frees
    assert b.allow(KEY)
    b.success(KEY)
    assert b.state(KEY) is BreakerState.CLOSED
    assert b.allow(KEY) and b.allow(KEY)


def test_failed_probe_opens_for_another_cooldown() -> None:
    clock = FakeClock()
    b = board(clock, threshold=1, cooldown=10)
    b.failure(KEY)
    clock.now += 10
    assert b.allow(KEY)
    b.failure(KEY)
    assert b.state(KEY) is BreakerState.OPEN
    assert b.reopens_in(KEY) == 10
    clock.now += 9
    assert not b.allow(KEY)
    clock.now += 1
    assert b.allow(KEY)


def test_a_probe_that_never_reports_frees_its_slot_after_a_cooldown() -> None:
    clock = FakeClock()
    b = board(clock, threshold=1, cooldown=10)
    b.failure(KEY)
    clock.now += 10
    assert b.allow(KEY) and not b.allow(KEY)
    clock.now += 10
    assert b.allow(KEY)


def test_snapshot_and_gauge() -> None:
    clock = FakeClock(1000.0)
    b = board(clock, threshold=2, cooldown=30)
    b.track(("b", "gpt-4o-mini"))
    b.failure(KEY)
    b.failure(KEY)
    b.failure(("c", "x"))
    assert b.snapshot() == [
        {
            "provider": "b",
            "model": "gpt-4o-mini",
            "state": "closed",
            "failures": 0,
            "opened_at": None,
            "next_probe_at": None,
        },
        {
            "provider": "a",
            "model": "gpt-4o",
            "state": "open",
            "failures": 2,
            "opened_at": "2023-11-14T22:30:00Z",
            "next_probe_at": "2023-11-14T22:30:30Z",
        },
        {
            "provider": "c",
            "model": "x",
            "state": "closed",
            "failures": 1,
            "opened_at": None,
            "next_probe_at": None,
        },
    ]
    clock.now += 30
    assert list(b.gauge()) == [("b", "gpt-4o-mini", 0.0), ("a", "gpt-4o", 1.0), ("c", "x", 0.0)]
    metrics = Metrics()
    metrics.bind_breakers(b.gauge)
    text = metrics.render().decode()
    assert 'keel_circuit_state{model="gpt-4o",provider="a"} 1.0' in text


def test_the_board_is_bounded_and_keeps_tracked_targets() -> None:
    clock = FakeClock()
    b = BreakerBoard(failure_threshold=5, clock=clock, max_breakers=3)
    b.track(KEY)
    for i in range(10):
        b.failure(("x", f"m{i}"))
    keys = [(s["provider"], s["model"]) for s in b.snapshot()]
    assert len(keys) == 3 and keys[0] == KEY and ("x", "m9") in keys


SMART = [
    {
        "name": "smart",
        "targets": [
            {"provider": "a", "model": "gpt-4o", "timeout_s": 0.4},
            {"provider": "b", "model": "gpt-4o-mini"},
        ],
    }
]


async def test_open_breaker_sends_requests_straight_to_the_fallback(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    clock = FakeClock()
    breakers = BreakerBoard(failure_threshold=2, window_s=30, cooldown_s=30, clock=clock)
    r = router(providers, SMART, breakers=breakers, sleep=FakeSleep())
    attempt = chat(client_session)
    fakes["a"].fail_next("hang", 2)
    for _ in range(2):  # each costs a's whole timeout before b answers
        started = time.perf_counter()
        _, target, _ = await r.run(r.plan("smart"), attempt, deadline=10)
        assert target.provider_name == "b" and time.perf_counter() - started >= 0.4
    assert breakers.state(("a", "gpt-4o")) is BreakerState.OPEN
    asked_a = len(fakes["a"].requests)

    started = time.perf_counter()
    _, target, attempts = await r.run(r.plan("smart"), attempt, deadline=10)
    elapsed = time.perf_counter() - started
    assert target.provider_name == "b"
    assert chain(attempts) == [skipped("a", "gpt-4o"), ok("b", "gpt-4o-mini")]
    assert len(fakes["a"].requests) == asked_a  # the dead target was not touched
    assert elapsed < 0.25  # about b's own latency, well under a's 0.4 s timeout


async def test_half_open_probe_is_single_and_closes_on_success(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    clock = FakeClock()
    breakers = BreakerBoard(failure_threshold=1, window_s=30, cooldown_s=30, clock=clock)
    policy = RetryPolicy(max_attempts=1)
    r = router(providers, SMART, breakers=breakers, sleep=FakeSleep(), policy=policy)
    attempt = chat(client_session)
    fakes["a"].fail_next("http_500")
    await r.run(r.plan("smart"), attempt, deadline=10)
    assert breakers.state(("a", "gpt-4o")) is BreakerState.OPEN

    clock.now += 30  # half-open: the next request probes a; a concurrent one must not
    fakes["a"].fail_next("hang")
    probe = asyncio.create_task(r.run(r.plan("smart"), attempt, deadline=10))
    await asyncio.sleep(0.1)
    _, target, attempts = await r.run(r.plan("smart"), attempt, deadline=10)
    assert target.provider_name == "b" and attempts[0] == skipped("a", "gpt-4o")
    _, target, attempts = await probe  # the probe timed out (0.4 s): open again
    assert target.provider_name == "b" and attempts[0].status == 504
    assert breakers.state(("a", "gpt-4o")) is BreakerState.OPEN

    clock.now += 30  # the next probe succeeds and closes the breaker
    _, target, attempts = await r.run(r.plan("smart"), attempt, deadline=10)
    assert chain(attempts) == [ok("a", "gpt-4o")]
    assert breakers.state(("a", "gpt-4o")) is BreakerState.CLOSED
    assert len(fakes["a"].requests) == 3


async def test_all_targets_open_answers_503_with_retry_after(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    clock = FakeClock()
    breakers = BreakerBoard(failure_threshold=1, cooldown_s=30, clock=clock)
    r = router(providers, SMART, breakers=breakers, policy=RetryPolicy(max_attempts=1))
    breakers.failure(("a", "gpt-4o"))
    clock.now += 10
    breakers.failure(("b", "gpt-4o-mini"))
    with pytest.raises(RoutingError) as caught:
        await r.run(r.plan("smart"), chat(client_session), deadline=10)
    e = caught.value
    assert (e.status, e.code, e.retry_after) == (503, "circuit_open", 20.0)
    assert e.message == (
        "every target has its circuit breaker open; "
        "tried: a/gpt-4o (circuit open), b/gpt-4o-mini (circuit open)"
    )
    assert fakes["a"].requests == [] and fakes["b"].requests == []
