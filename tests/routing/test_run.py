"""The executor against real fake upstreams: retries, Retry-After, fallbacks, timeouts, deadline."""

from __future__ import annotations

import time

import pytest

from keel.gateway.models import Target
from keel.gateway.routing import RetryPolicy, RoutingError
from keel.providers.base import CallContext, ChatResult, Provider
from keel.providers.client import Timeouts, UpstreamClient
from tests.fakes import FakeOpenAI
from tests.routing.conftest import (
    HTTP_400,
    HTTP_429,
    FakeSleep,
    chain,
    chat,
    err,
    http_500,
    ok,
    router,
    stream,
)

SMART = [
    {
        "name": "smart",
        "targets": [
            {"provider": "a", "model": "gpt-4o"},
            {"provider": "b", "model": "gpt-4o-mini"},
        ],
    }
]
ONLY_A = [{"name": "solo", "targets": [{"provider": "a", "model": "gpt-4o"}]}]


async def test_priority_falls_back_on_500_after_retrying(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    sleep = FakeSleep()
    r = router(providers, SMART, sleep=sleep)
    fakes["a"].fail_next("http_500", 2)
    result, target, attempts = await r.run(r.plan("smart"), chat(client_session), deadline=10)
    assert (target.provider_name, target.model, result.served_model) == (
        "b",
        "gpt-4o-mini",
        "gpt-4o-mini",
    )
    assert chain(attempts) == [
        err("a", "gpt-4o", 502, http_500("a")),
        err("a", "gpt-4o", 502, http_500("a")),
        ok("b", "gpt-4o-mini"),
    ]
    assert (len(fakes["a"].requests), len(fakes["b"].requests)) == (2, 1)
    assert len(sleep.waits) == 1 and 0 <= sleep.waits[0] <= 0.2  # full jitter of the base
    assert all(a.latency_ms is not None and a.latency_ms >= 0 for a in attempts)


async def test_retry_after_longer_than_deadline_fails_fast_with_429(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    sleep = FakeSleep()
    r = router(providers, ONLY_A, sleep=sleep)
    fakes["a"].fail_next("http_429")  # Retry-After: 2
    started = time.perf_counter()
    with pytest.raises(RoutingError) as caught:
        await r.run(r.plan("solo"), chat(client_session), deadline=1.0)
    assert time.perf_counter() - started < 0.5
    assert sleep.waits == []
    e = caught.value
    assert (e.status, e.retry_after, e.type, e.code) == (
        429,
        2.0,
        "rate_limit_error",
        "rate_limit_exceeded",
    )
    assert e.message == (
        "the upstream asks to wait 2 s, longer than the request deadline allows; "
        "tried: a/gpt-4o (429)"
    )
    assert chain(e.attempts) == [err("a", "gpt-4o", 429, f"provider 'a' {HTTP_429}")]


async def test_retry_after_longer_than_deadline_moves_to_the_next_target(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    sleep = FakeSleep()
    r = router(providers, SMART, sleep=sleep)
    fakes["a"].fail_next("http_429")
    _, target, attempts = await r.run(r.plan("smart"), chat(client_session), deadline=1.0)
    assert target.provider_name == "b" and sleep.waits == []
    assert [a.outcome for a in attempts] == ["error", "ok"]


async def test_short_retry_after_is_honoured_on_the_same_target(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    sleep = FakeSleep()
    r = router(providers, SMART, sleep=sleep)
    fakes["a"].fail_next("http_429")
    _, target, attempts = await r.run(r.plan("smart"), chat(client_session), deadline=10)
    assert target.provider_name == "a"
    assert sleep.waits == [2.0]  # the upstream's Retry-After, not the backoff
    assert chain(attempts) == [
        err("a", "gpt-4o", 429, f"provider 'a' {HTTP_429}"),
        ok("a", "gpt-4o"),
    ]
    assert (len(fakes["a"].requests), len(fakes["b"].requests)) == (2, 0)


async def test_400_is_not_retried_and_does_not_fall_back(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    sleep = FakeSleep()
    r = router(providers, SMART, sleep=sleep)
    fakes["a"].fail_next("http_400")
    with pytest.raises(RoutingError) as caught:
        await r.run(r.plan("smart"), chat(client_session), deadline=10)
    assert caught.value.status == 400
    assert chain(caught.value.attempts) == [err("a", "gpt-4o", 400, f"provider 'a' {HTTP_400}")]
    assert (len(fakes["a"].requests), len(fakes["b"].requests), sleep.waits) == (1, 0, [])
    assert r.breakers.snapshot()[0]["failures"] == 0  # not the target's fault


async def test_hang_times_out_per_target_then_falls_back(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    models = [
        {
            "name": "smart",
            "targets": [
                {"provider": "a", "model": "gpt-4o", "timeout_s": 0.3},
                {"provider": "b", "model": "gpt-4o-mini"},
            ],
        }
    ]
    r = router(providers, models, sleep=FakeSleep())
    fakes["a"].fail_next("hang")
    started = time.perf_counter()
    _, target, attempts = await r.run(r.plan("smart"), chat(client_session), deadline=10)
    elapsed = time.perf_counter() - started
    assert target.provider_name == "b"
    assert 0.3 <= elapsed < 1.0
    assert chain(attempts) == [
        err("a", "gpt-4o", 504, "provider 'a' did not answer within 0.3 s"),
        ok("b", "gpt-4o-mini"),
    ]
    assert len(fakes["a"].requests) == 1  # a hung target is not asked again in the same request


async def test_deadline_cuts_the_run_short(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    models = [
        {
            "name": "smart",
            "targets": [
                {"provider": "a", "model": "gpt-4o", "timeout_s": 0.3},
                {"provider": "b", "model": "gpt-4o-mini", "timeout_s": 5},
            ],
        }
    ]
    r = router(providers, models)
    fakes["a"].fail_next("hang")
    fakes["b"].fail_next("hang")
    started = time.perf_counter()
    with pytest.raises(RoutingError) as caught:
        await r.run(r.plan("smart"), chat(client_session), deadline=0.6)
    elapsed = time.perf_counter() - started
    assert 0.6 <= elapsed < 0.9
    e = caught.value
    assert (e.status, e.type) == (504, "upstream_timeout")
    assert e.message == (
        "no target answered within the request deadline; tried: a/gpt-4o (504), b/gpt-4o-mini (504)"
    )
    assert chain(e.attempts) == [
        err("a", "gpt-4o", 504, "provider 'a' did not answer within 0.3 s"),
        err("b", "gpt-4o-mini", 504, "cut short by the request deadline"),
    ]
    # b was cut by the request's deadline, not its own timeout: no mark against it
    assert {s["provider"]: s["failures"] for s in r.breakers.snapshot()} == {"a": 1, "b": 0}


async def test_backoff_never_waits_past_the_deadline(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    policy = RetryPolicy(max_attempts=20, backoff_base_s=0.05, backoff_max_s=0.4)
    r = router(providers, ONLY_A, policy=policy)  # real sleeps
    fakes["a"].fail_next("http_500", 20)
    started = time.perf_counter()
    with pytest.raises(RoutingError) as caught:
        await r.run(r.plan("solo"), chat(client_session), deadline=0.5)
    assert time.perf_counter() - started < 0.8  # 0.5 s deadline + scheduling slack
    assert caught.value.status == 502
    assert 2 <= len(fakes["a"].requests) < 20
    assert caught.value.message.startswith(http_500("a") + "; tried: a/gpt-4o (502)")


async def test_every_target_failing_raises_the_last_error_listing_the_chain(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    r = router(providers, SMART, sleep=FakeSleep(), policy=RetryPolicy(max_attempts=1))
    fakes["a"].fail_next("http_500")
    fakes["b"].fail_next("http_429")
    with pytest.raises(RoutingError) as caught:
        await r.run(r.plan("smart"), chat(client_session), deadline=10)
    e = caught.value
    assert (e.status, e.retry_after) == (429, 2.0)
    assert e.message == f"provider 'b' {HTTP_429}; tried: a/gpt-4o (502), b/gpt-4o-mini (429)"


async def test_connection_refused_falls_back(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    await fakes["a"].stop()  # nothing listens on a's port any more
    r = router(providers, SMART, sleep=FakeSleep(), policy=RetryPolicy(max_attempts=1))
    _, target, attempts = await r.run(r.plan("smart"), chat(client_session), deadline=10)
    assert target.provider_name == "b"
    assert attempts[0].status == 502 and "could not reach provider 'a'" in str(attempts[0].error)


@pytest.mark.parametrize("fault", ["http_500", "stream_error_first"])
async def test_stream_failing_before_its_first_byte_falls_back(
    fault: str,
    providers: dict[str, Provider],
    fakes: dict[str, FakeOpenAI],
    client_session: UpstreamClient,
) -> None:
    r = router(providers, SMART, sleep=FakeSleep(), policy=RetryPolicy(max_attempts=1))
    fakes["a"].fail_next(fault)
    opened, target, attempts = await r.run(r.plan("smart"), stream(client_session), deadline=10)
    frames = [frame async for frame in opened]
    assert target.provider_name == "b" and frames[-1] == b"data: [DONE]\n\n"
    assert opened.output_text == "hello from routing"
    assert [(a.provider, a.outcome, a.status) for a in attempts] == [
        ("a", "error", 502),
        ("b", "ok", None),
    ]


async def test_adapter_timeout_at_the_deadline_counts_as_the_deadline(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    async def attempt(target: Target, timeout_s: float) -> ChatResult:
        # the adapter's own total timeout set a little short of the time left
        body = {"model": target.model, "messages": [{"role": "user", "content": "hi"}]}
        ctx = CallContext(client_session, Timeouts(total=timeout_s - 0.01), "req-routing")
        return await target.provider.chat(body, ctx)

    r = router(providers, ONLY_A)
    fakes["a"].fail_next("hang")
    with pytest.raises(RoutingError) as caught:
        await r.run(r.plan("solo"), attempt, deadline=0.3)
    assert caught.value.status == 504
    assert caught.value.message.startswith("no target answered within the request deadline")
    assert r.breakers.snapshot()[0]["failures"] == 0
