"""Circuit breakers, one per target (provider name + model).

closed -> open after `failure_threshold` retryable failures within `window_s`; open targets are
skipped; after `cooldown_s` the breaker is half-open and lets exactly one probe call through at a
time (others skip it as if open); a probe that succeeds closes it, one that fails opens it for
another cooldown. Only failures that are the target's fault count: the router reports a 400 as
neither success nor failure.

The board is process-local and bounded: configured targets are tracked for good, and breakers of
client-named `provider/model` targets are created on first failure and dropped (oldest closed one
first) beyond `max_breakers`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

__all__ = ["BreakerBoard", "BreakerState"]

Key = tuple[str, str]  # (provider name, model)


class BreakerState(IntEnum):
    """Values of the `keel_circuit_state` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(slots=True)
class _Breaker:
    failures: deque[float] = field(default_factory=deque)  # times of recent failures
    opened_at: float | None = None  # None while closed
    probe_since: float | None = None  # when the half-open probe in flight started
    pinned: bool = False  # a configured target: never evicted


class BreakerBoard:
    """The breakers of all targets. Not thread-safe: used from the event loop only."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        window_s: float = 30.0,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        max_breakers: int = 10_000,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._wall = wall
        self._max = max_breakers
        self._breakers: dict[Key, _Breaker] = {}

    def track(self, key: Key) -> None:
        """Keep a breaker for `key` from now on, so /metrics lists it while it is closed too."""
        self._breakers.setdefault(key, _Breaker()).pinned = True

    def state(self, key: Key) -> BreakerState:
        b = self._breakers.get(key)
        return BreakerState.CLOSED if b is None else self._state(b, self._clock())

    def _state(self, b: _Breaker, now: float) -> BreakerState:
        if b.opened_at is None:
            return BreakerState.CLOSED
        if now - b.opened_at < self.cooldown_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allow(self, key: Key) -> bool:
        """May a call go to `key` now? In half-open, True takes the single probe slot: the
        caller must then report `success`, `failure` or `release` for that call."""
        b = self._breakers.get(key)
        if b is None:
            return True
        now = self._clock()
        state = self._state(b, now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        # A probe that never reported (its task died oddly) frees the slot after a cooldown.
        if b.probe_since is not None and now - b.probe_since < self.cooldown_s:
            return False
        b.probe_since = now
        return True

    def success(self, key: Key) -> None:
        """A call to `key` succeeded: a half-open breaker closes; closed ones stay closed."""
        b = self._breakers.get(key)
        if b is None or b.opened_at is None:
            return
        if self._state(b, self._clock()) is BreakerState.HALF_OPEN:
            b.opened_at = b.probe_since = None
            b.failures.clear()

    def failure(self, key: Key) -> None:
        """A call to `key` failed through the target's fault (429, 5xx, timeout, connection)."""
        now = self._clock()
        b = self._breakers.get(key) or self._add(key)
        state = self._state(b, now)
        if state is BreakerState.OPEN:
            return  # a call that started before the breaker opened: already counted out
        if state is BreakerState.HALF_OPEN:
            b.opened_at, b.probe_since = now, None
            return
        b.failures.append(now)
        while b.failures and now - b.failures[0] > self.window_s:
            b.failures.popleft()
        if len(b.failures) >= self.failure_threshold:
            b.opened_at = now

    def release(self, key: Key) -> None:
        """A call to `key` ended with no verdict on the target (a 400, a cancelled request, the
        request's deadline): free the probe slot if it held it."""
        b = self._breakers.get(key)
        if b is not None:
            b.probe_since = None

    def reopens_in(self, key: Key) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        b = self._breakers.get(key)
        if b is None or b.opened_at is None:
            return 0.0
        return max(0.0, b.opened_at + self.cooldown_s - self._clock())

    def _add(self, key: Key) -> _Breaker:
        if len(self._breakers) >= self._max:
            now = self._clock()
            for old_key, old in self._breakers.items():
                if not old.pinned and self._state(old, now) is BreakerState.CLOSED:
                    del self._breakers[old_key]
                    break
        b = self._breakers[key] = _Breaker()
        return b

    def gauge(self) -> Iterator[tuple[str, str, float]]:
        """(provider, model, state value) for the `keel_circuit_state` gauge."""
        now = self._clock()
        for (provider, model), b in self._breakers.items():
            yield provider, model, float(self._state(b, now))

    def snapshot(self) -> list[dict[str, Any]]:
        """Every breaker, for the API: state, failures in the window, and when it opened and
        may next be probed (ISO 8601 UTC; None while closed)."""
        now = self._clock()
        offset = self._wall() - now
        out = []
        for (provider, model), b in self._breakers.items():
            state = self._state(b, now)
            failures = sum(1 for t in b.failures if now - t <= self.window_s)
            opened = b.opened_at
            out.append(
                {
                    "provider": provider,
                    "model": model,
                    "state": state.name.lower().replace("_", "-"),
                    "failures": failures,
                    "opened_at": None if opened is None else _iso(opened + offset),
                    "next_probe_at": None
                    if opened is None
                    else _iso(opened + self.cooldown_s + offset),
                }
            )
        return out


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
