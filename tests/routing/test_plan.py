"""Plans: strategies order a model's targets, fallback models' plans follow."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from keel.config import load_settings
from keel.costs.pricing import Pricer
from keel.gateway.errors import GatewayError
from keel.gateway.models import Target
from keel.gateway.routing import LatencyTracker, RetryPolicy, Router
from keel.providers.base import Provider
from keel.providers.client import UpstreamClient
from tests.fakes import FakeOpenAI
from tests.routing.conftest import FakeSleep, chat, model_router, router


def keys(plan: list[Target]) -> list[tuple[str, str]]:
    return [t.key for t in plan]


def one(strategy: str, *targets: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "m", "strategy": strategy, "targets": list(targets)}]


def test_priority_keeps_the_listed_order(providers: dict[str, Provider]) -> None:
    r = router(providers, one("priority", *({"provider": p, "model": "x"} for p in "cba")))
    assert keys(r.plan("m")) == [("c", "x"), ("b", "x"), ("a", "x")]


def test_weighted_first_pick_follows_the_weights(providers: dict[str, Provider]) -> None:
    models = one(
        "weighted",
        {"provider": "a", "model": "x", "weight": 3},
        {"provider": "b", "model": "x", "weight": 1},
        {"provider": "c", "model": "x", "weight": 0},
    )
    r = router(providers, models, rng=random.Random(7))
    plans = [keys(r.plan("m")) for _ in range(1000)]
    firsts = Counter(p[0][0] for p in plans)
    assert 700 <= firsts["a"] <= 800 and 200 <= firsts["b"] <= 300 and firsts["c"] == 0
    # after the first pick, the rest by weight
    assert {tuple(p) for p in plans} == {
        (("a", "x"), ("b", "x"), ("c", "x")),
        (("b", "x"), ("a", "x"), ("c", "x")),
    }


def test_weighted_with_all_weights_zero_picks_uniformly(providers: dict[str, Provider]) -> None:
    models = one("weighted", *({"provider": p, "model": "x", "weight": 0} for p in "ab"))
    r = router(providers, models, rng=random.Random(3))
    firsts = Counter(r.plan("m")[0].provider_name for _ in range(1000))
    assert 430 <= firsts["a"] <= 570


def test_latency_measures_unknown_targets_first(providers: dict[str, Provider]) -> None:
    latency = LatencyTracker(alpha=0.5)
    models = one("latency", *({"provider": p, "model": "x"} for p in "abc"))
    r = router(providers, models, latency=latency)
    latency.observe(("a", "x"), 100)
    assert keys(r.plan("m")) == [("b", "x"), ("c", "x"), ("a", "x")]
    latency.observe(("b", "x"), 300)
    latency.observe(("c", "x"), 50)
    assert keys(r.plan("m")) == [("c", "x"), ("a", "x"), ("b", "x")]
    latency.observe(("c", "x"), 250)  # moving average: (50 + 250) / 2
    assert latency.get(("c", "x")) == 150
    assert keys(r.plan("m")) == [("a", "x"), ("c", "x"), ("b", "x")]


async def test_latency_prefers_the_faster_fake_after_warm_up(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    models = one(
        "latency", {"provider": "a", "model": "gpt-4o"}, {"provider": "b", "model": "gpt-4o"}
    )
    r = router(providers, models)
    attempt = chat(client_session)
    fakes["a"].fail_next("slow_drip")  # a plain call with this fault answers after 1 s
    served = [(await r.run(r.plan("m"), attempt, deadline=10))[1].provider_name]
    served.append((await r.run(r.plan("m"), attempt, deadline=10))[1].provider_name)
    assert served == ["a", "b"]  # warm-up: each unmeasured target gets a turn
    for _ in range(3):
        assert (await r.run(r.plan("m"), attempt, deadline=10))[1].provider_name == "b"
    assert len(fakes["a"].requests) == 1


async def test_cost_orders_by_price_unknown_last(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    pricer = Pricer(
        {"pricey": {"input": 10.0, "output": 30.0}, "cheap": {"input": 0.1, "output": 0.4}}
    )
    models = one(
        "cost",
        {"provider": "c", "model": "never-priced-model"},
        {"provider": "a", "model": "pricey"},
        {"provider": "b", "model": "cheap"},
    )
    r = router(providers, models, pricer=pricer)
    assert keys(r.plan("m")) == [("b", "cheap"), ("a", "pricey"), ("c", "never-priced-model")]
    _, target, _ = await r.run(r.plan("m"), chat(client_session), deadline=10)
    assert target.key == ("b", "cheap") and len(fakes["b"].requests) == 1


FALLBACKS = [
    {
        "name": "smart",
        "targets": [{"provider": "a", "model": "gpt-4o"}],
        "fallbacks": ["cheap", "spare"],
    },
    {
        "name": "cheap",
        "targets": [{"provider": "b", "model": "gpt-4o-mini"}],
        "fallbacks": ["spare"],
    },
    {
        "name": "spare",
        "targets": [
            {"provider": "c", "model": "gpt-4o-mini"},
            {"provider": "a", "model": "gpt-4o"},
        ],
    },
]


def test_fallback_models_plans_follow_in_order_without_duplicates(
    providers: dict[str, Provider],
) -> None:
    r = router(providers, FALLBACKS)
    assert keys(r.plan("smart")) == [("a", "gpt-4o"), ("b", "gpt-4o-mini"), ("c", "gpt-4o-mini")]
    assert keys(r.plan("cheap")) == [("b", "gpt-4o-mini"), ("c", "gpt-4o-mini"), ("a", "gpt-4o")]


async def test_fallbacks_across_models_are_tried_in_order(
    providers: dict[str, Provider], fakes: dict[str, FakeOpenAI], client_session: UpstreamClient
) -> None:
    r = router(providers, FALLBACKS, sleep=FakeSleep(), policy=RetryPolicy(max_attempts=1))
    fakes["a"].fail_next("http_500")
    fakes["b"].fail_next("http_500")
    _, target, attempts = await r.run(r.plan("smart"), chat(client_session), deadline=10)
    assert target.key == ("c", "gpt-4o-mini")
    assert [(a.provider, a.outcome) for a in attempts] == [
        ("a", "error"),
        ("b", "error"),
        ("c", "ok"),
    ]


def test_direct_provider_model_and_unknown_names(providers: dict[str, Provider]) -> None:
    r = router(providers, FALLBACKS)
    assert keys(r.plan("b/gpt-4o")) == [("b", "gpt-4o")]
    with pytest.raises(GatewayError) as caught:
        r.plan("nope")
    assert caught.value.status == 404
    mr = model_router(providers, FALLBACKS)  # the existing API keeps working
    assert [t.key for t in mr.resolve("spare")] == [("c", "gpt-4o-mini"), ("a", "gpt-4o")]
    assert [m["id"] for m in mr.list_models()] == ["smart", "cheap", "spare"]


def test_router_from_settings(providers: dict[str, Provider]) -> None:
    settings = load_settings(
        {"retry_max_attempts": 3, "retry_backoff_base_ms": 100, "breaker_cooldown_s": 5}, env={}
    )
    r = Router.from_settings(settings, model_router(providers, FALLBACKS), Pricer())
    assert r.policy == RetryPolicy(max_attempts=3, backoff_base_s=0.1, backoff_max_s=5.0)
    assert (r.breakers.failure_threshold, r.breakers.window_s, r.breakers.cooldown_s) == (5, 30, 5)
    assert [s["provider"] for s in r.breakers.snapshot()] == ["a", "b", "c"]  # tracked, closed
