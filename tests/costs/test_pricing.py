"""Pricing: each token at the rate its provider bills, overrides first, unknown never 0."""

from __future__ import annotations

import dataclasses
import random
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from genai_prices.data_snapshot import DataSnapshot

from keel.costs import pricing
from keel.costs.pricing import Cost, Pricer
from keel.providers.base import Usage

AT = datetime(2025, 9, 1, tzinfo=UTC)
MTOK = Decimal(1_000_000)


@pytest.fixture(scope="module")
def book() -> Any:
    from genai_prices.data import providers

    return DataSnapshot(providers=providers, from_auto_update=False)


def rates(book: Any, model: str, provider_id: str, at: datetime = AT) -> Any:
    """The price book's own entry for a model at a time."""
    _, info = book.find_provider_model(model, None, provider_id, None)
    return info.get_prices(at)


def book_total(usage: genai_prices.Usage, model: str, provider_id: str, at: datetime = AT) -> float:
    """What genai-prices' own calculator charges, on its bundled data."""
    result = genai_prices.calc_price(
        usage, model, provider_id=provider_id, genai_request_timestamp=at
    )
    return float(result.total_price)


def test_openai_cached_input_priced_once(book: Any) -> None:
    usage = Usage(input_tokens=1000, cached_tokens=400, output_tokens=500)
    cost = Pricer().cost(usage, model="gpt-4o", provider_id="openai", at=AT)
    r = rates(book, "gpt-4o", "openai")
    assert r.cache_read_mtok < r.input_mtok
    expected = (600 * r.input_mtok + 400 * r.cache_read_mtok + 500 * r.output_mtok) / MTOK
    assert cost == Cost(float(expected), False, "price-book")
    theirs = genai_prices.Usage(input_tokens=1000, cache_read_tokens=400, output_tokens=500)
    assert cost.usd == book_total(theirs, "gpt-4o", "openai")


def test_gpt_4o_mini_hand_computed(book: Any) -> None:
    r = rates(book, "gpt-4o-mini", "openai")
    # OpenAI's list prices, as the book states them: $0.15 in, $0.075 cached, $0.60 out per 1M
    assert (r.input_mtok, r.cache_read_mtok, r.output_mtok) == (
        Decimal("0.15"),
        Decimal("0.075"),
        Decimal("0.6"),
    )
    usage = Usage(input_tokens=1000, cached_tokens=400, output_tokens=500)
    cost = Pricer().cost(usage, model="gpt-4o-mini", provider_id="openai", at=AT)
    assert cost.usd == 0.00042  # 600 * 0.15 + 400 * 0.075 + 500 * 0.6 = 420 per 1M


@pytest.mark.parametrize(
    ("model", "provider_id"),
    [
        ("gpt-4o-2024-08-06", "openai"),
        ("gpt-4o", "azure"),
        ("gpt-4o", None),
        ("claude-sonnet-4-5-20250929", "anthropic"),
        ("models/gemini-2.0-flash", "google"),
        ("models/gemini-2.5-flash", "google"),
        ("openai/gpt-4o", "openai"),
        ("gemini-2.0-flash", "gemini"),
    ],
)
def test_dated_prefixed_and_resold_names_match(model: str, provider_id: str | None) -> None:
    cost = Pricer().cost(
        Usage(input_tokens=10, output_tokens=10), model=model, provider_id=provider_id
    )
    assert cost.source == "price-book"
    assert cost.usd is not None and cost.usd > 0


def test_anthropic_cache_read_and_write_priced_differently(book: Any) -> None:
    r = rates(book, "claude-sonnet-4-5", "anthropic")
    assert (r.input_mtok.base, r.cache_read_mtok.base, r.cache_write_mtok.base) == (
        Decimal("3"),
        Decimal("0.3"),
        Decimal("3.75"),
    )
    assert r.output_mtok.base == Decimal("15")
    usage = Usage(
        input_tokens=10_000, cached_tokens=3000, cache_write_tokens=2000, output_tokens=1000
    )
    cost = Pricer().cost(usage, model="claude-sonnet-4-5-20250929", provider_id="anthropic", at=AT)
    # 5000 * 3 + 3000 * 0.3 + 2000 * 3.75 + 1000 * 15 = 38,400 per 1M
    assert cost == Cost(0.0384, False, "price-book")
    theirs = genai_prices.Usage(
        input_tokens=10_000, cache_read_tokens=3000, cache_write_tokens=2000, output_tokens=1000
    )
    assert cost.usd == book_total(theirs, "claude-sonnet-4-5-20250929", "anthropic")


