"""Requests and tokens per minute for any (scope, id): key, customer, model, ...

Window: a sliding minute estimated from two fixed-minute counters, the previous minute's count
weighted by the share of it still inside the sliding minute (Cloudflare's approach). Why not a
fixed window: a fixed minute admits twice the limit across a boundary (10 at 0:59, 10 at 1:00),
which trips the provider's own limits that Keel is often there to protect. Why not a log of
timestamps: memory would grow with the limit, hopeless for tokens per minute. Two integers per
counter keep every check one small atomic script. The estimate assumes the previous minute's
traffic was spread evenly, so a burst at the start of a minute is remembered a little longer
than a true sliding log would (the error is on the safe side there, and bounded elsewhere).

All counters of a request (every spec, requests and tokens) are checked and incremented in one
atomic step, all or nothing: a request refused by one limit consumes none of the others. That
step can also take the request's budget reservation (`RateLimiter.prepare`, then
`BudgetLedger.reserve(..., rates=)`), so that a request refused by a budget counts on no rate
limit either.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from keel.gateway.errors import GatewayError
from keel.limits.state import SharedState, StateUnavailable, WindowCounter

__all__ = [
    "COUNTER_TTL",
    "Decision",
    "LimitError",
    "LimitSpec",
    "RateCheck",
    "RateLimiter",
    "Tokens",
]

logger = logging.getLogger("keel.limits")

WINDOW = 60.0  # seconds: limits are per minute
COUNTER_TTL = 120  # seconds: a counter lives while it can still be the previous minute


class LimitError(GatewayError):
    """A refusal by a limit (429) or an unreachable shared state (503), with its headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        type: str | None = None,
        retry_after: float | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(status, message, type=type, code=code, retry_after=retry_after)
        self.extra_headers = list(headers)

    def headers(self) -> list[tuple[bytes, bytes]]:
        # Rounded up, not to the nearest second: a client that waits a rounded-down
        # Retry-After comes back too early and is refused again.
        out = [(k.encode(), v.encode()) for k, v in self.extra_headers]
        if self.retry_after is not None:
            out.append((b"retry-after", str(max(1, math.ceil(self.retry_after))).encode()))
        return out


def unreachable_error() -> LimitError:
    """The fail-closed answer when the shared state cannot be read."""
    return LimitError(
        503, "cannot check limits: shared state unreachable", code="limits_unavailable"
    )


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """Per-minute limits of one (scope, id); None means no limit of that kind."""

    scope: str
    id: str
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to `check`. `headers` are OpenAI's `x-ratelimit-*` for the tightest specs;
    send them on every response. `reason` says which limit refused, for the 429 message."""

    allowed: bool
    retry_after: float | None
    headers: list[tuple[str, str]]
    reason: str | None = None

    def error(self) -> LimitError:
        """The 429 to answer a refused request with (Retry-After and the headers included)."""
        return LimitError(
            429,
            self.reason or "rate limit reached",
            code="rate_limit_exceeded",
            retry_after=self.retry_after,
            headers=self.headers,
        )


@dataclass(frozen=True, slots=True)
class _Counter:
    spec: LimitSpec
    kind: str  # "requests" or "tokens"
    limit: int
    limit_text: str  # for the x-ratelimit-limit-* header


# One counter as seen by a request: the counter, its previous and current minute's counts, and
# the request's cost on it.
_Seen = tuple[_Counter, int, int, int]


@dataclass(frozen=True, slots=True)
class _Plan:
    """The counters of a list of specs in one minute, and their keys: the same for every
    request of the same caller in that minute, so made once (`_plan`)."""

    counters: tuple[_Counter, ...]
    wire: tuple[WindowCounter, ...]
    token_keys: list[str]  # the current minute's token counters
    kinds: tuple[tuple[tuple[str, str, str], tuple[int, ...]], ...]  # header names, counters


@functools.lru_cache(maxsize=1024)
def _plan(specs: tuple[LimitSpec, ...], window: int) -> _Plan | None:
    counters = tuple(
        _Counter(spec, kind, limit, str(limit))
        for spec in dict.fromkeys(specs)  # a spec given twice counts once
        for kind, limit in (("requests", spec.rpm), ("tokens", spec.tpm))
        if limit is not None
    )
    if not counters:
        return None
    wire = tuple(
        WindowCounter(_key(c.spec, c.kind, window), _key(c.spec, c.kind, window - 1), c.limit)
        for c in counters
    )
    tokens = [w.current for c, w in zip(counters, wire, strict=True) if c.kind == "tokens"]
    kinds = tuple(
        (_HEADERS[kind], mine)
        for kind in ("requests", "tokens")
        if (mine := tuple(i for i, c in enumerate(counters) if c.kind == kind))
    )
    return _Plan(counters, wire, tokens, kinds)


def _key(spec: LimitSpec, kind: str, window: int) -> str:
    return f"rl:{subject_key(spec.scope, spec.id)}:{kind[0]}:{window}"


@functools.lru_cache(maxsize=4096)
def subject_key(scope: str, id: str) -> str:
    # Quoted so an id holding ':' cannot name another scope's counter (cached: the same few
    # subjects come back on every request).
    return f"{quote(scope, safe='')}:{quote(id, safe='')}"


def _wait(
    limit: int, prev: int, cur: int, cost: int, weight: float, elapsed: float
) -> float | None:
    """Seconds until `cost` more fits in a counter's sliding minute (0 if it fits now, None
    never)."""
    if cost > limit:
        return None
    if prev * weight + cur + cost <= limit:
        return 0.0
    if cur + cost <= limit:  # fits once enough of the previous minute has slid out
        wait = WINDOW * (1 - (limit - cur - cost) / prev) - elapsed
    else:  # the current minute must become the previous one and slide out in turn
        wait = (WINDOW - elapsed) + WINDOW * (1 - (limit - cost) / cur)
    return max(wait, 0.001)  # float rounding must not turn a refusal into "retry now"


def _duration(seconds: float) -> str:
    """OpenAI's reset format: "20ms", "6s", "1m30s"."""
    if 0 < seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, secs = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


