"""Three fake OpenAI servers as providers `a`, `b` and `c`, reached through the real OpenAI adapter
and the real upstream client, and helpers to build a Router over them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from keel.config import ProviderConfig
from keel.config_models import parse_models
from keel.gateway.models import ModelRouter, Target
from keel.gateway.routing import Attempt, Router
from keel.providers.base import CallContext, ChatResult, ChatStream, Provider
from keel.providers.client import Timeouts, UpstreamClient
from keel.providers.registry import load_registry
from tests.fakes import FAKE_API_KEY, FakeOpenAI

MESSAGES = [{"role": "user", "content": "hello from routing"}]


class FakeSleep:
    """Records the waits asked for and returns at once; advances `FakeClock`s it is given."""

    def __init__(self, *clocks: FakeClock) -> None:
        self.waits: list[float] = []
        self._clocks = clocks

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        for clock in self._clocks:
            clock.now += seconds


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeOpenAI]]:
    servers = {name: FakeOpenAI(api_key=FAKE_API_KEY) for name in ("a", "b", "c")}
    for fake in servers.values():
        await fake.start()
    try:
        yield servers
    finally:
        for fake in servers.values():
            await fake.stop()


@pytest.fixture
def providers(fakes: dict[str, FakeOpenAI]) -> dict[str, Provider]:
    registry = load_registry()
    return {
        name: registry.create(
            ProviderConfig(name, "openai", base_url=fake.base_url, api_key=FAKE_API_KEY)
        )
        for name, fake in fakes.items()
    }


def model_router(providers: dict[str, Provider], models: list[dict[str, Any]]) -> ModelRouter:
    """A ModelRouter from `models:` as written in a config file (through the real parser)."""
    return ModelRouter(providers, parse_models(models))


def router(providers: dict[str, Provider], models: list[dict[str, Any]], **kw: Any) -> Router:
    return Router(model_router(providers, models), **kw)


def _ctx(session: UpstreamClient, timeout_s: float) -> CallContext:
    limit = min(timeout_s, 600.0)
    timeouts = Timeouts(connect=limit, read=limit, total=limit)
    return CallContext(session=session, timeout=timeouts, request_id="req-routing")


def chat(session: UpstreamClient) -> Callable[[Target, float], Awaitable[ChatResult]]:
    """The attempt the gateway makes for a plain chat call: provider.chat with the time left."""

    async def attempt(target: Target, timeout_s: float) -> ChatResult:
        body = {"model": target.model, "messages": MESSAGES}
        return await target.provider.chat(body, _ctx(session, timeout_s))

    return attempt


def stream(session: UpstreamClient) -> Callable[[Target, float], Awaitable[ChatStream]]:
    """The attempt for a stream: done once the upstream's first event arrived."""

    async def attempt(target: Target, timeout_s: float) -> ChatStream:
        body = {"model": target.model, "messages": MESSAGES, "stream": True}
        return await target.provider.stream_chat(body, _ctx(session, timeout_s))

    return attempt


def chain(attempts: list[Attempt]) -> list[Attempt]:
    """The attempts without their latency, for whole-record comparison."""
    return [dataclasses.replace(a, latency_ms=None) for a in attempts]


def ok(provider: str, model: str) -> Attempt:
    return Attempt(provider, model, "ok")


def err(provider: str, model: str, status: int, message: str) -> Attempt:
    return Attempt(provider, model, "error", status, message)


def skipped(provider: str, model: str) -> Attempt:
    return Attempt(provider, model, "skipped_open")


HTTP_500 = "answered HTTP 500: The server had an error while processing your request."
HTTP_429 = "answered HTTP 429: Rate limit reached for requests per min."
HTTP_400 = "answered HTTP 400: Invalid value for 'temperature': must be <= 2."


def http_500(provider: str) -> str:
    return f"provider {provider!r} {HTTP_500}"
