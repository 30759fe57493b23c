"""Budgets in USD, hierarchical (project -> key -> customer -> pipeline), per UTC period.

Admission reserves the request's worst-case cost on every budget of its chain in one atomic
step, before the provider call; settling releases the reservation and adds the actual cost.
Concurrent requests therefore cannot all pass a check before any spend is recorded: spend never
exceeds a budget by more than the error of the worst-case estimates in flight (none when the
actual cost is at most the estimate).

A reservation holds until it is settled or until it expires (`reservation_ttl`, default 10
minutes): a replica that crashes mid-request does not hold its budgets forever, because every
later operation on the budget first releases expired reservations.

The reservation can take the request's rate limits along (`reserve(..., rates=)`), and the
settlement its output tokens (`settle(..., tokens=)`): one atomic step each way per request.

Money is kept as integer micro-USD in the state; this module speaks float USD.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from keel.limits.ratelimit import (
    COUNTER_TTL,
    Decision,
    LimitError,
    RateCheck,
    Tokens,
    subject_key,
    unreachable_error,
)
from keel.limits.state import (
    BudgetRefusal,
    BudgetSlot,
    Crossing,
    Hold,
    SharedState,
    StateUnavailable,
)

__all__ = [
    "BudgetExceeded",
    "BudgetLedger",
    "BudgetSpec",
    "Notice",
    "Period",
    "Reservation",
    "Settlement",
    "worst_case_cost",
]

logger = logging.getLogger("keel.limits")

Period = Literal["day", "month", "total"]
PERIODS: tuple[Period, ...] = ("day", "month", "total")
_MICRO = 1_000_000
_GRACE = 86_400.0  # a period's totals outlive it by a day (late settles, reading yesterday)
_PER = {"day": "per day", "month": "per month", "total": "in total"}


def worst_case_cost(
    pricer_cost_fn: Callable[[int, int], float | None],
    prompt_tokens: int,
    max_output_tokens: int,
    *,
    unknown_usd: float = 0.0,
) -> float:
    """The most a call can cost: `pricer_cost_fn(prompt_tokens, max_output_tokens)` in USD.

    `max_output_tokens` must bound the output: the request's `max_tokens` (or
    `max_completion_tokens`), else a default cap that the gateway also sends upstream —
    otherwise the estimate is not a worst case. A model without a price (the function returns
    None) costs `unknown_usd`, so its spend is not tracked unless that is set.
    """
    usd = pricer_cost_fn(prompt_tokens, max_output_tokens)
    return unknown_usd if usd is None else max(0.0, usd)


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """One budget: `limit_usd` per UTC calendar `period` ("day", "month" or "total")."""

    scope: str
    id: str
    limit_usd: float
    period: Period

    def describe(self) -> str:
        return f"{self.scope} '{self.id}' ({self.limit_usd:.2f} USD {_PER[self.period]})"


@dataclass(frozen=True, slots=True)
class Notice:
    """A budget reached `percent` (80 or 100) of its limit; emitted once per budget period."""

    scope: str
    id: str
    period: Period
    period_tag: str  # "d2025-01-31", "m2025-01" or "total"
    percent: int
    spent_usd: float
    limit_usd: float


@dataclass(slots=True)
class Reservation:
    """An admitted amount held on a chain of budgets until `settle` (or `expires_at`)."""

    amount_usd: float
    specs: tuple[BudgetSpec, ...]
    tags: tuple[str, ...]
    hold: Hold  # as the state takes it: the budgets' slots, the id, micro-USD, the expiry
    checked: bool = True  # False when admitted unchecked (state unreachable, failing open)
    settled: bool = field(default=False)
    decision: Decision | None = None  # the rate limits' (headers), when reserved with them

    @property
    def id(self) -> str:
        return self.hold.rid

    @property
    def expires_at(self) -> float:
        return self.hold.until


@dataclass(frozen=True, slots=True)
class Settlement:
    """What `settle` recorded: the charge, and the notices it crossed (`recorded` False when
    the state was unreachable and the charge was lost)."""

    charged_usd: float
    notices: list[Notice]
    recorded: bool = True


class BudgetExceeded(LimitError):
    """429 `budget_exceeded`: the request's worst case does not fit in one of its budgets."""

    def __init__(
        self,
        spec: BudgetSpec,
        message: str,
        retry_after: float | None,
        notices: list[Notice],
    ) -> None:
        super().__init__(
            429,
            message,
            code="budget_exceeded",
            type="insufficient_quota",  # OpenAI's type for a spent quota, known to SDK users
            retry_after=retry_after,
        )
        self.spec = spec
        self.notices = notices


