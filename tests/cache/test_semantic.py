"""The semantic cache on both backends: matches, thresholds, scopes, tenants, failures."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson

from keel.cache import Cache, Lookup
from keel.cache.semantic import semantic_query
from tests.cache.conftest import MakeCache, vectors
from tests.clock import Clock

PARIS = [1.0, 0.0, 0.0, 0.0]
PARIS_TOO = [0.99, 0.1, 0.0, 0.0]  # cosine 0.995 with PARIS
NEARBY = [0.9, 0.43, 0.0, 0.0]  # cosine about 0.90 with PARIS
TABLE = {
    "What is the capital of France?": PARIS,
    "what's France's capital city": PARIS_TOO,
    "Which city is France's seat of government?": NEARBY,
}
ANSWER = orjson.dumps({"object": "chat.completion", "choices": [], "model": "gpt-4o"})


def chat(question: str, system: str = "be brief", **extra: Any) -> dict[str, Any]:
    return {
        "model": "smart",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ],
        **extra,
    }


async def ask(
    cache: Cache, body: dict[str, Any], tenant: str = "key:a", model_key: str = "openai/gpt-4o"
) -> Lookup:
    return await cache.lookup(body, tenant=tenant, model_key=model_key, mode="use")


async def save(cache: Cache, lookup: Lookup) -> None:
    assert await cache.save(
        lookup, ANSWER, usage=None, served_model="gpt-4o", provider="openai", cost_usd=0.002
    )


async def test_a_similar_question_is_a_semantic_hit(make_cache: MakeCache) -> None:
    embed, asked = vectors(TABLE)
    cache = make_cache(embed=embed)
    first = await ask(cache, chat("What is the capital of France?"))
    assert first.status == "miss"
    await save(cache, first)  # reuses the vector the lookup computed
    assert asked == ["What is the capital of France?"]
    similar = await ask(cache, chat("what's France's capital city", temperature=0.3))
    assert similar.status == "semantic-hit"
    assert similar.hit is not None
    assert similar.hit.kind == "semantic"
    assert similar.hit.response_bytes == ANSWER
    assert similar.hit.cost_saved_usd == 0.002
    assert math.isclose(similar.hit.similarity or 0, 0.99 / math.hypot(0.99, 0.1))
    assert cache.stats.semantic_hits == 1


async def test_below_the_threshold_is_a_miss(make_cache: MakeCache) -> None:
    embed, _ = vectors(TABLE)
    cache = make_cache(embed=embed, threshold=0.95)
    await save(cache, await ask(cache, chat("What is the capital of France?")))
    assert (await ask(cache, chat("Which city is France's seat of government?"))).status == "miss"
    cache.threshold = 0.85
    hit = await ask(cache, chat("Which city is France's seat of government?"))
    assert hit.status == "semantic-hit"


async def test_tenant_b_with_an_identical_embedding_gets_a_miss(make_cache: MakeCache) -> None:
    embed, _ = vectors(TABLE)
    cache = make_cache(embed=embed)
    await save(cache, await ask(cache, chat("What is the capital of France?"), tenant="key:a"))
    for question in ("What is the capital of France?", "what's France's capital city"):
        assert (await ask(cache, chat(question), tenant="key:b")).status == "miss"
    assert (await ask(cache, chat("what's France's capital city"))).status == "semantic-hit"


async def test_scopes_by_model_system_prompt_and_history(make_cache: MakeCache) -> None:
    embed, _ = vectors(TABLE)
    cache = make_cache(embed=embed)
    await save(cache, await ask(cache, chat("What is the capital of France?")))
    similar = "what's France's capital city"
    assert (await ask(cache, chat(similar), model_key="anthropic/claude")).status == "miss"
    assert (await ask(cache, chat(similar, system="answer in French"))).status == "miss"
    assert (await ask(cache, chat(similar, tools=[{"type": "function"}]))).status == "miss"
    longer = chat(similar)
    longer["messages"][1:1] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    assert (await ask(cache, longer)).status == "miss"
    assert (await ask(cache, chat(similar, seed=3))).status == "semantic-hit"


async def test_an_embedding_failure_or_timeout_is_a_miss(make_cache: MakeCache) -> None:
    async def failing(text: str) -> list[float]:
        raise RuntimeError("embedding model down")

    cache = make_cache(embed=failing)
    first = await ask(cache, chat("What is the capital of France?"))
    assert first.status == "miss"
    assert await cache.save(
        first, ANSWER, usage=None, served_model=None, provider=None, cost_usd=None
    )  # the exact entry is stored all the same
    assert (await ask(cache, chat("What is the capital of France?"))).status == "hit"

    async def slow(text: str) -> list[float]:
        await asyncio.sleep(5)
        return PARIS

    cache = make_cache(embed=slow, embed_timeout_s=0.05)
    assert (await ask(cache, chat("what's France's capital city"))).status == "miss"
    assert cache.stats.errors == 1


async def test_a_match_whose_answer_expired_is_a_miss(make_cache: MakeCache, clock: Clock) -> None:
    embed, _ = vectors(TABLE)
    cache = make_cache(embed=embed, ttl_s=60)
    first = await ask(cache, chat("What is the capital of France?"))
    await save(cache, first)
    await cache.backend.delete(first.key)
    assert (await ask(cache, chat("what's France's capital city"))).status == "miss"


async def test_refresh_writes_the_vector_too(make_cache: MakeCache) -> None:
    embed, asked = vectors(TABLE)
    cache = make_cache(embed=embed)
    refresh = await cache.lookup(
        chat("What is the capital of France?"), tenant="key:a", model_key="m", mode="refresh"
    )
    assert asked == []  # no read, so no embedding yet
    await save(cache, refresh)
    assert asked == ["What is the capital of France?"]
    hit = await ask(cache, chat("what's France's capital city"), model_key="m")
    assert hit.status == "semantic-hit"


def test_only_a_final_user_text_message_is_eligible() -> None:
    def query(messages: list[Any]) -> object:
        return semantic_query({"messages": messages}, tenant="t", model_key="m")

    assert query([{"role": "user", "content": "hi"}]) is not None
    parts = [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]
    assert query([{"role": "user", "content": parts}]).text == "hi\nthere"  # type: ignore[attr-defined]
    assert query([{"role": "tool", "content": "42", "tool_call_id": "x"}]) is None
    image = [{"type": "image_url", "image_url": {"url": "data:..."}}]
    assert query([{"role": "user", "content": image}]) is None
    assert query([{"role": "user", "content": "   "}]) is None
    assert query([]) is None