def test_anthropic_long_context_tier_matches_the_book() -> None:
    usage = Usage(
        input_tokens=300_000, cached_tokens=50_000, cache_write_tokens=10_000, output_tokens=2000
    )
    cost = Pricer().cost(usage, model="claude-sonnet-4-5", provider_id="anthropic", at=AT)
    theirs = genai_prices.Usage(
        input_tokens=300_000,
        cache_read_tokens=50_000,
        cache_write_tokens=10_000,
        output_tokens=2000,
    )
    assert cost.usd == book_total(theirs, "claude-sonnet-4-5", "anthropic")
    base = (240_000 * 3 + 50_000 * 0.3 + 10_000 * 3.75 + 2000 * 15) / 1e6
    assert cost.usd is not None and cost.usd > base  # the >200k tier is dearer


def test_gemini_thoughts_priced_as_output(book: Any) -> None:
    r = rates(book, "gemini-2.5-flash", "google")
    assert r.output_reasoning_mtok is None  # Google bills thinking at the output rate
    usage = Usage(input_tokens=1000, output_tokens=1500, reasoning_tokens=1200)
    cost = Pricer().cost(usage, model="models/gemini-2.5-flash", provider_id="google", at=AT)
    expected = (1000 * r.input_mtok + 1500 * r.output_mtok) / MTOK
    assert cost == Cost(float(expected), False, "price-book")
    theirs = genai_prices.Usage(input_tokens=1000, output_tokens=1500, output_reasoning_tokens=1200)
    assert cost.usd == book_total(theirs, "gemini-2.5-flash", "google")


def test_effective_dates_apply(book: Any) -> None:
    # OpenAI cut o3's prices from $10/$40 to $2/$8 per 1M on 2025-06-10.
    before, after = datetime(2025, 6, 9, 23, tzinfo=UTC), datetime(2025, 6, 10, 1, tzinfo=UTC)
    usage = Usage(input_tokens=1000, output_tokens=1000)
    pricer = Pricer()
    assert pricer.cost(usage, model="o3", provider_id="openai", at=before).usd == 0.05
    assert pricer.cost(usage, model="o3", provider_id="openai", at=after).usd == 0.01


def test_override_wins_over_the_book() -> None:
    pricer = Pricer({"gpt-4o": {"input": 1.0, "output": 2.0}})
    usage = Usage(input_tokens=1_000_000, cached_tokens=500_000, output_tokens=1_000_000)
    # no cached_input rate given: cached tokens cost the input rate, once
    assert pricer.cost(usage, model="gpt-4o", provider_id="openai") == Cost(3.0, False, "override")


def test_override_prices_every_part() -> None:
    pricer = Pricer(
        {
            "my-model": {
                "input": 2.0,
                "output": 8.0,
                "cached_input": 0.5,
                "cache_write": 2.5,
                "reasoning": 16.0,
            }
        }
    )
    usage = Usage(
        input_tokens=1000,
        cached_tokens=300,
        cache_write_tokens=200,
        output_tokens=600,
        reasoning_tokens=400,
    )
    cost = pricer.cost(usage, model="my-model", provider_id=None)
    expected = (500 * 2.0 + 300 * 0.5 + 200 * 2.5 + 200 * 8.0 + 400 * 16.0) / 1e6
    assert (cost.source, cost.estimated) == ("override", False)
    assert cost.usd == pytest.approx(expected, rel=1e-12)


def test_override_without_reasoning_rate_prices_reasoning_as_output() -> None:
    pricer = Pricer({"my-model": {"input": 0.0, "output": 10.0}})
    usage = Usage(input_tokens=0, output_tokens=1000, reasoning_tokens=900)
    assert pricer.cost(usage, model="my-model", provider_id=None).usd == 0.01


@pytest.mark.parametrize(
    ("model", "provider_id"),
    [
        ("no-such-model", "openai"),
        ("gpt-4o", "no-such-provider"),
        ("no-such-model", None),
        ("claude-sonnet-4-5", "openai"),  # a hint is trusted: no guessing across providers
    ],
)
def test_unknown_is_none_never_zero(model: str, provider_id: str | None) -> None:
    cost = Pricer().cost(
        Usage(input_tokens=10, output_tokens=10), model=model, provider_id=provider_id
    )
    assert cost == Cost(None, False, "unknown")


def test_mock_provider_is_free() -> None:
    cost = Pricer().cost(
        Usage(input_tokens=10, output_tokens=10), model="anything", provider_id="mock"
    )
    assert cost == Cost(0.0, False, "free")


def test_no_usage_is_unknown() -> None:
    assert Pricer().cost(Usage(), model="gpt-4o", provider_id="openai") == Cost(
        None, False, "unknown"
    )
    assert Pricer().cost(Usage(estimated=True), model="x", provider_id="mock") == Cost(
        None, True, "unknown"
    )


@pytest.mark.parametrize(
    ("model", "provider_id", "source"),
    [
        ("gpt-4o", "openai", "price-book"),
        ("mine", None, "override"),
        ("x", "mock", "free"),
        ("no-such-model", "openai", "unknown"),
    ],
)
def test_estimated_flag_is_carried(model: str, provider_id: str | None, source: str) -> None:
    pricer = Pricer({"mine": {"input": 1.0, "output": 1.0}})
    usage = Usage(input_tokens=10, output_tokens=10, estimated=True)
    cost = pricer.cost(usage, model=model, provider_id=provider_id)
    assert (cost.estimated, cost.source) == (True, source)


