"""keel.sdk against a real Keel prompt API on loopback: cache, stale fallback, errors, render."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import keel.sdk
from keel.prompts.model import RenderError
from keel.sdk import (
    AsyncPromptClient,
    KeelError,
    Prompt,
    PromptClient,
    PromptNotFound,
    PromptUnavailable,
    get_prompt,
)
from tests.api.app import Gate, serve_prompts
from tests.clock import Clock

ADMIN_KEY = "admin-key-for-sdk-tests-0123"
RESOLVE = "/api/v1/prompts/summarize/resolve"
MESSAGES = [
    {"role": "system", "content": "You write summaries for {{ audience }}."},
    {"role": "user", "content": "{{ text }}"},
]


@dataclass
class Keel:
    url: str
    gate: Gate

    def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        response = httpx.request(method, f"{self.url}/api/v1{path}", json=body, headers=headers)
        assert response.is_success, response.text
        return response.json()

    def push(self, temperature: float) -> int:
        body = {
            "name": "summarize",
            "messages": MESSAGES,
            "variables": ["audience", "text"],
            "config": {"model": "fast", "temperature": temperature},
        }
        return int(self.call("POST", "/prompts", body)["version"]["version"])

    def promote(self, version: int, label: str = "production") -> None:
        self.call("PUT", f"/prompts/summarize/labels/{label}", {"version": version})


@pytest.fixture
def keel_server(tmp_path: Path) -> Iterator[Keel]:
    gate = Gate()
    with serve_prompts(f"sqlite:///{tmp_path / 'keel.db'}", ADMIN_KEY, gate) as url:
        keel = Keel(url, gate)
        keel.promote(keel.push(0.2))
        yield keel


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_get_render_and_openai_kwargs(keel_server: Keel) -> None:
    with PromptClient(keel_server.url, ADMIN_KEY) as client:
        prompt = client.get("summarize")
    assert isinstance(prompt, Prompt)
    assert (prompt.name, prompt.version, prompt.label) == ("summarize", 1, "production")
    assert prompt.config == {"model": "fast", "temperature": 0.2}
    assert prompt.render(audience="agents", text="Ticket 7") == [
        {"role": "system", "content": "You write summaries for agents."},
        {"role": "user", "content": "Ticket 7"},
    ]
    assert prompt.openai_kwargs(audience="agents", text="hi") == {
        "messages": [
            {"role": "system", "content": "You write summaries for agents."},
            {"role": "user", "content": "hi"},
        ],
        "model": "fast",
        "temperature": 0.2,
    }
    with pytest.raises(RenderError):
        prompt.render(audience="agents")


def test_cached_within_ttl_then_refreshed(keel_server: Keel, clock: Clock) -> None:
    client = PromptClient(keel_server.url, ADMIN_KEY, ttl=30, clock=clock)
    assert client.get("summarize").version == 1
    assert client.get("summarize").version == 1
    assert keel_server.gate.hits(RESOLVE) == 1

    keel_server.promote(keel_server.push(0.9))
    clock.now += 29
    assert client.get("summarize").version == 1
    clock.now += 2
    assert client.get("summarize").version == 2
    assert keel_server.gate.hits(RESOLVE) == 2

    # a pinned version never changes: asked once for good
    assert client.get("summarize", version=1).label is None
    clock.now += 10_000
    assert client.get("summarize", version=1).version == 1
    assert keel_server.gate.hits(RESOLVE) == 3
    client.close()


def test_serves_the_last_known_version_while_keel_is_down(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate()
    with serve_prompts(f"sqlite:///{tmp_path / 'keel.db'}", ADMIN_KEY, gate) as url:
        seeded = Keel(url, gate)
        seeded.promote(seeded.push(0.2))
        client = PromptClient(url, ADMIN_KEY, ttl=5, timeout=2, clock=clock)
        known = client.get("summarize")
        gate.failing = True  # 503 first
        clock.now += 6
        with caplog.at_level(logging.WARNING, logger="keel.sdk"):
            assert client.get("summarize") == known
    clock.now += 6  # then not listening at all
    with caplog.at_level(logging.WARNING, logger="keel.sdk"):
        assert client.get("summarize") == known
        assert client.get("summarize") == known
    warnings = [r.getMessage() for r in caplog.records if r.name == "keel.sdk"]
    assert warnings == [
        f"cannot fetch prompt 'summarize' from {url} (HTTP 503); serving its last known version 1"
    ]
    with pytest.raises(PromptUnavailable, match="cannot fetch prompt 'other'"):
        client.get("other")
    client.close()


def test_not_found_and_refused(keel_server: Keel) -> None:
    client = PromptClient(keel_server.url, ADMIN_KEY)
    with pytest.raises(PromptNotFound) as missing:
        client.get("nothing")
    assert missing.value.status == 404
    with pytest.raises(PromptNotFound):
        client.get("summarize", label="staging")
    with pytest.raises(PromptNotFound):
        client.get("summarize", version=9)
    with (
        PromptClient(keel_server.url, "wrong-key") as stranger,
        pytest.raises(KeelError) as refused,
    ):
        stranger.get("summarize")
    assert refused.value.status == 401 and not isinstance(refused.value, PromptNotFound)
    client.close()


async def test_async_client(keel_server: Keel, clock: Clock) -> None:
    async with AsyncPromptClient(keel_server.url, ADMIN_KEY, ttl=30, clock=clock) as client:
        first = await client.get("summarize")
        assert await client.get("summarize") == first
        assert keel_server.gate.hits(RESOLVE) == 1
        assert first.render(audience="a", text="b")[1] == {"role": "user", "content": "b"}
        with pytest.raises(PromptNotFound):
            await client.get("nothing")
        keel_server.gate.failing = True
        clock.now += 31
        assert await client.get("summarize") == first
        with pytest.raises(PromptUnavailable):
            await client.get("summarize", label="staging")


def test_get_prompt_uses_the_environment(
    keel_server: Keel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_URL", keel_server.url)
    monkeypatch.setenv("KEEL_API_KEY", ADMIN_KEY)
    monkeypatch.setattr(keel.sdk, "_default", None)
    assert get_prompt("summarize").version == 1
    assert get_prompt("summarize", version=1).version == 1
    assert keel.sdk._default is not None
    keel.sdk._default.close()


def test_importing_the_sdk_loads_no_server_stack() -> None:
    server = "('fastapi', 'sqlalchemy', 'uvicorn', 'starlette', 'alembic', 'asyncpg', 'aiosqlite')"
    loaded = f"sorted(m for m in {server} if m in sys.modules)"
    code = (
        "import json, sys, keel.sdk; "
        f"before = {loaded}; otel = 'opentelemetry' in sys.modules; "
        # tracing, used in full (OpenAI instrumentation included), still loads no server code
        "keel.sdk.init('http://127.0.0.1:9', set_global=False, sample_rate=0.0); "
        "keel.sdk.observe(lambda: 1)(); keel.sdk.flush(); "
        f"print(json.dumps([before, otel, {loaded}, 'openai' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [[], False, [], True]


def test_public_names() -> None:
    assert sorted(keel.sdk.__all__) == [
        "AsyncPromptClient",
        "KeelError",
        "Prompt",
        "PromptClient",
        "PromptNotFound",
        "PromptUnavailable",
        "context",
        "flush",
        "get_prompt",
        "init",
        "instrument_openai",
        "observe",
        "shutdown",
        "uninstrument_openai",
    ]
    for name in keel.sdk.__all__:
        assert getattr(keel.sdk, name) is not None
