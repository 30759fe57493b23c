"""Routing: which targets serve a request, in which order, and how failures move along them.

`Router.plan(model)` orders the model's targets by its strategy and appends its fallback models'
plans. `Router.run(plan, attempt, deadline=...)` calls targets in that order: it skips targets
whose circuit breaker is open, retries a target on a retryable failure (backoff with full jitter,
or the upstream's `Retry-After`), moves on after a timeout or when retries run out, stops at once
on the client's own errors (400, 401, 403, 404, 413, 422), and never runs past the deadline.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, NoReturn, TypeVar

from keel.config import Settings
from keel.costs.pricing import Pricer
from keel.gateway.breakers import BreakerBoard
from keel.gateway.models import ModelRoute, ModelRouter, Target
from keel.providers.base import UpstreamError, Usage

__all__ = ["Attempt", "LatencyTracker", "RetryPolicy", "Router", "RoutingError"]

T = TypeVar("T")
Outcome = Literal["ok", "error", "skipped_open"]

# The client's own mistakes: no other target or later try would answer differently.
NOT_RETRYABLE = frozenset({400, 401, 403, 404, 413, 422})
# What the `cost` strategy prices each target at: a call of this size.
REFERENCE_USAGE = Usage(input_tokens=1000, output_tokens=1000)
# An adapter timeout this close to the deadline was the deadline's, not the target's.
_SLACK_S = 0.05


@dataclass(frozen=True, slots=True)
class Attempt:
    """One step of a request's fallback chain, as stored on its record."""

    provider: str
    model: str
    outcome: Outcome
    status: int | None = None  # the error's status (None when ok or skipped)
    error: str | None = None
    latency_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RoutingError(UpstreamError):
    """A run that found no answer; `attempts` is the chain that was tried."""

    def __init__(self, cause: UpstreamError, message: str, attempts: list[Attempt]) -> None:
        super().__init__(
            cause.status,
            message,
            type=cause.type,
            code=cause.code,
            upstream_status=cause.upstream_status,
            retry_after=cause.retry_after,
        )
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 2  # per target, the first call included
    backoff_base_s: float = 0.2
    backoff_max_s: float = 5.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Full jitter: uniform between 0 and base * 2^(retry-1), capped."""
        return rng.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (retry - 1)))


class LatencyTracker:
    """Exponentially weighted moving average of each target's successful call latency."""

    def __init__(self, alpha: float = 0.3, max_targets: int = 10_000) -> None:
        self.alpha = alpha
        self._max = max_targets
        self._ewma: dict[tuple[str, str], float] = {}

    def observe(self, key: tuple[str, str], latency_ms: float) -> None:
        old = self._ewma.get(key)
        if old is None and len(self._ewma) >= self._max:
            self._ewma.pop(next(iter(self._ewma)))
        self._ewma[key] = latency_ms if old is None else old + self.alpha * (latency_ms - old)

    def get(self, key: tuple[str, str]) -> float | None:
        return self._ewma.get(key)


@dataclass(slots=True)
class _Run:
    """The state of one run: its deadline and what has been tried."""

    ends: float
    attempts: list[Attempt]
    last: UpstreamError | None = None
    deferred: UpstreamError | None = None  # asked for a wait longer than the deadline left


class _Miss:
    """What `_try_target` gives when its target did not answer and the run moves on."""


_MISS = _Miss()


class _Timeout(Exception):
    """One attempt ran out of time: its target's (`cut` False) or the request's (`cut` True)."""

    def __init__(self, cut: bool) -> None:
        self.cut = cut