_HEADERS = {
    kind: (
        f"x-ratelimit-limit-{kind}",
        f"x-ratelimit-remaining-{kind}",
        f"x-ratelimit-reset-{kind}",
    )
    for kind in ("requests", "tokens")
}


def _headers(
    plan: _Plan, counts: Sequence[tuple[int, int]], weight: float, elapsed: float
) -> list[tuple[str, str]]:
    """For each kind, the counter with the fewest remaining (its limit, remaining, reset).

    The counts given are those after this request; reset is the time until the counter is
    fully replenished (OpenAI's definition)."""
    out = []
    counters = plan.counters
    for (limit_name, remaining_name, reset_name), mine in plan.kinds:
        tight, least = mine[0], 0
        for i in mine:
            prev, cur = counts[i]
            left = counters[i].limit - prev * weight - cur
            left = math.floor(left) if left > 0 else 0
            if i == mine[0] or (left, counters[i].limit) < (least, counters[tight].limit):
                tight, least = i, left
        c, (prev, cur) = counters[tight], counts[tight]
        reset = _wait(c.limit, prev, cur, c.limit, weight, elapsed) or 0.0
        out += [
            (limit_name, c.limit_text),
            (remaining_name, str(least)),
            (reset_name, _duration(reset)),
        ]
    return out


def _refusal(seen: list[_Seen], weight: float, elapsed: float) -> tuple[float | None, str]:
    """Retry-After (None if the request can never fit) and the message, from the worst limit."""
    worst: tuple[float, _Counter] | None = None
    for c, prev, cur, cost in seen:
        wait = _wait(c.limit, prev, cur, cost, weight, elapsed)
        who = f"{c.spec.scope} '{c.spec.id}'"
        if wait is None:
            limit = f"{c.limit} {c.kind} per minute"
            return None, f"request of {cost} tokens exceeds the limit of {who} ({limit})"
        if wait > 0 and (worst is None or wait > worst[0]):
            worst = (wait, c)
    assert worst is not None, "a refusal has at least one full counter"
    wait, c = worst
    who = f"{c.spec.scope} '{c.spec.id}'"
    return wait, f"rate limit of {who} reached ({c.limit} {c.kind} per minute)"


