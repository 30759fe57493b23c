"""What a call cost in USD: configured overrides first, then genai-prices' bundled price book.

Keel's `Usage` counts totals: `input_tokens` includes cached and cache-write tokens and
`output_tokens` includes reasoning tokens. Each token is priced once, at the rate its provider
bills it: cache reads at the cache-read rate, cache writes at the cache-write rate, the rest of the
input at the input rate; reasoning at the output rate unless a distinct reasoning rate exists.

The price book is the snapshot shipped inside the genai-prices package; it is never refreshed over
the network. Prices with effective dates apply by the request's time. A model or provider the book
does not know costs `None` ("unknown"), never 0. Pricing never raises.

The offline `mock` provider (price provider id `mock`) is free, except for the book's own models
it stands in for: `mock_model_kind` names them (`gpt-4o-mini`, `claude-sonnet-4-5`, or
`<book provider>/<model>` such as `openai/text-embedding-3-small`), and they cost that model's
list price on the mock's token counts, so a demo without config shows real costs.

Speed: the model look-up is cached per (model, provider id), and the token arithmetic runs on the
rates read from the book's own price entries (same decomposition and tiers as genai-prices, whose
general calculator costs about 150 µs a call). Entries this shortcut does not cover (per-request
fees) go through genai-prices' calculator.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from keel.providers.base import Usage

__all__ = ["Cost", "CostSource", "MockKind", "Pricer", "mock_model_kind"]

logger = logging.getLogger("keel.costs")

CostSource = Literal["price-book", "override", "free", "unknown"]
MockKind = Literal["chat", "embedding"]

_PER_MTOK = 1_000_000
_ZERO = Decimal(0)
_EXACT_LIMIT = 10**27
_MOCK = "mock"  # the offline provider's price provider id


@dataclass(frozen=True, slots=True)
class Cost:
    """The price of one call. `usd` is None when Keel cannot price it (never a silent 0)."""

    usd: float | None
    estimated: bool  # True when the token counts were estimated by Keel
    source: CostSource


class _Counts(NamedTuple):
    """Token totals, made consistent: every part is included in its total exactly once."""

    input: int
    cached: int
    cache_write: int
    output: int
    reasoning: int


def _count(value: int | None) -> int:
    return value if value is not None and value > 0 else 0


def _counts(usage: Usage) -> _Counts | None:
    # Runs for every priced call and ingested LLM span: plain statements, no generators.
    inp, cached, write = usage.input_tokens, usage.cached_tokens, usage.cache_write_tokens
    out, reasoning = usage.output_tokens, usage.reasoning_tokens
    if inp is None and out is None and cached is None and write is None and reasoning is None:
        return None
    inp, cached, write = _count(inp), _count(cached), _count(write)
    out, reasoning = _count(out), _count(reasoning)
    # A total below the sum of its parts is a provider or adapter slip: the parts were billed,
    # so the total is raised to cover them rather than the call going unpriced.
    if inp < cached + write or out < reasoning:
        logger.debug("usage parts exceed their totals, raising the totals: %r", usage)
        inp, out = max(inp, cached + write), max(out, reasoning)
    return _Counts(inp, cached, write, out, reasoning)


def _override_usd(counts: _Counts, rates: Mapping[str, float]) -> float:
    """Price with a configured override (USD per 1M tokens); missing rates documented below.

    `input` and `output` default to 0; `cached_input` and `cache_write` default to the input
    rate; `reasoning` defaults to the output rate.
    """
    rate_in = rates.get("input", 0.0)
    rate_out = rates.get("output", 0.0)
    uncached = counts.input - counts.cached - counts.cache_write
    usd = (
        uncached * rate_in
        + counts.cached * rates.get("cached_input", rate_in)
        + counts.cache_write * rates.get("cache_write", rate_in)
        + (counts.output - counts.reasoning) * rate_out
        + counts.reasoning * rates.get("reasoning", rate_out)
    )
    return usd / _PER_MTOK


# ---- the price book ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _snapshot() -> Any:
    """genai-prices' bundled data, held in our own snapshot so no auto-update can swap it."""
    from genai_prices.data import providers
    from genai_prices.data_snapshot import DataSnapshot

    return DataSnapshot(providers=providers, from_auto_update=False)


