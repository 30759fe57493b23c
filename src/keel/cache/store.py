"""Exact-cache entries and where they live: one protocol, an in-process LRU and Redis.

`MemoryCache` is bounded twice, by entry count and by total bytes, and expires entries by an
injectable clock. `RedisCache` stores each entry as one string with `SET ... EX`, so replicas
sharing a Redis share the cache and Redis does the expiry.

Backends raise on failure; `keel.cache.Cache` turns every failure into a miss (caching fails
open). An entry records the tenant it was written for and a read for another tenant is a miss,
a second line of defence behind the tenant being part of every key.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from keel.providers.base import Usage

__all__ = [
    "CacheBackend",
    "CacheEntry",
    "CacheHit",
    "HitKind",
    "MemoryCache",
    "RedisCache",
    "decode_entry",
    "encode_entry",
    "redis_client",
]

HitKind = Literal["exact", "semantic"]

# Bookkeeping per memory entry besides the answer itself (dict slot, dataclass, floats).
_ENTRY_OVERHEAD = 256
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One cached answer: the chat.completion JSON as first sent, and what the call cost."""

    response: bytes  # OpenAI chat.completion JSON
    usage: Usage | None
    served_model: str | None
    provider: str | None  # the provider instance that answered
    cost_usd: float | None  # the original call's cost; None when it could not be priced
    created_at: float  # unix seconds
    tenant: str = ""  # set by `Cache.save`; a read for another tenant is refused

    @property
    def size(self) -> int:
        return len(self.response) + _ENTRY_OVERHEAD


@dataclass(frozen=True, slots=True)
class CacheHit:
    """What a lookup found. `cost_saved_usd` is the original call's cost (None: unknown)."""

    response_bytes: bytes
    usage: Usage | None
    served_model: str | None
    provider: str | None
    cost_saved_usd: float | None
    kind: HitKind
    created_at: float = 0.0
    similarity: float | None = None  # semantic hits: the cosine similarity of the match


def _usage_json(usage: Usage | None) -> dict[str, Any] | None:
    return None if usage is None else dataclasses.asdict(usage)


def _usage_of(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    names = {f.name for f in dataclasses.fields(Usage)}
    return Usage(**{k: v for k, v in raw.items() if k in names})


def encode_entry(entry: CacheEntry) -> bytes:
    """One header line of JSON, a newline, then the response bytes untouched.

    JSON text never holds a raw newline (orjson escapes them in strings), so the first newline
    ends the header and the answer is stored and returned without being parsed again."""
    head = {
        "v": _FORMAT,
        "tenant": entry.tenant,
        "usage": _usage_json(entry.usage),
        "served_model": entry.served_model,
        "provider": entry.provider,
        "cost_usd": entry.cost_usd,
        "created_at": entry.created_at,
    }
    return orjson.dumps(head) + b"\n" + entry.response


def decode_entry(raw: bytes) -> CacheEntry:
    """The inverse of `encode_entry`; raises ValueError on anything else."""
    head_raw, sep, response = raw.partition(b"\n")
    head = orjson.loads(head_raw)
    if not sep or not isinstance(head, dict) or head.get("v") != _FORMAT:
        raise ValueError("not a Keel cache entry of this format")
    cost = head.get("cost_usd")
    return CacheEntry(
        response=response,
        usage=_usage_of(head.get("usage")),
        served_model=head.get("served_model"),
        provider=head.get("provider"),
        cost_usd=float(cost) if isinstance(cost, (int, float)) else None,
        created_at=float(head.get("created_at") or 0.0),
        tenant=str(head.get("tenant") or ""),
    )


class CacheBackend(Protocol):
    """Where exact entries live. Methods may raise; the `Cache` facade treats that as a miss."""

    async def get(self, key: str) -> CacheEntry | None: ...

    async def put(self, key: str, entry: CacheEntry, ttl_s: int) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...


class MemoryCache:
    """A least-recently-used map bounded by `max_entries` and by `max_bytes` of answers.

    Plain dict work with no await in between, so each operation is atomic on the event loop.
    Expired entries go when read, and as the oldest when the bounds need room."""

    def __init__(
        self, max_entries: int, max_bytes: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._items: OrderedDict[str, tuple[CacheEntry, float]] = OrderedDict()
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def _drop(self, key: str) -> None:
        entry, _ = self._items.pop(key)
        self.bytes -= entry.size

    async def get(self, key: str) -> CacheEntry | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return item[0]

    async def put(self, key: str, entry: CacheEntry, ttl_s: int) -> None:
        if entry.size > self.max_bytes:
            return  # would evict everything else and still not fit
        if key in self._items:
            self._drop(key)
        self._items[key] = (entry, self._clock() + ttl_s)
        self.bytes += entry.size
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._items)))
            self.evictions += 1

    async def delete(self, key: str) -> None:
        if key in self._items:
            self._drop(key)

    async def close(self) -> None:
        self._items.clear()
        self.bytes = 0


def redis_client(url: str, *, timeout: float = 0.5, max_connections: int = 64) -> Redis:
    """A Redis client with short timeouts and a bounded pool, as `keel.limits` uses.

    A cache must cost little when Redis is slow or gone: commands time out after `timeout` and
    are retried once at once (a pooled connection may be stale after a Redis restart)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout * 2,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
    )
    return Redis.from_pool(pool)


class RedisCache:
    """Entries as Redis strings `<prefix>x:<key>` written with `SET ... EX ttl`."""

    def __init__(self, url: str, *, prefix: str = "keel:cache:", timeout: float = 0.5) -> None:
        # Public so the semantic index can share the connection pool.
        self.redis = redis_client(url, timeout=timeout)
        self.prefix = prefix
        self._prefix = prefix + "x:"

    async def get(self, key: str) -> CacheEntry | None:
        raw = await self.redis.get(self._prefix + key)
        if raw is None:
            return None
        if not isinstance(raw, bytes):  # only a client made with decode_responses=True
            raise TypeError("the cache's Redis client must return bytes")
        return decode_entry(raw)

    async def put(self, key: str, entry: CacheEntry, ttl_s: int) -> None:
        await self.redis.set(self._prefix + key, encode_entry(entry), ex=ttl_s)

    async def delete(self, key: str) -> None:
        await self.redis.delete(self._prefix + key)

    async def close(self) -> None:
        await self.redis.aclose()
