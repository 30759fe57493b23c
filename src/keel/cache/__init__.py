"""The response cache: exact and semantic, per tenant, in memory or in Redis. See docs/cache.md.

`Cache` is what the gateway calls: `lookup` before the provider call, `save` after a
successful answer. It owns the policy the backends do not: the `x-keel-cache` modes, the size
cap per entry, the semantic step, and failing open — a backend or embedding failure is logged
once per outage, counted, and answered as a miss; the cache never fails a request. After a
failure the backend is left alone for `retry_s` seconds, so a dead Redis costs one timeout,
not one per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from keel.cache.keys import (
    CACHE_HEADER,
    IGNORED_FIELDS,
    CacheConfig,
    CacheMode,
    SemanticConfig,
    normalise,
    parse_cache_config,
    parse_mode,
    request_key,
    tenant_of,
)
from keel.cache.replay import CollectingStream, ReplayStream, StreamCollector, usage_json
from keel.cache.semantic import (
    Embed,
    MemorySemanticIndex,
    RedisSemanticIndex,
    SemanticIndex,
    SemanticQuery,
    semantic_query,
    unit,
)
from keel.cache.store import (
    CacheBackend,
    CacheEntry,
    CacheHit,
    HitKind,
    MemoryCache,
    RedisCache,
)
from keel.providers.base import Usage

__all__ = [
    "CACHE_HEADER",
    "IGNORED_FIELDS",
    "Cache",
    "CacheBackend",
    "CacheConfig",
    "CacheEntry",
    "CacheHit",
    "CacheMode",
    "CacheStats",
    "CacheStatus",
    "CollectingStream",
    "Embed",
    "HitKind",
    "Lookup",
    "MemoryCache",
    "MemorySemanticIndex",
    "RedisCache",
    "RedisSemanticIndex",
    "ReplayStream",
    "SemanticConfig",
    "SemanticIndex",
    "StreamCollector",
    "normalise",
    "parse_cache_config",
    "parse_mode",
    "request_key",
    "tenant_of",
    "usage_json",
]

logger = logging.getLogger("keel.cache")

# The `x-keel-cache` response header and the record's `cache_status`.
CacheStatus = Literal["hit", "semantic-hit", "miss", "bypass", "refresh"]


@dataclass(slots=True)
class CacheStats:
    """Counters since start, for /metrics."""

    hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    bypasses: int = 0
    refreshes: int = 0
    stores: int = 0
    too_large: int = 0  # answers over max_entry_bytes, not stored
    errors: int = 0  # backend or embedding failures, each answered as a miss
    cost_saved_usd: float = 0.0


@dataclass(slots=True)
class Lookup:
    """One request's cache decision, carried from `lookup` to `save`."""

    status: CacheStatus
    hit: CacheHit | None
    key: str
    tenant: str
    mode: CacheMode
    semantic: SemanticQuery | None = None
    vector: list[float] | None = field(default=None, repr=False)


