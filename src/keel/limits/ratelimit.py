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
atomic step, all or nothing: a request refused by one limit consumes none of the others.
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

__all__ = ["Decision", "LimitError", "LimitSpec", "RateLimiter"]

logger = logging.getLogger("keel.limits")

WINDOW = 60.0  # seconds: limits are per minute
_TTL = 120  # a counter lives while it can still be the previous minute


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
    cost: int
    prev: int = 0
    cur: int = 0


def _key(spec: LimitSpec, kind: str, window: int) -> str:
    return f"rl:{subject_key(spec.scope, spec.id)}:{kind[0]}:{window}"


@functools.lru_cache(maxsize=4096)
def subject_key(scope: str, id: str) -> str:
    # Quoted so an id holding ':' cannot name another scope's counter (cached: the same few
    # subjects come back on every request).
    return f"{quote(scope, safe='')}:{quote(id, safe='')}"


def _wait(c: _Counter, cost: int, weight: float, elapsed: float) -> float | None:
    """Seconds until `cost` more fits in `c`'s sliding minute (0 if it fits now, None never)."""
    if cost > c.limit:
        return None
    if c.prev * weight + c.cur + cost <= c.limit:
        return 0.0
    if c.cur + cost <= c.limit:  # fits once enough of the previous minute has slid out
        wait = WINDOW * (1 - (c.limit - c.cur - cost) / c.prev) - elapsed
    else:  # the current minute must become the previous one and slide out in turn
        wait = (WINDOW - elapsed) + WINDOW * (1 - (c.limit - cost) / c.cur)
    return max(wait, 0.001)  # float rounding must not turn a refusal into "retry now"


def _duration(seconds: float) -> str:
    """OpenAI's reset format: "20ms", "6s", "1m30s"."""
    if 0 < seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, secs = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _headers(counters: list[_Counter], weight: float, elapsed: float) -> list[tuple[str, str]]:
    """For each kind, the counter with the fewest remaining (its limit, remaining, reset).

    The counts given are those after this request; reset is the time until the counter is
    fully replenished (OpenAI's definition)."""
    out = []
    for kind in ("requests", "tokens"):
        mine = [c for c in counters if c.kind == kind]
        if not mine:
            continue
        remaining = {id(c): max(0, math.floor(c.limit - c.prev * weight - c.cur)) for c in mine}
        tight = min(mine, key=lambda c: (remaining[id(c)], c.limit))
        reset = _wait(tight, tight.limit, weight, elapsed) or 0.0
        out += [
            (f"x-ratelimit-limit-{kind}", str(tight.limit)),
            (f"x-ratelimit-remaining-{kind}", str(remaining[id(tight)])),
            (f"x-ratelimit-reset-{kind}", _duration(reset)),
        ]
    return out


def _refusal(counters: list[_Counter], weight: float, elapsed: float) -> tuple[float | None, str]:
    """Retry-After (None if the request can never fit) and the message, from the worst limit."""
    worst: tuple[float, _Counter] | None = None
    for c in counters:
        wait = _wait(c, c.cost, weight, elapsed)
        who = f"{c.spec.scope} '{c.spec.id}'"
        if wait is None:
            limit = f"{c.limit} {c.kind} per minute"
            return None, f"request of {c.cost} tokens exceeds the limit of {who} ({limit})"
        if wait > 0 and (worst is None or wait > worst[0]):
            worst = (wait, c)
    assert worst is not None, "a refusal has at least one full counter"
    wait, c = worst
    who = f"{c.spec.scope} '{c.spec.id}'"
    return wait, f"rate limit of {who} reached ({c.limit} {c.kind} per minute)"


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

    def _window(self) -> tuple[float, int, float, float]:
        now = self._clock()
        window = int(now // WINDOW)
        elapsed = now - window * WINDOW
        return now, window, elapsed, 1 - elapsed / WINDOW

    async def check(self, specs: Sequence[LimitSpec], *, tokens: int) -> Decision:
        """Admit one request of `tokens` estimated prompt tokens on every spec, or on none.

        Raises `LimitError` (503) when the state is unreachable and the limiter fails closed.
        """
        tokens = max(0, tokens)
        now, window, elapsed, weight = self._window()
        counters = [
            _Counter(spec, kind, limit, cost)
            for spec in dict.fromkeys(specs)  # a spec given twice counts once
            for kind, limit, cost in (("requests", spec.rpm, 1), ("tokens", spec.tpm, tokens))
            if limit is not None
        ]
        if not counters:
            return Decision(True, None, [])
        wire = [
            WindowCounter(
                _key(c.spec, c.kind, window), _key(c.spec, c.kind, window - 1), c.limit, c.cost
            )
            for c in counters
        ]
        try:
            allowed, counts = await self._state.window_hit(wire, weight=weight, ttl=_TTL, now=now)
        except StateUnavailable:
            return self._unavailable()
        seen = [
            _Counter(c.spec, c.kind, c.limit, c.cost, prev, cur + (c.cost if allowed else 0))
            for c, (prev, cur) in zip(counters, counts, strict=True)
        ]
        headers = _headers(seen, weight, elapsed)
        if allowed:
            return Decision(True, None, headers)
        before = [
            _Counter(c.spec, c.kind, c.limit, c.cost, prev, cur)
            for c, (prev, cur) in zip(counters, counts, strict=True)
        ]
        retry_after, reason = _refusal(before, weight, elapsed)
        return Decision(False, retry_after, headers, reason)

    def _unavailable(self) -> Decision:
        if not self._fail_open:
            raise unreachable_error()
        self.failed_open += 1
        logger.warning("rate limits not checked: shared state unreachable (failing open)")
        return Decision(True, None, [])

    async def add_tokens(self, specs: Sequence[LimitSpec], tokens: int) -> None:
        """Count `tokens` more (the completion's, after the call) on every spec with a tpm.

        Never raises: the response is already made, so an unreachable state only loses this
        count (logged, and counted in `lost_updates`)."""
        now, window, _, _ = self._window()
        keys = [_key(s, "tokens", window) for s in dict.fromkeys(specs) if s.tpm is not None]
        if not keys or tokens <= 0:
            return
        try:
            await self._state.window_add(keys, tokens, ttl=_TTL, now=now)
        except StateUnavailable:
            self.lost_updates += 1
            logger.warning("%d tokens not counted: shared state unreachable", tokens)