def test_parts_above_their_totals_are_priced_once(book: Any) -> None:
    # an adapter that reported uncached input as the total: the cached tokens still count once
    usage = Usage(input_tokens=100, cached_tokens=300, output_tokens=0)
    cost = Pricer().cost(usage, model="gpt-4o", provider_id="openai", at=AT)
    assert cost.usd == float(300 * rates(book, "gpt-4o", "openai").cache_read_mtok / MTOK)


def test_errors_inside_the_book_are_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("broken price data")

    class BrokenModel:
        get_prices = boom

    monkeypatch.setattr(DataSnapshot, "find_provider_model", boom)
    usage = Usage(input_tokens=10, output_tokens=10)
    assert Pricer().cost(usage, model="boom-1", provider_id="openai").source == "unknown"
    monkeypatch.setattr(pricing, "_resolve", lambda model, provider_id: (None, BrokenModel()))
    assert Pricer().cost(usage, model="boom-2", provider_id="openai") == Cost(
        None, False, "unknown"
    )


@pytest.fixture
def cold_caches() -> Iterator[None]:
    pricing._snapshot.cache_clear()
    pricing._resolve.cache_clear()
    yield
    pricing._snapshot.cache_clear()
    pricing._resolve.cache_clear()


def test_prices_offline_from_the_bundled_book(
    cold_caches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    cost = Pricer().cost(
        Usage(input_tokens=10, output_tokens=10), model="gpt-4o", provider_id="openai"
    )
    assert cost.source == "price-book"
    assert pricing._snapshot().from_auto_update is False


SAMPLE_USAGES = [
    Usage(input_tokens=1234, output_tokens=567),
    Usage(
        input_tokens=5000,
        cached_tokens=3000,
        cache_write_tokens=1000,
        output_tokens=900,
        reasoning_tokens=400,
    ),
    Usage(
        input_tokens=450_000,
        cached_tokens=100_000,
        cache_write_tokens=20_000,
        output_tokens=9000,
        reasoning_tokens=8000,
    ),
]
SAMPLE_TIMES = [
    datetime(2024, 6, 1, tzinfo=UTC),
    datetime(2025, 9, 1, 3, tzinfo=UTC),
    datetime(2026, 11, 1, 12, tzinfo=UTC),
]


def _as_book_usage(usage: Usage) -> genai_prices.Usage:
    return genai_prices.Usage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens,
        output_reasoning_tokens=usage.reasoning_tokens,
    )


def test_agrees_with_genai_prices_on_the_whole_book(book: Any) -> None:
    """Keel's shortcut arithmetic charges what genai-prices' calculator charges, for every entry."""
    pricer = Pricer()
    checked = 0
    for provider in book.providers:
        for info in provider.models:
            if pricing._resolve(info.id, provider.id) != (provider, info):
                continue  # the id matches an earlier entry first; that one is checked itself
            for at in SAMPLE_TIMES:
                for usage in SAMPLE_USAGES:
                    book_usage = _as_book_usage(usage)
                    try:
                        result = info.calc_price(book_usage, provider, genai_request_timestamp=at)
                    except ValueError:
                        continue  # an entry genai-prices itself cannot price this usage with
                    ours = pricer.cost(usage, model=info.id, provider_id=provider.id, at=at)
                    theirs = float(result.total_price)
                    assert ours.usd == pytest.approx(theirs, rel=1e-12, abs=1e-15), (info.id, at)
                    checked += 1
    assert checked > 5000


def test_exact_integer_prices_equal_the_decimal_sum(book: Any) -> None:
    """The integer shortcut gives the very float the Decimal arithmetic gives, entry by entry."""
    rng = random.Random(7)
    compared = 0
    for provider in book.providers:
        for info in provider.models:
            for at in SAMPLE_TIMES:
                try:
                    rates = pricing._book_rates(info.get_prices(at))
                except Exception:
                    continue
                if rates is None or rates.exact is None:
                    continue
                decimal_only = dataclasses.replace(rates, exact=None)
                for _ in range(20):
                    cached, write, reasoning = (rng.randrange(0, 50_000) for _ in range(3))
                    counts = pricing._Counts(
                        cached + write + rng.randrange(0, 2_000_000),
                        cached,
                        write,
                        reasoning + rng.randrange(0, 200_000),
                        reasoning,
                    )
                    exact = pricing._fast_book_usd(counts, rates)
                    assert exact == pricing._fast_book_usd(counts, decimal_only), (info.id, counts)
                    compared += 1
    assert compared > 10_000


def test_public_api() -> None:
    import keel.costs

    assert sorted(keel.costs.__all__) == [
        "Cost",
        "CostSource",
        "Pricer",
        "count_messages",
        "count_text",
        "estimate_usage",
    ]
    assert all(hasattr(keel.costs, name) for name in keel.costs.__all__)
