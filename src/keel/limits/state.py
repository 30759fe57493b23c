"""Shared state for rate limits and budgets: one protocol, in-process and Redis implementations.

Every operation is one atomic check-and-update. `RedisState` runs a Lua script per operation, so
replicas sharing one Redis see one set of counters (a limit is global, not per pod); the scripts
called in one event-loop turn travel in one pipeline.
`MemoryState` does the same steps in plain Python without awaiting in between, which makes each
operation atomic with respect to the event loop — correct for one process only.

Keys are built by the limiters; the state only prefixes them. Money is integer micro-USD.
When Redis cannot be reached the Redis state raises `StateUnavailable`; the limiters decide
whether that fails closed or open.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from redis.retry import Retry

from keel.limits import lua

__all__ = [
    "BudgetSlot",
    "Crossing",
    "MemoryState",
    "RedisState",
    "ReserveResult",
    "SharedState",
    "StateUnavailable",
    "WindowCounter",
]

_SWEEP_EVERY = 1024  # MemoryState drops expired entries once per this many writes


class StateUnavailable(Exception):
    """The shared state (Redis) could not be read or written."""


@dataclass(frozen=True, slots=True)
class WindowCounter:
    """One per-minute counter: its current and previous minute keys, its limit, this cost."""

    current: str
    previous: str
    limit: int
    cost: int


@dataclass(frozen=True, slots=True)
class BudgetSlot:
    """One budget for one period: its key, limit (micro-USD) and expiry (None: never)."""

    key: str
    limit: int
    expires_at: float | None

    def ttl(self, now: float) -> int:
        """Seconds the key should live from `now` (0: no expiry), as Redis EXPIRE takes."""
        return 0 if self.expires_at is None else max(1, math.ceil(self.expires_at - now))


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """`failed` is the index of the first budget that could not take the amount."""

    allowed: bool
    failed: int | None = None
    spent: int = 0
    reserved: int = 0
    first_refusal: bool = False  # the first refusal this period (the 100% notice)


@dataclass(frozen=True, slots=True)
class Crossing:
    """Budget `index` reached `percent` of its limit for the first time this period."""

    index: int
    percent: int
    spent: int


class SharedState(Protocol):
    """The atomic operations the rate limiter and the budget ledger need."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def window_hit(
        self, counters: Sequence[WindowCounter], *, weight: float, ttl: int, now: float
    ) -> tuple[bool, list[tuple[int, int]]]:
        """Admit `cost` on every counter or on none; return (allowed, [(previous, current)])
        as read before the increment. A counter admits when previous * weight + current + cost
        <= limit."""
        ...

    async def window_add(
        self, keys: Sequence[str], amount: int, *, ttl: int, now: float
    ) -> None: ...

    async def budget_reserve(
        self, slots: Sequence[BudgetSlot], *, rid: str, amount: int, now: float, hold_until: float
    ) -> ReserveResult: ...

    async def budget_settle(
        self, slots: Sequence[BudgetSlot], *, rid: str, charge: int, now: float
    ) -> list[Crossing]: ...

    async def budget_read(self, slot: BudgetSlot, *, now: float) -> tuple[int, int]: ...


@dataclass(slots=True)
class _Budget:
    spent: int = 0
    reserved: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (amount, until)
    flags: set[int] = field(default_factory=set)  # thresholds already noticed
    expires_at: float | None = None

    def purge(self, now: float) -> None:
        for rid, (amount, until) in list(self.holds.items()):
            if until <= now:
                self.reserved -= amount
                del self.holds[rid]


