"""Shared state for rate limits and budgets: one protocol, in-process and Redis implementations.

A request takes two operations, each one atomic check-and-update: `admit` (its rate-limit
counters and its budget reservation, all or nothing) and `settle` (its output tokens counted, its
reservation released, its actual cost charged). `RedisState` runs a Lua script per operation, so
replicas sharing one Redis see one set of counters (a limit is global, not per pod); the scripts
called in one event-loop turn leave in one write on one connection (`keel.limits.wire`).
`MemoryState` does the same steps in plain Python without awaiting in between, which makes each
operation atomic with respect to the event loop — correct for one process only.

Keys are built by the limiters; the state only prefixes them. Money is integer micro-USD.
When Redis cannot be reached the Redis state raises `StateUnavailable`; the limiters decide
whether that fails closed or open.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from keel.limits import lua
from keel.limits.wire import Link, LinkError, ReplyError, Script, pack

__all__ = [
    "Admitted",
    "BudgetRefusal",
    "BudgetSlot",
    "Crossing",
    "Hold",
    "MemoryState",
    "RedisState",
    "SharedState",
    "StateUnavailable",
    "WindowCounter",
]

_SWEEP_EVERY = 1024  # MemoryState drops expired entries once per this many writes
_MAX_HEADS = 1024  # RedisState's packed command heads kept


class StateUnavailable(Exception):
    """The shared state (Redis) could not be read or written."""


@dataclass(frozen=True, slots=True)
class WindowCounter:
    """One per-minute counter: its current and previous minute keys, and its limit."""

    current: str
    previous: str
    limit: int


@dataclass(frozen=True, slots=True)
class BudgetSlot:
    """One budget for one period: its key, limit (micro-USD) and expiry (None: never)."""

    key: str
    limit: int
    expires_at: float | None

    def ttl(self, now: float) -> int:
        """Seconds the key should live from `now` (0: no expiry), as Redis EXPIRE takes."""
        return 0 if self.expires_at is None else max(1, math.ceil(self.expires_at - now))


@dataclass(slots=True)  # made per request: an unfrozen one costs less to make
class Hold:
    """A reservation on a chain of budgets: `amount` micro-USD on every slot, under the id
    `rid`, released by its settlement or else at `until` (epoch seconds)."""

    slots: tuple[BudgetSlot, ...]
    rid: str
    amount: int
    until: float


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    """Budget `index` of a hold could not take the amount: its totals, and whether this is its
    first refusal this period (the 100% notice)."""

    index: int
    spent: int
    reserved: int
    first: bool


@dataclass(slots=True)  # made per request: an unfrozen one costs less to make
class Admitted:
    """What `admit` did: everything (`allowed`) or nothing. `counts` are the counters'
    (previous, current) as read before the increment; `refusal` names the budget that refused
    (None when a counter refused, or nothing did)."""

    allowed: bool
    counts: list[tuple[int, int]]
    refusal: BudgetRefusal | None = None


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

    async def admit(
        self,
        counters: Sequence[WindowCounter],
        costs: Sequence[int],
        hold: Hold | None,
        *,
        weight: float,
        ttl: int,
        now: float,
    ) -> Admitted:
        """Add its cost (`costs`, in order) to every counter and place `hold` on every one of
        its budgets, or do nothing. A counter admits when previous * weight + current + cost
        <= limit; a budget when spent + reserved + amount <= limit. Counters are checked
        first: when one refuses, the budgets are not looked at."""
        ...

    async def settle(
        self,
        keys: Sequence[str],
        tokens: int,
        hold: Hold | None,
        charge: int,
        *,
        ttl: int,
        now: float,
    ) -> list[Crossing]:
        """Add `tokens` to the counters `keys`; release `hold` (if it has not expired) and add
        `charge` to every one of its budgets. Returns the thresholds (80 and 100%) crossed."""
        ...

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

    def _budget(self, slot: BudgetSlot, now: float) -> _Budget:
        budget = self._budgets.get(slot.key)
        if budget is None or (budget.expires_at is not None and budget.expires_at <= now):
            budget = self._budgets[slot.key] = _Budget()
            self._wrote()
        budget.expires_at = slot.expires_at
        budget.purge(now)
        return budget

    async def admit(
        self,
        counters: Sequence[WindowCounter],
        costs: Sequence[int],
        hold: Hold | None,
        *,
        weight: float,
        ttl: int,
        now: float,
    ) -> Admitted:
        self._now = max(self._now, now)
        counts = [(self._count(c.previous), self._count(c.current)) for c in counters]
        if any(
            prev * weight + cur + cost > c.limit
            for c, cost, (prev, cur) in zip(counters, costs, counts, strict=True)
        ):
            return Admitted(False, counts)
        if hold is not None:
            budgets = [self._budget(slot, now) for slot in hold.slots]
            for i, (slot, b) in enumerate(zip(hold.slots, budgets, strict=True)):
                if b.spent + b.reserved + hold.amount > slot.limit:
                    first = 100 not in b.flags
                    b.flags.add(100)
                    return Admitted(False, counts, BudgetRefusal(i, b.spent, b.reserved, first))
            for b in budgets:
                b.reserved += hold.amount
                b.holds[hold.rid] = (hold.amount, hold.until)
        for c, cost in zip(counters, costs, strict=True):
            self._incr(c.current, cost, ttl)
        return Admitted(True, counts)

    async def settle(
        self,
        keys: Sequence[str],
        tokens: int,
        hold: Hold | None,
        charge: int,
        *,
        ttl: int,
        now: float,
    ) -> list[Crossing]:
        self._now = max(self._now, now)
        for key in keys:
            self._incr(key, tokens, ttl)
        crossed: list[Crossing] = []
        if hold is None:
            return crossed
        for i, slot in enumerate(hold.slots):
            b = self._budget(slot, now)
            held = b.holds.pop(hold.rid, None)
            if held is not None:
                b.reserved -= held[0]
            b.spent += charge
            for pct in (80, 100):
                if b.spent * 100 >= slot.limit * pct and pct not in b.flags:
                    b.flags.add(pct)
                    crossed.append(Crossing(i, pct, b.spent))
        return crossed

    async def budget_read(self, slot: BudgetSlot, *, now: float) -> tuple[int, int]:
        self._now = max(self._now, now)
        b = self._budget(slot, now)
        return b.spent, b.reserved


def _unavailable(cause: BaseException) -> StateUnavailable:
    # The message names only the error class: a Redis URL may hold a password.
    error = StateUnavailable(f"redis unavailable ({type(cause).__name__})")
    error.__cause__ = cause
    return error


class RedisState:
    """State in one Redis shared by every replica; each operation is one Lua script call.

    Timeouts are short (`timeout`, default 0.5 s): a dead or hung Redis costs a request about
    that long, at most twice, before `StateUnavailable`.

    A command's keys, limits and expiries are the same for every request of a caller in a
    minute; they are packed once (the "head", kept by the identity of the rate limiter's and
    the ledger's cached counters and slots) and each request adds one argument of its own.
    """

    def __init__(self, url: str, *, prefix: str = "keel:", timeout: float = 0.5) -> None:
        self._link = Link(url, timeout=timeout)
        self._prefix = prefix
        self._admit = Script(lua.ADMIT)
        self._settle = Script(lua.SETTLE)
        self._read = Script(lua.BUDGET_READ)
        self._heads: dict[tuple[int, ...], tuple[object, object, bytes]] = {}

    async def _run(self, script: Script, command: bytes) -> Any:
        try:
            return await self._link.call(command, script)
        except (LinkError, ReplyError) as exc:
            raise _unavailable(exc) from exc

    async def ping(self) -> None:
        try:
            await self._link.call(pack((b"PING",)))
        except (LinkError, ReplyError) as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        await self._link.close()

    def _head(
        self,
        script: Script,
        counters: Sequence[Any],
        slots: Sequence[BudgetSlot],
        ttl: int,
        keys: Callable[[], list[str]],
        args: Callable[[], list[Any]],
    ) -> bytes:
        """The command of `script` but its last argument, packed once per (counters, slots)."""
        key = (id(script), id(counters), id(slots), ttl)
        hit = self._heads.get(key)
        if hit is not None and hit[0] is counters and hit[1] is slots:
            return hit[2]
        names = keys() + [self._prefix + k for s in slots for k in (s.key, s.key + ":holds")]
        limits = [v for s in slots for v in (s.limit, s.expires_at or 0)]
        # Packed with an empty last argument, cut off again: the array counts it already.
        head = script.command(names, [*args(), *limits, b""])[: -len(b"$0\r\n\r\n")]
        if len(self._heads) >= _MAX_HEADS:  # callers come and go; the live ones come back
            self._heads.clear()
        self._heads[key] = (counters, slots, head)  # held: their ids cannot be reused
        return head

    async def admit(
        self,
        counters: Sequence[WindowCounter],
        costs: Sequence[int],
        hold: Hold | None,
        *,
        weight: float,
        ttl: int,
        now: float,
    ) -> Admitted:
        p, n = self._prefix, len(counters)
        head = self._head(
            self._admit,
            counters,
            hold.slots if hold is not None else (),
            ttl,
            lambda: [k for c in counters for k in (p + c.current, p + c.previous)],
            lambda: [n, ttl, *(c.limit for c in counters)],
        )
        held = f"{hold.until!r} {hold.rid} {hold.amount}" if hold is not None else f"{now!r} - 0"
        own = f"{weight!r} {now!r} {held} {' '.join(map(str, costs))}".encode()
        out = await self._run(self._admit, b"%b$%d\r\n%b\r\n" % (head, len(own), own))
        counts = list(zip(out[1 : 2 * n + 1 : 2], out[2 : 2 * n + 2 : 2], strict=True))
        if out[0] == 1:
            return Admitted(True, counts)
        if out[0] == 0:
            return Admitted(False, counts)
        index, spent, reserved, first = out[2 * n + 1 :]
        return Admitted(False, counts, BudgetRefusal(index - 1, spent, reserved, first == 1))

    async def settle(
        self,
        keys: Sequence[str],
        tokens: int,
        hold: Hold | None,
        charge: int,
        *,
        ttl: int,
        now: float,
    ) -> list[Crossing]:
        p = self._prefix
        head = self._head(
            self._settle,
            keys,
            hold.slots if hold is not None else (),
            ttl,
            lambda: [p + k for k in keys],
            lambda: [len(keys), ttl],
        )
        own = f"{tokens} {hold.rid if hold is not None else '-'} {charge} {now!r}".encode()
        out = await self._run(self._settle, b"%b$%d\r\n%b\r\n" % (head, len(own), own))
        return [Crossing(out[i] - 1, out[i + 1], out[i + 2]) for i in range(0, len(out), 3)]

    async def budget_read(self, slot: BudgetSlot, *, now: float) -> tuple[int, int]:
        keys = [self._prefix + slot.key, self._prefix + slot.key + ":holds"]
        spent, reserved = await self._run(self._read, self._read.command(keys, [now]))
        return int(spent), int(reserved)
