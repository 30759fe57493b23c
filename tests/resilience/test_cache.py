"""The response cache of a running Keel (docs/cache.md): tenant B never gets tenant A's answer,
exact or semantic, in memory or in Redis shared by two replicas; streams are served from the
cache; `x-keel-cache` bypasses and refreshes; hits are recorded with the cost they saved.

The fake upstream echoes the question, so two tenants would get the same text anyway: what
tells a cached answer from a fresh one is its `id` (the fake numbers every answer) and whether
the upstream was called.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.resilience.conftest import (
    ADMIN,
    WatchedOpenAI,
    bearer,
    create_key,
    customer,
    provider,
    records_of,
    settled_records,
    sse_data,
    start_keel,
    streamed_text,
)
from tests.servers import KeelProcess

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

QUESTION = "what is the capital of france"


def cache_config(fake: WatchedOpenAI) -> dict[str, Any]:
    return {
        "providers": {"primary": provider(fake)},
        "models": [{"name": "chat", "targets": [{"provider": "primary", "model": "gpt-4o-mini"}]}],
        "cache": {
            "enabled": True,
            "ttl_s": 600,
            "semantic": {"enabled": True, "embedding_model": "mock/embed", "threshold": 0.95},
        },
    }


@pytest.fixture
def keel(tmp_path: Path, upstreams: tuple[WatchedOpenAI, WatchedOpenAI]) -> Iterator[KeelProcess]:
    proc = start_keel(tmp_path / "keel", cache_config(upstreams[0]))
    yield proc
    proc.stop()


def ask(
    keel: KeelProcess,
    auth: dict[str, str],
    who: str,
    *,
    stream: bool = False,
    temperature: float = 0.0,
    mode: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {
        "model": "chat",
        "temperature": temperature,
        "stream": stream,
        "messages": [
            {"role": "system", "content": "answer briefly"},
            {"role": "user", "content": QUESTION},
        ],
    }
    headers = {**auth, "x-keel-customer": who}
    if mode is not None:
        headers["x-keel-cache"] = mode
    return httpx.post(f"{keel.url}/v1/chat/completions", json=body, headers=headers, timeout=10)


def answer_id(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    if resp.headers["content-type"].startswith("text/event-stream"):
        first = json.loads(sse_data(resp.text)[0])
        return str(first["id"])
    return str(resp.json()["id"])


def test_tenant_b_never_gets_tenant_a_answer_exact_or_semantic(
    keel: KeelProcess, upstreams: tuple[WatchedOpenAI, WatchedOpenAI]
) -> None:
    fake = upstreams[0]
    a, b = bearer(create_key(keel)), bearer(create_key(keel))
    who = customer()  # the same customer for both keys: the key is the tenant
    calls = len(fake.requests)

    first = ask(keel, a, who)
    assert first.headers["x-keel-cache"] == "miss"
    again = ask(keel, a, who)
    assert again.headers["x-keel-cache"] == "hit"
    assert answer_id(again) == answer_id(first)
    assert len(fake.requests) == calls + 1

    other = ask(keel, b, who)  # byte for byte the same request, another key
    assert other.headers["x-keel-cache"] == "miss"
    assert answer_id(other) != answer_id(first)
    assert len(fake.requests) == calls + 2

    # Another temperature misses the exact cache; the question is the same, so the semantic
    # cache (mock/embed: equal texts, equal vectors) matches, within the tenant only.
    b_warm = ask(keel, b, who, temperature=0.7)
    assert b_warm.headers["x-keel-cache"] == "semantic-hit"
    assert answer_id(b_warm) == answer_id(other)
    third = create_key(keel)
    c_warm = ask(keel, bearer(third), who, temperature=0.7)
    assert c_warm.headers["x-keel-cache"] == "miss"
    assert answer_id(c_warm) not in (answer_id(first), answer_id(other))
    a_warm = ask(keel, a, who, temperature=0.7)
    assert a_warm.headers["x-keel-cache"] == "semantic-hit"
    assert answer_id(a_warm) == answer_id(first)
    assert len(fake.requests) == calls + 3

    records = settled_records(keel, who, 6)
    assert len(records) == 6
    assert sorted(r["cache_status"] for r in records) == sorted(
        ["miss", "hit", "miss", "semantic-hit", "miss", "semantic-hit"]
    )


def test_streams_are_served_from_the_cache_both_ways(
    keel: KeelProcess, upstreams: tuple[WatchedOpenAI, WatchedOpenAI]
) -> None:
    fake = upstreams[0]
    who = customer()
    calls = len(fake.requests)

    plain = ask(keel, ADMIN, who)
    assert plain.headers["x-keel-cache"] == "miss"
    replay = ask(keel, ADMIN, who, stream=True)
    assert replay.headers["x-keel-cache"] == "hit"
    events = sse_data(replay.text)
    assert events[-1] == "[DONE]" and streamed_text(events) == QUESTION
    assert answer_id(replay) == answer_id(plain)
    assert len(fake.requests) == calls + 1

    # A stream that ended normally is stored too, and answers a plain request.
    streamed = ask(keel, ADMIN, who, stream=True, temperature=0.3, mode="refresh")
    assert streamed.headers["x-keel-cache"] == "refresh"
    assert len(fake.requests) == calls + 2
    from_stream = ask(keel, ADMIN, who, temperature=0.3)
    assert from_stream.headers["x-keel-cache"] == "hit"
    assert from_stream.json()["choices"][0]["message"]["content"] == QUESTION
    assert answer_id(from_stream) == answer_id(streamed)
    assert len(fake.requests) == calls + 2


def test_bypass_and_refresh_headers(
    keel: KeelProcess, upstreams: tuple[WatchedOpenAI, WatchedOpenAI]
) -> None:
    fake = upstreams[0]
    who = customer()
    calls = len(fake.requests)
    stored = ask(keel, ADMIN, who)
    bypassed = ask(keel, ADMIN, who, mode="bypass")
    assert bypassed.headers["x-keel-cache"] == "bypass"
    assert answer_id(bypassed) != answer_id(stored)
    assert ask(keel, ADMIN, who).headers["x-keel-cache"] == "hit"
    assert answer_id(ask(keel, ADMIN, who)) == answer_id(stored)  # bypass wrote nothing
    refreshed = ask(keel, ADMIN, who, mode="refresh")
    assert refreshed.headers["x-keel-cache"] == "refresh"
    assert answer_id(ask(keel, ADMIN, who)) == answer_id(refreshed)  # refresh replaced it
    assert len(fake.requests) == calls + 3

    misspelt = ask(keel, ADMIN, who, mode="bypas")
    assert misspelt.status_code == 400
    assert "x-keel-cache" in misspelt.json()["error"]["message"]


def test_a_hit_records_the_cost_it_saved(keel: KeelProcess) -> None:
    who = customer()
    miss = ask(keel, ADMIN, who)
    hit = ask(keel, ADMIN, who)
    records = {r["id"]: r for r in settled_records(keel, who, 2)}
    paid = records[miss.headers["x-keel-request-id"]]
    saved = records[hit.headers["x-keel-request-id"]]
    assert paid["cost_usd"] > 0 and paid["cache_status"] == "miss"
    assert paid["cost_saved_usd"] is None
    assert {k: saved[k] for k in ("cache_status", "cost_usd", "status_code", "provider")} == {
        "cache_status": "hit",
        "cost_usd": 0,
        "status_code": 200,
        "provider": "primary",
    }
    assert saved["cost_saved_usd"] == pytest.approx(paid["cost_usd"], rel=1e-9)
    assert (saved["input_tokens"], saved["output_tokens"]) == (
        paid["input_tokens"],
        paid["output_tokens"],
    )
    assert len(records_of(keel, who)) == 2


def test_redis_cache_is_shared_by_replicas_and_still_per_tenant(
    tmp_path: Path,
    upstreams: tuple[WatchedOpenAI, WatchedOpenAI],
    redis_db: str,
    shared_database: str,
) -> None:
    fake = upstreams[0]
    env = {"KEEL_REDIS_URL": redis_db, "KEEL_DATABASE_URL": shared_database}
    one = start_keel(tmp_path / "one", cache_config(fake), env)
    try:
        two = start_keel(tmp_path / "two", cache_config(fake), env)
        try:
            a, b = bearer(create_key(one)), bearer(create_key(one))
            who = customer()
            calls = len(fake.requests)
            first = ask(one, a, who)
            assert first.headers["x-keel-cache"] == "miss"
            shared = ask(two, a, who)  # the other replica, the same tenant
            assert shared.headers["x-keel-cache"] == "hit"
            assert answer_id(shared) == answer_id(first)
            other = ask(two, b, who)
            assert other.headers["x-keel-cache"] == "miss"
            assert answer_id(other) != answer_id(first)
            semantic = ask(one, b, who, temperature=0.9)
            assert semantic.headers["x-keel-cache"] == "semantic-hit"
            assert answer_id(semantic) == answer_id(other)
            assert len(fake.requests) == calls + 2
        finally:
            two.stop()
    finally:
        one.stop()