@lru_cache(maxsize=4096)
def _resolve(model: str, provider_id: str | None) -> tuple[Any, Any] | None:
    """The book's (provider, model) for a model name, using genai-prices' matching; None if unknown.

    genai-prices matches dated names (`gpt-4o-2024-08-06`, `claude-sonnet-4-5-20250929`) and
    falls back across resellers (Azure to OpenAI). A path prefix it does not know for that model
    (`models/gemini-2.5-flash`, `openai/gpt-4o`) is dropped for a second try. Misses are cached
    too: the book does not change while Keel runs.
    """
    names = [model]
    if "/" in model:
        names.append(model.rsplit("/", 1)[1])
    for name in names:
        try:
            provider, model_info = _snapshot().find_provider_model(name, None, provider_id, None)
        except LookupError:
            continue
        except Exception:
            logger.debug("price look-up failed for %r (%r)", name, provider_id, exc_info=True)
            return None
        return provider, model_info
    return None


@dataclass(frozen=True, slots=True)
class _BookRates:
    """The token rates of one book price entry (Decimal or genai-prices TieredPrices per MTok)."""

    input: Any
    cache_read: Any
    cache_write: Any
    output: Any
    reasoning: Any
    # When no rate is tiered: the five rates as integer numerators over one common denominator
    # (a missing rate is 0), so a call's price is one exact integer sum.
    exact: tuple[int, int, int, int, int, int] | None = None


