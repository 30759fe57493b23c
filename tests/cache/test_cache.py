"""Building the cache from config, and the package's public surface."""

from __future__ import annotations

import keel.cache
from keel.cache import (
    Cache,
    MemoryCache,
    MemorySemanticIndex,
    RedisCache,
    RedisSemanticIndex,
    keys,
    parse_cache_config,
    replay,
    semantic,
    store,
)
from tests.cache.conftest import vectors


async def embed_nothing(text: str) -> list[float]:
    return [1.0]


def test_off_by_default() -> None:
    assert Cache.from_config(parse_cache_config(None), redis_url=None) is None


async def test_memory_without_redis_and_semantic_only_with_an_embedder() -> None:
    config = parse_cache_config(
        {
            "enabled": True,
            "max_entries": 7,
            "semantic": {"enabled": True, "embedding_model": "embed", "threshold": 0.9},
        }
    )
    cache = Cache.from_config(config, redis_url=None, embed=embed_nothing)
    assert cache is not None
    assert isinstance(cache.backend, MemoryCache)
    assert cache.backend.max_entries == 7
    assert isinstance(cache.index, MemorySemanticIndex)
    assert cache.threshold == 0.9
    no_embed = Cache.from_config(config, redis_url=None)
    assert no_embed is not None and no_embed.index is None
    await cache.close()


async def test_redis_when_a_url_is_set(redis_url: str, prefix: str) -> None:
    embed, _ = vectors({})
    config = parse_cache_config(
        {"enabled": True, "semantic": {"enabled": True, "embedding_model": "embed"}}
    )
    cache = Cache.from_config(config, redis_url=redis_url, embed=embed, prefix=prefix)
    assert cache is not None
    assert isinstance(cache.backend, RedisCache)
    assert isinstance(cache.index, RedisSemanticIndex)
    assert cache.index.redis is cache.backend.redis  # one connection pool
    first = await cache.lookup(
        {"messages": [{"role": "user", "content": "hi"}]}, tenant="t", model_key="m", mode="use"
    )
    await cache.save(first, b"{}", usage=None, served_model=None, provider=None, cost_usd=None)
    again = await cache.lookup(
        {"messages": [{"role": "user", "content": "hi"}]}, tenant="t", model_key="m", mode="use"
    )
    assert again.status == "hit"
    await cache.close()


def test_public_names_exist() -> None:
    for module in (keel.cache, keys, replay, semantic, store):
        assert all(hasattr(module, name) for name in module.__all__), module.__name__
