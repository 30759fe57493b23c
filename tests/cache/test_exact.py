"""The exact cache on both backends: hits, expiry, tenants, modes, bounds and failing open."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from keel.cache import Cache, CacheEntry, CacheHit, Lookup, MemoryCache, RedisCache
from keel.cache.store import decode_entry, encode_entry
from keel.providers.base import Usage
from tests.cache.conftest import MakeCache
from tests.clock import Clock

BODY = {"model": "smart", "messages": [{"role": "user", "content": "hello"}]}
ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi there"},
                "finish_reason": "stop",
            }
        ],
    }
)
USAGE = Usage(input_tokens=9, output_tokens=2, cached_tokens=0, reasoning_tokens=0)


async def save(cache: Cache, lookup: Lookup, answer: bytes = ANSWER) -> bool:
    return await cache.save(
        lookup, answer, usage=USAGE, served_model="gpt-4o", provider="openai", cost_usd=0.00042
    )


async def lookup(cache: Cache, tenant: str = "key:a", mode: str = "use", **body: object) -> Lookup:
    return await cache.lookup(
        {**BODY, **body},
        tenant=tenant,
        model_key="openai/gpt-4o",
        mode=mode,  # type: ignore[arg-type]
    )


async def test_miss_then_save_then_hit(make_cache: MakeCache, clock: Clock) -> None:
    cache = make_cache()
    first = await lookup(cache)
    assert (first.status, first.hit) == ("miss", None)
    assert await save(cache, first)
    second = await lookup(cache, stream=True)  # the stream flag is not part of the key
    assert second.status == "hit"
    assert second.hit is not None
    created = second.hit.created_at
    assert second.hit == CacheHit(
        response_bytes=ANSWER,
        usage=USAGE,
        served_model="gpt-4o",
        provider="openai",
        cost_saved_usd=0.00042,
        kind="exact",
        created_at=created,
    )
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.stores, stats.errors) == (1, 1, 1, 0)
    assert stats.cost_saved_usd == pytest.approx(0.00042)


async def test_unknown_cost_is_saved_as_unknown(make_cache: MakeCache) -> None:
    cache = make_cache()
    first = await lookup(cache)
    await cache.save(first, ANSWER, usage=None, served_model=None, provider=None, cost_usd=None)
    hit = (await lookup(cache)).hit
    assert hit is not None
    assert (hit.cost_saved_usd, hit.usage) == (None, None)


async def test_entries_expire(make_cache: MakeCache, clock: Clock) -> None:
    cache = make_cache(ttl_s=1)
    await save(cache, await lookup(cache))
    assert (await lookup(cache)).status == "hit"
    if make_cache.kind == "memory":  # type: ignore[attr-defined]
        clock.now += 1.01
    else:
        await asyncio.sleep(1.2)
    assert (await lookup(cache)).status == "miss"


async def test_tenant_b_never_gets_tenant_a_answer(make_cache: MakeCache) -> None:
    cache = make_cache()
    await save(cache, await lookup(cache, tenant="key:a"))
    for tenant in ("key:b", "customer:a", "anonymous"):
        assert (await lookup(cache, tenant=tenant)).status == "miss"
    assert (await lookup(cache, tenant="key:a")).status == "hit"


async def test_an_entry_written_for_another_tenant_is_refused(make_cache: MakeCache) -> None:
    # Defence in depth: even an entry found under this tenant's key is checked.
    cache = make_cache()
    probe = await lookup(cache, tenant="key:b")
    entry = CacheEntry(ANSWER, USAGE, "gpt-4o", "openai", 0.1, 1.0, tenant="key:a")
    await cache.backend.put(probe.key, entry, 60)
    assert (await lookup(cache, tenant="key:b")).status == "miss"


async def test_the_model_key_separates_entries(make_cache: MakeCache) -> None:
    cache = make_cache()
    await save(cache, await lookup(cache))
    other = await cache.lookup(BODY, tenant="key:a", model_key="anthropic/claude", mode="use")
    assert other.status == "miss"


async def test_bypass_neither_reads_nor_writes(make_cache: MakeCache) -> None:
    cache = make_cache()
    await save(cache, await lookup(cache))
    bypass = await lookup(cache, mode="bypass")
    assert (bypass.status, bypass.hit) == ("bypass", None)
    assert not await save(cache, bypass, b'{"other": true}')
    assert (await lookup(cache)).hit.response_bytes == ANSWER  # type: ignore[union-attr]


async def test_refresh_skips_the_read_and_overwrites(make_cache: MakeCache) -> None:
    cache = make_cache()
    await save(cache, await lookup(cache))
    refresh = await lookup(cache, mode="refresh")
    assert (refresh.status, refresh.hit) == ("refresh", None)
    assert await save(cache, refresh, b'{"fresh": true}')
    assert (await lookup(cache)).hit.response_bytes == b'{"fresh": true}'  # type: ignore[union-attr]


async def test_answers_over_the_entry_cap_are_not_stored(make_cache: MakeCache) -> None:
    cache = make_cache(max_entry_bytes=len(ANSWER) - 1)
    assert not await save(cache, await lookup(cache))
    assert cache.stats.too_large == 1
    assert (await lookup(cache)).status == "miss"


def test_entry_encoding_round_trips() -> None:
    entry = CacheEntry(ANSWER, USAGE, "gpt-4o", "openai", 0.5, 12.5, tenant="key:a")
    assert decode_entry(encode_entry(entry)) == entry
    with pytest.raises(ValueError):
        decode_entry(b'{"v": 99}\n{}')


# -- memory bounds -------------------------------------------------------------------------


def entry(size: int) -> CacheEntry:
    return CacheEntry(b"x" * size, None, None, None, None, 0.0)


async def test_memory_is_bounded_by_count_least_recently_used_first(clock: Clock) -> None:
    mem = MemoryCache(max_entries=2, max_bytes=1 << 20, clock=clock)
    await mem.put("a", entry(10), 60)
    await mem.put("b", entry(10), 60)
    assert await mem.get("a") is not None  # a is now the most recently used
    await mem.put("c", entry(10), 60)
    assert [k for k in "abc" if await mem.get(k) is not None] == ["a", "c"]
    assert (len(mem), mem.evictions) == (2, 1)


async def test_memory_is_bounded_by_bytes(clock: Clock) -> None:
    one = entry(1000).size
    mem = MemoryCache(max_entries=100, max_bytes=one * 3, clock=clock)
    for k in "abcd":
        await mem.put(k, entry(1000), 60)
    assert [k for k in "abcd" if await mem.get(k) is not None] == ["b", "c", "d"]
    assert mem.bytes == one * 3
    await mem.put("huge", entry(one * 4), 60)  # larger than the whole cache: not kept
    assert await mem.get("huge") is None
    assert len(mem) == 3
    await mem.put("b", entry(10), 60)  # replacing an entry releases its bytes
    assert mem.bytes == one * 2 + entry(10).size


# -- failing open --------------------------------------------------------------------------


async def test_a_dead_redis_is_a_miss_logged_once(
    dead_redis_url: str, caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    cache = Cache(
        RedisCache(dead_redis_url, timeout=0.2), ttl_s=60, max_entry_bytes=1 << 20, clock=clock
    )
    with caplog.at_level(logging.WARNING, logger="keel.cache"):
        first = await lookup(cache)
        assert first.status == "miss"
        assert not await save(cache, first)  # still inside the back-off: not even tried
        clock.now += 10  # the back-off is over: Redis is tried again, and fails again
        assert (await lookup(cache)).status == "miss"
    assert cache.stats.errors == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "127.0.0.1" not in warnings[0].getMessage()  # no URL (it may hold a password)
    await cache.close()


class Broken:
    """A backend that fails every call: what any unexpected backend error looks like."""

    async def get(self, key: str) -> CacheEntry | None:
        raise RuntimeError("boom")

    async def put(self, key: str, entry: CacheEntry, ttl_s: int) -> None:
        raise RuntimeError("boom")

    async def delete(self, key: str) -> None:
        raise RuntimeError("boom")

    async def close(self) -> None:
        return None


async def test_any_backend_error_is_a_miss_and_recovery_is_logged(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = Broken()
    cache = Cache(backend, ttl_s=60, max_entry_bytes=1 << 20, clock=clock, retry_s=5)  # type: ignore[arg-type]
    assert (await lookup(cache)).status == "miss"
    cache.backend = MemoryCache(10, 1 << 20, clock=clock)  # Redis is back
    clock.now += 5
    with caplog.at_level(logging.INFO, logger="keel.cache"):
        assert await save(cache, await lookup(cache))
    assert "available again" in caplog.text
    assert (await lookup(cache)).status == "hit"