class MemoryState:
    """One process's state in dicts. Entries expire like their Redis keys would."""

    def __init__(self) -> None:
        self._counters: dict[str, tuple[int, float]] = {}  # key -> (count, expires_at)
        self._budgets: dict[str, _Budget] = {}
        self._writes = 0
        self._now = 0.0  # latest time seen, for sweeping

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _count(self, key: str) -> int:
        count, until = self._counters.get(key, (0, math.inf))
        return count if until > self._now else 0

    def _incr(self, key: str, amount: int, ttl: int) -> None:
        self._counters[key] = (self._count(key) + amount, self._now + ttl)
        self._wrote()

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            now = self._now
            self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
            self._budgets = {
                k: b for k, b in self._budgets.items() if b.expires_at is None or b.expires_at > now
            }

    async def window_hit(
        self, counters: Sequence[WindowCounter], *, weight: float, ttl: int, now: float
    ) -> tuple[bool, list[tuple[int, int]]]:
        self._now = max(self._now, now)
        counts = [(self._count(c.previous), self._count(c.current)) for c in counters]
        allowed = all(
            prev * weight + cur + c.cost <= c.limit
            for c, (prev, cur) in zip(counters, counts, strict=True)
        )
        if allowed:
            for c in counters:
                self._incr(c.current, c.cost, ttl)
        return allowed, counts

    async def window_add(self, keys: Sequence[str], amount: int, *, ttl: int, now: float) -> None:
        self._now = max(self._now, now)
        for key in keys:
            self._incr(key, amount, ttl)

    def _budget(self, slot: BudgetSlot, now: float) -> _Budget:
        self._now = max(self._now, now)
        budget = self._budgets.get(slot.key)
        if budget is None or (budget.expires_at is not None and budget.expires_at <= now):
            budget = self._budgets[slot.key] = _Budget()
            self._wrote()
        budget.expires_at = slot.expires_at
        budget.purge(now)
        return budget

    async def budget_reserve(
        self, slots: Sequence[BudgetSlot], *, rid: str, amount: int, now: float, hold_until: float
    ) -> ReserveResult:
        budgets = [self._budget(slot, now) for slot in slots]
        for i, (slot, b) in enumerate(zip(slots, budgets, strict=True)):
            if b.spent + b.reserved + amount > slot.limit:
                first = 100 not in b.flags
                b.flags.add(100)
                return ReserveResult(False, i, b.spent, b.reserved, first)
        for b in budgets:
            b.reserved += amount
            b.holds[rid] = (amount, hold_until)
        return ReserveResult(True)

    async def budget_settle(
        self, slots: Sequence[BudgetSlot], *, rid: str, charge: int, now: float
    ) -> list[Crossing]:
        crossed = []
        for i, slot in enumerate(slots):
            b = self._budget(slot, now)
            held = b.holds.pop(rid, None)
            if held is not None:
                b.reserved -= held[0]
            b.spent += charge
            for pct in (80, 100):
                if b.spent * 100 >= slot.limit * pct and pct not in b.flags:
                    b.flags.add(pct)
                    crossed.append(Crossing(i, pct, b.spent))
        return crossed

    async def budget_read(self, slot: BudgetSlot, *, now: float) -> tuple[int, int]:
        b = self._budget(slot, now)
        return b.spent, b.reserved


def _unavailable(cause: BaseException) -> StateUnavailable:
    # The message names only the error class: a Redis URL may hold a password.
    error = StateUnavailable(f"redis unavailable ({type(cause).__name__})")
    error.__cause__ = cause
    return error


_Call = tuple[AsyncScript, list[str], list[Any], "asyncio.Future[Any]"]