class Cache:
    """Exact cache in `backend`, optional semantic index on top; see the module docstring."""

    def __init__(
        self,
        backend: CacheBackend,
        *,
        ttl_s: int,
        max_entry_bytes: int,
        index: SemanticIndex | None = None,
        embed: Embed | None = None,
        threshold: float = 0.95,
        embed_timeout_s: float = 2.0,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.ttl_s = ttl_s
        self.max_entry_bytes = max_entry_bytes
        self.index = index if embed is not None else None
        self.embed = embed
        self.threshold = threshold
        self.embed_timeout_s = embed_timeout_s
        self.retry_s = retry_s
        self.stats = CacheStats()
        self._clock = clock
        self._down_until = 0.0

    @classmethod
    def from_config(
        cls,
        config: CacheConfig,
        *,
        redis_url: str | None,
        embed: Embed | None = None,
        prefix: str = "keel:cache:",
    ) -> Cache | None:
        """The cache `config` describes (None when it is off): in Redis when `redis_url` is
        set, else in memory. `embed` is needed for the semantic cache and ignored without it."""
        if not config.enabled:
            return None
        sem = config.semantic
        backend: CacheBackend
        index: SemanticIndex | None = None
        if redis_url:
            redis_backend = RedisCache(redis_url, prefix=prefix)
            backend = redis_backend
            if sem.enabled:
                index = RedisSemanticIndex(
                    redis_backend.redis, prefix=prefix, max_per_scope=sem.max_per_scope
                )
        else:
            backend = MemoryCache(config.max_entries, config.max_bytes)
            if sem.enabled:
                index = MemorySemanticIndex(sem.max_per_scope, sem.max_scopes)
        return cls(
            backend,
            ttl_s=config.ttl_s,
            max_entry_bytes=config.max_entry_bytes,
            index=index,
            embed=embed if sem.enabled else None,
            threshold=sem.threshold,
            embed_timeout_s=sem.embed_timeout_s,
        )

    # -- failing open ------------------------------------------------------------------------

    def _available(self) -> bool:
        return self._down_until == 0.0 or self._clock() >= self._down_until

    def _failed(self, what: str, exc: BaseException) -> None:
        self.stats.errors += 1
        if self._down_until == 0.0:  # the first failure of an outage; later ones are counted
            # Only the error's class: a Redis error message may quote the URL and its password.
            logger.warning(
                "response cache unavailable (%s failed: %s); serving without it for now",
                what,
                type(exc).__name__,
            )
        self._down_until = self._clock() + self.retry_s

    def _recovered(self) -> None:
        if self._down_until != 0.0:
            logger.info("response cache available again")
            self._down_until = 0.0

    # -- lookup ------------------------------------------------------------------------------

    async def lookup(
        self, body: Mapping[str, Any], *, tenant: str, model_key: str, mode: CacheMode
    ) -> Lookup:
        """Look `body` up for `tenant` (exact first, then semantic). Never raises on a cache
        failure; `tenant` and `model_key` have no default on purpose."""
        key = request_key(body, tenant=tenant, model_key=model_key)
        if mode == "bypass":
            self.stats.bypasses += 1
            return Lookup("bypass", None, key, tenant, mode)
        query = None
        if self.index is not None:
            query = semantic_query(body, tenant=tenant, model_key=model_key)
        result = Lookup("refresh" if mode == "refresh" else "miss", None, key, tenant, mode, query)
        if mode == "refresh":
            self.stats.refreshes += 1
            return result
        if not self._available():
            self.stats.misses += 1
            return result
        hit = await self._exact(key, tenant)
        if hit is None and query is not None:
            hit = await self._semantic(result, query)
        if hit is None:
            self.stats.misses += 1
            return result
        result.hit = hit
        result.status = "hit" if hit.kind == "exact" else "semantic-hit"
        if hit.kind == "exact":
            self.stats.hits += 1
        else:
            self.stats.semantic_hits += 1
        self.stats.cost_saved_usd += hit.cost_saved_usd or 0.0
        return result

    async def _get(self, key: str, tenant: str) -> CacheEntry | None:
        try:
            entry = await self.backend.get(key)
        except Exception as exc:  # fail open, whatever the backend raised
            self._failed("read", exc)
            return None
        self._recovered()
        if entry is None or entry.tenant != tenant:
            return None
        return entry

    async def _exact(self, key: str, tenant: str) -> CacheHit | None:
        entry = await self._get(key, tenant)
        return None if entry is None else _hit(entry, "exact")

    async def _vector(self, lookup: Lookup, query: SemanticQuery) -> list[float] | None:
        if lookup.vector is not None or self.embed is None:
            return lookup.vector
        try:
            async with asyncio.timeout(self.embed_timeout_s):
                raw = await self.embed(query.text)
            lookup.vector = unit([float(v) for v in raw])
        except Exception as exc:  # an embedding failure or timeout is only a miss
            self.stats.errors += 1
            logger.debug("semantic cache: embedding failed (%s)", type(exc).__name__)
            return None
        return lookup.vector

    async def _semantic(self, lookup: Lookup, query: SemanticQuery) -> CacheHit | None:
        vector = await self._vector(lookup, query)
        if vector is None or self.index is None:
            return None
        try:
            matches = await self.index.search(query.scope, vector, threshold=self.threshold)
        except Exception as exc:
            self._failed("semantic search", exc)
            return None
        for similarity, key in matches:
            entry = await self._get(key, lookup.tenant)
            if entry is not None:
                return _hit(entry, "semantic", similarity)
        return None

    # -- save --------------------------------------------------------------------------------

    async def save(
        self,
        lookup: Lookup,
        response: bytes,
        *,
        usage: Usage | None,
        served_model: str | None,
        provider: str | None,
        cost_usd: float | None,
    ) -> bool:
        """Store a successful answer for `lookup`'s request; True if stored. Does nothing for
        a bypass or a hit. Call it after the answer went out: it may embed (semantic)."""
        if lookup.mode == "bypass" or lookup.hit is not None:
            return False
        if len(response) > self.max_entry_bytes:
            self.stats.too_large += 1
            return False
        if not self._available():
            return False
        entry = CacheEntry(
            response, usage, served_model, provider, cost_usd, self._clock(), lookup.tenant
        )
        try:
            await self.backend.put(lookup.key, entry, self.ttl_s)
        except Exception as exc:
            self._failed("write", exc)
            return False
        self._recovered()
        self.stats.stores += 1
        if lookup.semantic is not None and self.index is not None:
            vector = await self._vector(lookup, lookup.semantic)
            if vector is not None:
                try:
                    await self.index.add(
                        lookup.semantic.scope, vector, lookup.key, ttl_s=self.ttl_s
                    )
                except Exception as exc:
                    self._failed("semantic write", exc)
        return True

    async def close(self) -> None:
        if self.index is not None:
            await self.index.close()
        await self.backend.close()


def _hit(entry: CacheEntry, kind: HitKind, similarity: float | None = None) -> CacheHit:
    return CacheHit(
        response_bytes=entry.response,
        usage=entry.usage,
        served_model=entry.served_model,
        provider=entry.provider,
        cost_saved_usd=entry.cost_usd,
        kind=kind,
        created_at=entry.created_at,
        similarity=similarity,
    )