class Router:
    """Plans and runs requests over a ModelRouter's targets. Used from the event loop only."""

    def __init__(
        self,
        models: ModelRouter,
        *,
        breakers: BreakerBoard | None = None,
        pricer: Pricer | None = None,
        policy: RetryPolicy | None = None,
        latency: LatencyTracker | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.models = models
        self.breakers = breakers or BreakerBoard()
        self.pricer = pricer
        self.policy = policy or RetryPolicy()
        self.latency = latency or LatencyTracker()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock
        self._prices: dict[tuple[str, str], float | None] = {}
        for route in models.configured:
            for target in route.targets:
                self.breakers.track(target.key)

    @classmethod
    def from_settings(cls, settings: Settings, models: ModelRouter, pricer: Pricer) -> Router:
        board = BreakerBoard(
            failure_threshold=settings.breaker_failure_threshold,
            window_s=settings.breaker_window_s,
            cooldown_s=settings.breaker_cooldown_s,
        )
        policy = RetryPolicy(
            max_attempts=settings.retry_max_attempts,
            backoff_base_s=settings.retry_backoff_base_ms / 1000,
            backoff_max_s=settings.retry_backoff_max_ms / 1000,
        )
        return cls(models, breakers=board, pricer=pricer, policy=policy)

    # -- planning -----------------------------------------------------------------------------

    def plan(self, model: str) -> list[Target]:
        """The targets to try for `model`, in order, fallbacks' plans after; 404 if unknown."""
        out: list[Target] = []
        self._extend(self.models.route(model), out, set(), set())
        return out

    def _extend(
        self, route: ModelRoute, out: list[Target], seen: set[tuple[str, str]], done: set[str]
    ) -> None:
        done.add(route.name)
        for target in self._order(route):
            if target.key not in seen:
                seen.add(target.key)
                out.append(target)
        for name in route.fallbacks:
            if name not in done:  # config refuses cycles; this also skips repeats
                self._extend(self.models.route(name), out, seen, done)

    def _order(self, route: ModelRoute) -> list[Target]:
        targets = list(route.targets)
        if len(targets) < 2 or route.strategy == "priority":
            return targets
        if route.strategy == "weighted":
            return self._weighted(targets)
        if route.strategy == "latency":
            unknown = [t for t in targets if self.latency.get(t.key) is None]
            known = [t for t in targets if self.latency.get(t.key) is not None]
            return unknown + sorted(known, key=lambda t: self.latency.get(t.key) or 0.0)
        return sorted(targets, key=self._price)  # cost

    def _weighted(self, targets: list[Target]) -> list[Target]:
        weights = [t.weight for t in targets]
        if sum(weights) > 0:
            first = self._rng.choices(range(len(targets)), weights=weights)[0]
        else:
            first = self._rng.randrange(len(targets))
        rest = targets[:first] + targets[first + 1 :]
        return [targets[first], *sorted(rest, key=lambda t: -t.weight)]

    def _price(self, target: Target) -> float:
        """USD of the reference call on `target`; unknown prices sort last."""
        if target.key not in self._prices:
            usd = None
            if self.pricer is not None:
                provider_id = target.provider.price_provider_id()
                cost = self.pricer.cost(
                    REFERENCE_USAGE, model=target.model, provider_id=provider_id
                )
                usd = cost.usd
            self._prices[target.key] = usd
        usd = self._prices[target.key]
        return math.inf if usd is None else usd

    # -- running ------------------------------------------------------------------------------

    async def run(
        self,
        plan: list[Target],
        attempt: Callable[[Target, float], Awaitable[T]],
        *,
        deadline: float,
    ) -> tuple[T, Target, list[Attempt]]:
        """Call `attempt(target, timeout_s)` along `plan` until one answers, within `deadline`
        seconds in all. Returns the answer, the target that gave it and the chain tried; raises
        RoutingError (an UpstreamError) with that chain when none answers."""
        run = _Run(self._clock() + deadline, [])
        for target in plan:
            if not self.breakers.allow(target.key):
                run.attempts.append(Attempt(target.provider_name, target.model, "skipped_open"))
                continue
            result = await self._try_target(run, target, attempt)
            if not isinstance(result, _Miss):
                return result, target, run.attempts
        raise self._exhausted(run, plan)

    async def _try_target(
        self, run: _Run, target: Target, attempt: Callable[[Target, float], Awaitable[T]]
    ) -> T | _Miss:
        """Call one target, retrying while allowed: its answer, or _MISS to move on.
        The breaker slot `allow` gave for the first call is already held."""
        for n in range(1, self.policy.max_attempts + 1):
            if n > 1 and not self.breakers.allow(target.key):
                return _MISS
            try:
                return await self._call(run, target, attempt)
            except _Timeout as exc:
                if exc.cut:
                    raise self._deadline_error(run) from None
                return _MISS  # a target that just hung would likely hang again: spend the
                # deadline on the next one
            except UpstreamError as exc:
                wait = self._wait_before_retry(run, exc, n)
                if wait is None:
                    return _MISS
                await self._sleep(wait)
        return _MISS

    async def _call(
        self, run: _Run, target: Target, attempt: Callable[[Target, float], Awaitable[T]]
    ) -> T:
        """One call, reported to the breaker, the latency average and the chain."""
        started = self._clock()
        remaining = run.ends - started
        budget = target.timeout_s if target.timeout_s is not None else math.inf
        limit = min(budget, remaining)
        try:
            if limit <= 0:
                raise TimeoutError
            async with asyncio.timeout(limit):
                result = await attempt(target, limit)
        except TimeoutError:
            self._timed_out(run, target, started, cut=budget > remaining)
        except UpstreamError as exc:
            if exc.type == "upstream_timeout" and self._clock() >= run.ends - _SLACK_S:
                # the adapter's own timer, set from the deadline's remainder, fired first
                self._timed_out(run, target, started, cut=True)
            self._failed(run, target, exc, started)
            raise
        except OSError as exc:  # an attempt that let a connection error through unwrapped
            err = UpstreamError(502, f"could not reach provider {target.provider_name!r}: {exc}")
            self._failed(run, target, err, started)
            raise err from None
        except BaseException:  # cancelled (client gone) or a bug: no verdict on the target
            self.breakers.release(target.key)
            raise
        latency_ms = (self._clock() - started) * 1000.0
        self.breakers.success(target.key)
        self.latency.observe(target.key, latency_ms)
        run.attempts.append(
            Attempt(target.provider_name, target.model, "ok", latency_ms=latency_ms)
        )
        return result

    def _record(self, run: _Run, target: Target, err: UpstreamError, started: float) -> None:
        latency_ms = (self._clock() - started) * 1000.0
        run.attempts.append(
            Attempt(
                target.provider_name, target.model, "error", err.status, err.message, latency_ms
            )
        )
        run.last = err

    def _failed(self, run: _Run, target: Target, err: UpstreamError, started: float) -> None:
        self._record(run, target, err, started)
        if err.status in NOT_RETRYABLE:
            self.breakers.release(target.key)
        else:
            self.breakers.failure(target.key)

    def _timed_out(self, run: _Run, target: Target, started: float, *, cut: bool) -> NoReturn:
        if cut:  # the request's deadline, not the target's timeout: no verdict on the target
            self.breakers.release(target.key)
            message = "cut short by the request deadline"
        else:
            self.breakers.failure(target.key)
            message = (
                f"provider {target.provider_name!r} did not answer within {target.timeout_s} s"
            )
        self._record(run, target, UpstreamError(504, message, type="upstream_timeout"), started)
        raise _Timeout(cut)

    def _wait_before_retry(self, run: _Run, err: UpstreamError, n: int) -> float | None:
        """Seconds to wait before calling the same target again, or None to move on.

        A client error ends the whole run (raised here). A rejected provider key, an upstream
        timeout or the last allowed try moves on. A wait longer than the deadline left moves
        on too, remembering the error so that, if nothing else answers, the client is told to
        come back after the wait the upstream asked for.
        """
        if err.status in NOT_RETRYABLE:
            raise RoutingError(err, err.message, run.attempts)
        if err.upstream_status in (401, 403) or err.type == "upstream_timeout":
            return None
        wait = err.retry_after
        if wait is None:
            wait = self.policy.backoff(n, self._rng)
        if wait > run.ends - self._clock():
            if err.retry_after is not None:
                run.deferred = err
            return None
        return wait if n < self.policy.max_attempts else None

    def _deadline_error(self, run: _Run) -> RoutingError:
        cause = UpstreamError(504, "", type="upstream_timeout")
        message = f"no target answered within the request deadline; tried: {_tried(run)}"
        return RoutingError(cause, message, run.attempts)

    def _exhausted(self, run: _Run, plan: list[Target]) -> RoutingError:
        if run.deferred is not None and run.last is run.deferred:
            cause = UpstreamError(
                429,
                "",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                retry_after=run.deferred.retry_after,
            )
            message = (
                f"the upstream asks to wait {run.deferred.retry_after:g} s, longer than the "
                f"request deadline allows; tried: {_tried(run)}"
            )
            return RoutingError(cause, message, run.attempts)
        if run.last is None:
            return self._all_open(run, plan)
        return RoutingError(run.last, f"{run.last.message}; tried: {_tried(run)}", run.attempts)

    def _all_open(self, run: _Run, plan: list[Target]) -> RoutingError:
        waits = [self.breakers.reopens_in(t.key) for t in plan]
        cause = UpstreamError(
            503,
            "",
            type="service_unavailable",
            code="circuit_open",
            retry_after=max(1.0, min(waits, default=1.0)),
        )
        message = f"every target has its circuit breaker open; tried: {_tried(run)}"
        return RoutingError(cause, message, run.attempts)


def _tried(run: _Run) -> str:
    parts = []
    for a in run.attempts:
        what = "circuit open" if a.outcome == "skipped_open" else str(a.status or a.outcome)
        parts.append(f"{a.provider}/{a.model} ({what})")
    return ", ".join(parts) or "nothing"