class RedisState:
    """State in one Redis shared by every replica; each operation is one Lua script call.

    Timeouts are short (`timeout`, default 0.5 s) and a failed command is retried once at once
    (a pooled connection may be stale after a Redis restart), so a dead Redis costs a request
    about a second at most before `StateUnavailable`.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "keel:",
        timeout: float = 0.5,
        max_connections: int = 64,
    ) -> None:
        # A blocking pool bounds connections under load: excess callers wait briefly for one
        # rather than opening thousands of sockets.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout * 2,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self._redis = Redis.from_pool(pool)
        self._prefix = prefix
        self._queue: list[_Call] = []
        self._batches: set[asyncio.Future[None]] = set()
        self._hit = self._redis.register_script(lua.WINDOW_HIT)
        self._add = self._redis.register_script(lua.WINDOW_ADD)
        self._reserve = self._redis.register_script(lua.BUDGET_RESERVE)
        self._settle = self._redis.register_script(lua.BUDGET_SETTLE)
        self._read = self._redis.register_script(lua.BUDGET_READ)

    async def _call(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run one script; calls made in the same event-loop turn share one pipeline.

        Each script stays atomic on its own; batching only saves round trips and redis-py's
        per-command overhead, which dominates the cost of a check under load."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((script, [self._prefix + k for k in keys], args, future))
        if len(self._queue) == 1:
            asyncio.get_running_loop().call_soon(self._start_batch)
        return await future

    def _start_batch(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.ensure_future(self._run_batch(batch))
        self._batches.add(task)  # held so the task is not garbage-collected mid-flight
        task.add_done_callback(self._batches.discard)

    async def _run_batch(self, batch: list[_Call]) -> None:
        results: list[Any]
        try:
            results = await self._pipeline(batch)
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:  # Redis restarted or was flushed; only those calls did not run
                for script in {id(batch[i][0]): batch[i][0] for i in missing}.values():
                    await self._redis.script_load(script.script)
                again = await self._pipeline([batch[i] for i in missing])
                for i, result in zip(missing, again, strict=True):
                    results[i] = result
        except Exception as exc:  # every caller must get an answer, whatever went wrong
            results = [exc] * len(batch)
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller was cancelled
                continue
            if isinstance(result, (RedisError, OSError, TimeoutError)):
                future.set_exception(_unavailable(result))
            elif isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        await asyncio.gather(*self._batches, return_exceptions=True)
        await self._redis.aclose()

    async def window_hit(
        self, counters: Sequence[WindowCounter], *, weight: float, ttl: int, now: float
    ) -> tuple[bool, list[tuple[int, int]]]:
        keys = [k for c in counters for k in (c.current, c.previous)]
        args: list[Any] = [repr(weight), ttl]
        args += [v for c in counters for v in (c.limit, c.cost)]
        out = await self._call(self._hit, keys, args)
        counts = [(int(out[i]), int(out[i + 1])) for i in range(1, len(out), 2)]
        return out[0] == 1, counts

    async def window_add(self, keys: Sequence[str], amount: int, *, ttl: int, now: float) -> None:
        await self._call(self._add, list(keys), [amount, ttl])

    @staticmethod
    def _budget_keys(slots: Sequence[BudgetSlot]) -> list[str]:
        return [k for s in slots for k in (s.key, s.key + ":holds")]

    async def budget_reserve(
        self, slots: Sequence[BudgetSlot], *, rid: str, amount: int, now: float, hold_until: float
    ) -> ReserveResult:
        args: list[Any] = [repr(now), repr(hold_until), rid, amount]
        args += [v for s in slots for v in (s.limit, s.ttl(now))]
        out = await self._call(self._reserve, self._budget_keys(slots), args)
        if out[0] == 1:
            return ReserveResult(True)
        return ReserveResult(False, int(out[1]) - 1, int(out[2]), int(out[3]), out[4] == 1)

    async def budget_settle(
        self, slots: Sequence[BudgetSlot], *, rid: str, charge: int, now: float
    ) -> list[Crossing]:
        args: list[Any] = [rid, charge]
        args += [v for s in slots for v in (s.limit, s.ttl(now))]
        out = await self._call(self._settle, self._budget_keys(slots), args)
        return [
            Crossing(int(out[i]) - 1, int(out[i + 1]), int(out[i + 2]))
            for i in range(0, len(out), 3)
        ]

    async def budget_read(self, slot: BudgetSlot, *, now: float) -> tuple[int, int]:
        out = await self._call(self._read, self._budget_keys([slot]), [repr(now)])
        return int(out[0]), int(out[1])
