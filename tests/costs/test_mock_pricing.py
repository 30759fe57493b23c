"""Pricing the mock: its own models free, the book models it stands in for at their list price."""

from __future__ import annotations

from datetime import UTC, datetime

import genai_prices
import pytest

from keel.costs.pricing import Cost, Pricer, mock_model_kind
from keel.providers.base import Usage
from keel.providers.mock import DEFAULT_CONFIG, LISTED_MODELS, MockProvider

AT = datetime(2025, 9, 1, tzinfo=UTC)
USAGE = Usage(input_tokens=1200, output_tokens=345)
MOCK_ID = MockProvider(DEFAULT_CONFIG).price_provider_id()


def book_total(
    model: str, provider_id: str | None, usage: Usage = USAGE, at: datetime = AT
) -> float:
    """What genai-prices' own calculator charges, on its bundled data."""
    book_usage = genai_prices.Usage(
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens
    )
    result = genai_prices.calc_price(
        book_usage, model, provider_id=provider_id, genai_request_timestamp=at
    )
    return float(result.total_price)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("gpt-4o-mini", "chat"),
        ("gpt-4o-2024-08-06", "chat"),  # dated names match as genai-prices matches them
        ("claude-sonnet-4-5", "chat"),
        ("gemini-2.5-flash", "chat"),
        ("gemini-embedding-001", "embedding"),
        ("openai/text-embedding-3-small", "embedding"),  # no provider's pattern claims it
        ("azure/gpt-4o", "chat"),
        ("echo", None),
        ("embed", None),
        ("fail", None),
        ("gpt-4o-minii", None),
        ("text-embedding-3-small", None),  # ambiguous without its provider
        ("nobody/gpt-4o", None),
        ("tts-1", None),  # priced per character: neither chat nor embeddings
        ("", None),
    ],
)
def test_mock_model_kind(name: str, kind: str | None) -> None:
    assert mock_model_kind(name) == kind


def test_listed_models_are_the_mocks_own_then_book_models() -> None:
    own, stand_ins = LISTED_MODELS[:3], LISTED_MODELS[3:]
    assert own == ("echo", "embed", "fail")
    # the mock's own names must never become book names, or they would stop being free
    assert [mock_model_kind(m) for m in own] == [None, None, None]
    assert all(mock_model_kind(m) is not None for m in stand_ins)


@pytest.mark.parametrize(
    ("name", "book_model", "book_provider"),
    [
        ("gpt-4o-mini", "gpt-4o-mini", None),
        ("claude-sonnet-4-5", "claude-sonnet-4-5", None),
        ("gpt-4o-2024-08-06", "gpt-4o-2024-08-06", None),
        ("openai/text-embedding-3-small", "text-embedding-3-small", "openai"),
    ],
)
def test_stand_ins_cost_the_list_price(
    name: str, book_model: str, book_provider: str | None
) -> None:
    cost = Pricer().cost(USAGE, model=name, provider_id=MOCK_ID, at=AT)
    expected = book_total(book_model, book_provider)
    assert expected > 0
    assert cost.source == "price-book" and not cost.estimated
    assert cost.usd == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["echo", "embed", "fail", "gpt-4o-minii", "anything"])
def test_the_mocks_own_models_and_unknown_names_are_free(name: str) -> None:
    assert Pricer().cost(USAGE, model=name, provider_id=MOCK_ID) == Cost(0.0, False, "free")


def test_only_the_mock_gets_the_stand_in_rule() -> None:
    # a real provider that does not know a name: unknown, never the mock's rule
    cost = Pricer().cost(USAGE, model="openai/text-embedding-3-small", provider_id="anthropic")
    assert cost == Cost(None, False, "unknown")


def test_an_override_still_wins() -> None:
    pricer = Pricer({"gpt-4o": {"input": 1.0, "output": 2.0}, "echo": {"input": 3.0}})
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert pricer.cost(usage, model="gpt-4o", provider_id=MOCK_ID) == Cost(3.0, False, "override")
    assert pricer.cost(usage, model="echo", provider_id=MOCK_ID) == Cost(3.0, False, "override")


def test_estimated_usage_is_flagged() -> None:
    usage = Usage(input_tokens=10, output_tokens=10, estimated=True)
    cost = Pricer().cost(usage, model="gpt-4o", provider_id=MOCK_ID, at=AT)
    assert (cost.estimated, cost.source) == (True, "price-book")
    assert cost.usd == pytest.approx(book_total("gpt-4o", None, usage), rel=1e-12)


def test_worst_case_as_budgets_ask_for_it() -> None:
    """Budgets price (prompt tokens, output cap) through the same call, with no time."""
    pricer = Pricer()

    def worst(model: str) -> float | None:
        usage = Usage(input_tokens=10, output_tokens=1000)
        return pricer.cost(usage, model=model, provider_id=MOCK_ID).usd

    now = datetime.now(UTC)
    expected = book_total("gpt-4o", None, Usage(input_tokens=10, output_tokens=1000), now)
    assert expected > 0
    assert worst("gpt-4o") == pytest.approx(expected, rel=1e-12)
    assert worst("echo") == 0.0