def _exact(rates: tuple[Any, ...]) -> tuple[int, int, int, int, int, int] | None:
    if not all(r is None or type(r) is Decimal for r in rates):
        return None
    ratios = [r.as_integer_ratio() if r is not None else (0, 1) for r in rates]
    denominator = math.lcm(*(d for _, d in ratios))
    n_in, n_read, n_write, n_out, n_reason = (n * (denominator // d) for n, d in ratios)
    return n_in, n_read, n_write, n_out, n_reason, denominator


_RATES: dict[int, tuple[object, _BookRates | None]] = {}


def _book_rates(model_price: Any) -> _BookRates | None:
    """Rates of a book entry, or None when it has a per-request fee (left to genai-prices)."""
    key = id(model_price)
    hit = _RATES.get(key)
    if hit is not None and hit[0] is model_price:
        return hit[1]
    rates = None
    if getattr(model_price, "requests_kcount", None) is None:
        five = (
            model_price.input_mtok,
            model_price.cache_read_mtok,
            model_price.cache_write_mtok,
            model_price.output_mtok,
            model_price.output_reasoning_mtok,
        )
        rates = _BookRates(*five, exact=_exact(five))
    _RATES[key] = (model_price, rates)  # keeps model_price alive, so its id is never reused
    return rates


def _unit_price(price: Any, count: int, total_input: int) -> Decimal:
    """genai-prices' rule: a tier applies when the call's total input exceeds its start."""
    if type(price) is Decimal:
        return price * count
    rate = price.base  # TieredPrices
    for tier in reversed(price.tiers):
        if total_input > tier.start:
            rate = tier.price
            break
    return Decimal(rate) * count


def _fast_book_usd(counts: _Counts, rates: _BookRates) -> float:
    # Parts the book has no rate for stay in their total, as genai-prices decomposes them.
    inp, cached, write, out, reasoning = counts
    uncached = inp
    if rates.cache_read is not None:
        uncached -= cached
    if rates.cache_write is not None:
        uncached -= write
    if rates.reasoning is not None:
        out -= reasoning
    if rates.exact is not None:
        # Exact, like genai-prices' Decimal sum, and int / int rounds to the nearest float as
        # float(Decimal) does: the same USD, for a few integer products instead of Decimals.
        n_in, n_read, n_write, n_out, n_reason, denominator = rates.exact
        total = uncached * n_in + cached * n_read + write * n_write
        total += out * n_out + reasoning * n_reason
        if abs(total) < _EXACT_LIMIT:  # within Decimal's 28 digits: the two agree
            return total / (denominator * _PER_MTOK)
    usd = _ZERO
    for price, count in (
        (rates.input, uncached),
        (rates.cache_read, cached),
        (rates.cache_write, write),
        (rates.output, out),
        (rates.reasoning, reasoning),
    ):
        if price is not None and count:
            usd += _unit_price(price, count, inp)
    return float(usd / _PER_MTOK)


def _slow_book_usd(counts: _Counts, provider: Any, model_info: Any, at: datetime) -> float:
    from genai_prices import Usage as BookUsage

    book_usage = BookUsage(
        input_tokens=counts.input,
        cache_read_tokens=counts.cached,
        cache_write_tokens=counts.cache_write,
        output_tokens=counts.output,
        output_reasoning_tokens=counts.reasoning,
    )
    result = model_info.calc_price(book_usage, provider, genai_request_timestamp=at)
    return float(result.total_price)


def _book_usd(counts: _Counts, model: str, provider_id: str | None, at: datetime) -> float | None:
    found = _resolve(model, provider_id)
    if found is None:
        return None
    provider, model_info = found
    try:
        rates = _book_rates(model_info.get_prices(at))
        if rates is None:
            return _slow_book_usd(counts, provider, model_info, at)
        return _fast_book_usd(counts, rates)
    except Exception:
        logger.debug("pricing %r (%r) failed", model, provider_id, exc_info=True)
        return None


def _mock_ref(name: str) -> tuple[str, str | None]:
    """The book's (model, provider id) a mock model name stands for: `gpt-4o` or `openai/gpt-4o`."""
    provider_id, sep, model = name.partition("/")
    return (model, provider_id) if sep else (name, None)


@lru_cache(maxsize=1024)  # bounded: names come from clients
def mock_model_kind(name: str) -> MockKind | None:
    """What the mock provider serves `name` as, by the price book; None when it is not the book's.

    The name is resolved as genai-prices resolves a model without a provider (each provider's
    own pattern: `gpt-4o-mini`, `claude-sonnet-4-5`, `gemini-2.5-flash`, dated names too), or as
    `<book provider>/<model>` for a model no pattern claims (`openai/text-embedding-3-small`).
    Its current price entry decides the kind: input and output token rates make a chat model,
    an input rate alone an embedding model; anything else (audio, images) is neither.
    """
    model, provider_id = _mock_ref(name)
    found = _resolve(model, provider_id)
    if found is None:
        return None
    try:
        prices = found[1].get_prices(datetime.now(UTC))
    except Exception:
        logger.debug("no current price for %r", name, exc_info=True)
        return None
    if prices.input_mtok is None:
        return None
    return "embedding" if prices.output_mtok is None else "chat"


class Pricer:
    """Prices calls: an override by exact model name wins, then the bundled price book."""

    def __init__(self, overrides: Mapping[str, Mapping[str, float]] | None = None) -> None:
        """`overrides`: model name -> USD per 1M tokens (`input`, `output`, `cached_input`,
        `cache_write`, `reasoning`), as in the config's `prices:`."""
        self._overrides = {name: dict(rates) for name, rates in (overrides or {}).items()}
        try:  # load the book now (about 0.2 s) rather than on the first request
            _snapshot()
        except Exception:
            logger.warning("the genai-prices price book could not be loaded", exc_info=True)

    def cost(
        self,
        usage: Usage,
        *,
        model: str,
        provider_id: str | None,
        at: datetime | None = None,
    ) -> Cost:
        """The cost of `usage` on `model` at time `at` (default: now). Never raises."""
        estimated = usage.estimated
        counts = _counts(usage)
        if counts is None:
            return Cost(None, estimated, "unknown")
        rates = self._overrides.get(model)
        if rates is not None:
            return Cost(_override_usd(counts, rates), estimated, "override")
        book_model, book_provider = model, provider_id
        if provider_id == _MOCK:
            if mock_model_kind(model) is None:  # echo, embed, fail: the mock's own, free
                return Cost(0.0, estimated, "free")
            book_model, book_provider = _mock_ref(model)  # a stand-in: the model's list price
        usd = _book_usd(counts, book_model, book_provider, at or datetime.now(UTC))
        if usd is None:
            return Cost(None, estimated, "unknown")
        return Cost(usd, estimated, "price-book")