def _period(period: Period, now: float) -> tuple[str, float | None]:
    """The period's tag and its end (epoch seconds; None for "total")."""
    return _period_of_day(period, int(now // 86_400))


@functools.lru_cache(maxsize=64)
def _period_of_day(period: Period, day: int) -> tuple[str, float | None]:
    # Both depend on the UTC day only (epoch days are whole), so requests reuse them.
    t = datetime.fromtimestamp(day * 86_400, UTC)
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return f"d{start:%Y-%m-%d}", start.timestamp() + 86_400
    if period == "month":
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        return f"m{start:%Y-%m}", start.replace(year=year, month=month).timestamp()
    return "total", None


class _Ids:
    """Reservation ids unique across replicas: a random prefix per process, then a count
    (a fifth of a uuid4's cost, which reads the system's randomness for every one)."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)  # a forked child must not share them

    def renew(self) -> None:
        self.prefix = os.urandom(9).hex()
        self.count = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.count):x}"


_reservation_id = _Ids()


def _micros_up(usd: float) -> int:
    # Rounded (to kill float noise such as 0.1 * 1e6 = 100000.00000000001) then up.
    return math.ceil(round(usd * _MICRO, 3))


def _slot(spec: BudgetSpec, now: float) -> tuple[BudgetSlot, str]:
    return _slot_of_day(spec, int(now // 86_400))


@functools.lru_cache(maxsize=4096)
def _slot_of_day(spec: BudgetSpec, day: int) -> tuple[BudgetSlot, str]:
    if spec.period not in PERIODS:
        raise ValueError(f"budget period must be one of {PERIODS}, got {spec.period!r}")
    tag, end = _period_of_day(spec.period, day)
    key = f"bg:{subject_key(spec.scope, spec.id)}:{tag}"
    limit = math.floor(round(spec.limit_usd * _MICRO, 3))
    return BudgetSlot(key, limit, None if end is None else end + _GRACE), tag


@functools.lru_cache(maxsize=1024)
def _chain(
    budgets: tuple[BudgetSpec, ...], day: int
) -> tuple[tuple[BudgetSpec, ...], tuple[BudgetSlot, ...], tuple[str, ...]]:
    """A chain's budgets (each once), their slots and tags on `day`: the same for every
    request of the same caller that day, so made once."""
    specs = tuple(dict.fromkeys(budgets))  # a budget given twice is held once
    pairs = [_slot_of_day(spec, day) for spec in specs]
    return specs, tuple(slot for slot, _ in pairs), tuple(tag for _, tag in pairs)


class BudgetLedger:
    """Reserves, settles and reads budgets kept in a `SharedState`.

    `fail_open`: when the state is unreachable, admit (counted in `failed_open`) instead of
    refusing with 503. `reservation_ttl`: seconds after which an unsettled reservation is
    released; keep it above the longest request (timeouts, retries and streams included).
    """

    def __init__(
        self,
        state: SharedState,
        *,
        fail_open: bool = False,
        clock: Callable[[], float] = time.time,
        reservation_ttl: float = 600.0,
    ) -> None:
        self._state = state
        self._fail_open = fail_open
        self._clock = clock
        self._ttl = reservation_ttl
        self.failed_open = 0  # requests admitted unchecked because the state was unreachable
        self.lost_settles = 0  # settles whose charge could not be recorded

    async def reserve(
        self,
        budgets: Sequence[BudgetSpec],
        amount_usd: float,
        *,
        rates: RateCheck | None = None,
    ) -> Reservation:
        """Hold `amount_usd` (the worst case) on every budget, or raise `BudgetExceeded`.

        Every budget must have spent + reserved + amount <= limit; the first that has not is
        named in the error, whose `retry_after` is the time until its period resets (None for
        "total"). With `rates` (`RateLimiter.prepare`), the request's rate limits are checked
        and counted in the same atomic step, before the budgets: a rate limit's refusal raises
        its 429 (`Decision.error`), and a refusal by either counts and holds nothing. Their
        decision (with the x-ratelimit-* headers) is then `reservation.decision`.
        Raises `LimitError` (503) if the state is unreachable and failing closed.
        """
        if amount_usd < 0 or not math.isfinite(amount_usd):
            raise ValueError(f"amount_usd must be a finite amount >= 0, got {amount_usd}")
        now = self._clock()
        specs, slots, tags = _chain(tuple(budgets), int(now // 86_400))
        rid = _reservation_id()
        hold = Hold(slots, rid, _micros_up(amount_usd), now + self._ttl)
        reservation = Reservation(amount_usd, specs, tags, hold)
        if not specs and rates is None:
            return reservation
        try:
            admitted = await self._state.admit(
                rates.wire if rates is not None else (),
                rates.costs if rates is not None else (),
                reservation.hold if specs else None,
                weight=rates.weight if rates is not None else 0.0,
                ttl=COUNTER_TTL,
                now=now,
            )
        except StateUnavailable:
            if not self._fail_open:
                raise unreachable_error() from None
            self.failed_open += 1
            logger.warning("limits not checked: shared state unreachable (failing open)")
            reservation.checked = False
            if rates is not None:
                reservation.decision = Decision(True, None, [])
            return reservation
        if admitted.refusal is not None:
            raise self._exceeded(reservation, admitted.refusal, now)
        if rates is not None:
            reservation.decision = rates.decide(admitted.allowed, admitted.counts)
            if not admitted.allowed:
                raise reservation.decision.error()
        return reservation

    @staticmethod
    def _exceeded(r: Reservation, refusal: BudgetRefusal, now: float) -> BudgetExceeded:
        spec, tag = r.specs[refusal.index], r.tags[refusal.index]
        spent, reserved = refusal.spent / _MICRO, refusal.reserved / _MICRO
        left = max(0.0, spec.limit_usd - spent - reserved)
        message = (
            f"budget of {spec.describe()} is used up: {left:.2f} USD left, "
            f"this request may cost up to {r.amount_usd:.2f} USD"
        )
        _, end = _period(spec.period, now)
        notices = []
        if refusal.first:  # refused for the first time this period: it is used up
            notices.append(
                Notice(spec.scope, spec.id, spec.period, tag, 100, spent, spec.limit_usd)
            )
        return BudgetExceeded(spec, message, None if end is None else end - now, notices)

    async def settle(
        self, reservation: Reservation, actual_usd: float | None, *, tokens: Tokens | None = None
    ) -> Settlement:
        """Release the reservation and add the actual cost to every budget of its chain.

        `actual_usd` None (the price is unknown) charges the reserved amount instead: to be
        safe, an unpriced call counts as its worst case. A reservation settles once; settling
        it again charges nothing. `tokens` (`RateLimiter.tokens`): the output tokens to count
        on the rate limits in the same step. Never raises for an unreachable state: the
        response is already made, so the charge is lost (logged, counted in `lost_settles`,
        and the reservation expires on its own).
        """
        charge = reservation.amount_usd if actual_usd is None else max(0.0, actual_usd)
        charged = 0.0 if reservation.settled else charge
        hold = None if reservation.settled or not reservation.specs else reservation.hold
        if hold is None and tokens is None:
            return Settlement(charged, [])
        if hold is not None:
            reservation.settled = True
        try:
            crossings = await self._state.settle(
                tokens.keys if tokens is not None else (),
                tokens.count if tokens is not None else 0,
                hold,
                math.ceil(round(charge * _MICRO, 3)) if hold is not None else 0,
                ttl=COUNTER_TTL,
                now=self._clock(),
            )
        except StateUnavailable:
            self.lost_settles += 1
            logger.warning(
                "a charge of %.6f USD and %d tokens were not recorded: shared state unreachable",
                charge if hold is not None else 0.0,
                tokens.count if tokens is not None else 0,
            )
            return Settlement(charged, [], recorded=False)
        return Settlement(charged, [self._notice(reservation, c) for c in crossings])

    async def release(self, reservation: Reservation) -> Settlement:
        """Settle at no cost: the request never reached a provider (refused or failed early)."""
        return await self.settle(reservation, 0.0)

    @staticmethod
    def _notice(r: Reservation, c: Crossing) -> Notice:
        spec = r.specs[c.index]
        return Notice(
            spec.scope,
            spec.id,
            spec.period,
            r.tags[c.index],
            c.percent,
            c.spent / _MICRO,
            spec.limit_usd,
        )

    async def spend(self, spec: BudgetSpec) -> tuple[float, float]:
        """(spent, reserved) in USD for the current period of `spec`.

        Raises `LimitError` (503) when the state is unreachable: a figure cannot be made up."""
        now = self._clock()
        slot, _ = _slot(spec, now)
        try:
            spent, reserved = await self._state.budget_read(slot, now=now)
        except StateUnavailable:
            raise unreachable_error() from None
        return spent / _MICRO, reserved / _MICRO