@dataclass(slots=True)  # made per request: an unfrozen one costs less to make
class RateCheck:
    """One request's counters and costs, ready for the state, and how to read the counts it
    returns."""

    plan: _Plan
    costs: list[int]
    weight: float  # of the previous minute
    elapsed: float  # seconds into the current minute
    now: float
    window: int  # the current minute's number

    @property
    def wire(self) -> tuple[WindowCounter, ...]:
        return self.plan.wire

    def decide(self, allowed: bool, counts: Sequence[tuple[int, int]]) -> Decision:
        """The decision, from the counts as read before the increment."""
        if allowed:
            after = [
                (prev, cur + cost) for (prev, cur), cost in zip(counts, self.costs, strict=True)
            ]
            return Decision(True, None, _headers(self.plan, after, self.weight, self.elapsed))
        headers = _headers(self.plan, counts, self.weight, self.elapsed)
        seen = [
            (c, prev, cur, cost)
            for c, cost, (prev, cur) in zip(self.plan.counters, self.costs, counts, strict=True)
        ]
        retry_after, reason = _refusal(seen, self.weight, self.elapsed)
        return Decision(False, retry_after, headers, reason)


@dataclass(slots=True)  # made per request: an unfrozen one costs less to make
class Tokens:
    """Tokens to count after a call on the current minute's token counters `keys`."""

    keys: list[str]
    count: int


class RateLimiter:
    """Checks and counts requests and tokens per minute against a `SharedState`.

    `fail_open`: when the state is unreachable, admit (counted in `failed_open`) instead of
    refusing with 503. `clock` returns epoch seconds; replicas sharing Redis must agree on it
    (NTP), since the minute a request counts in is the caller's.
    """

    def __init__(
        self,
        state: SharedState,
        *,
        fail_open: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._fail_open = fail_open
        self._clock = clock
        self.failed_open = 0  # requests admitted unchecked because the state was unreachable
        self.lost_updates = 0  # token counts that could not be recorded

    def prepare(self, specs: Sequence[LimitSpec], *, tokens: int) -> RateCheck | None:
        """The counters of one request of `tokens` estimated prompt tokens (None: no limit)."""
        now = self._clock()
        window = int(now // WINDOW)
        plan = _plan(tuple(specs), window)
        if plan is None:
            return None
        tokens = max(0, tokens)
        costs = [1 if c.kind == "requests" else tokens for c in plan.counters]
        elapsed = now - window * WINDOW
        return RateCheck(plan, costs, 1 - elapsed / WINDOW, elapsed, now, window)

    async def check(self, specs: Sequence[LimitSpec], *, tokens: int) -> Decision:
        """Admit one request of `tokens` estimated prompt tokens on every spec, or on none.

        Raises `LimitError` (503) when the state is unreachable and the limiter fails closed.
        """
        check = self.prepare(specs, tokens=tokens)
        if check is None:
            return Decision(True, None, [])
        try:
            admitted = await self._state.admit(
                check.wire, check.costs, None, weight=check.weight, ttl=COUNTER_TTL, now=check.now
            )
        except StateUnavailable:
            return self._unavailable()
        return check.decide(admitted.allowed, admitted.counts)

    def _unavailable(self) -> Decision:
        if not self._fail_open:
            raise unreachable_error()
        self.failed_open += 1
        logger.warning("rate limits not checked: shared state unreachable (failing open)")
        return Decision(True, None, [])

    def tokens(
        self, specs: Sequence[LimitSpec], count: int, *, check: RateCheck | None = None
    ) -> Tokens | None:
        """What counting `count` output tokens on every spec with a tpm takes (None: nothing).
        `check`: the request's admission, whose counters serve if still in the same minute."""
        if count <= 0:
            return None
        window = int(self._clock() // WINDOW)
        if check is not None and check.window == window:
            plan: _Plan | None = check.plan
        else:
            plan = _plan(tuple(specs), window)
        return Tokens(plan.token_keys, count) if plan is not None and plan.token_keys else None

    async def add_tokens(self, specs: Sequence[LimitSpec], tokens: int) -> None:
        """Count `tokens` more (the completion's, after the call) on every spec with a tpm.

        Never raises: the response is already made, so an unreachable state only loses this
        count (logged, and counted in `lost_updates`). `BudgetLedger.settle(..., tokens=)` does
        the same in the budgets' settlement."""
        count = self.tokens(specs, tokens)
        if count is None:
            return
        try:
            await self._state.settle(
                count.keys, count.count, None, 0, ttl=COUNTER_TTL, now=self._clock()
            )
        except StateUnavailable:
            self.lost_updates += 1
            logger.warning("%d tokens not counted: shared state unreachable", tokens)
