"""Fake upstreams for tests: real servers on 127.0.0.1 speaking the providers' wire formats.

Fixtures for test modules that talk to them (import them, or register them in a conftest):
`fake_openai` (a started FakeOpenAI that requires FAKE_API_KEY), `raw_upstream` (a RawUpstream
answering every POST with the status and bytes a test sets, for answers too broken for the fakes)
and `client_session` (a real aiohttp session for calling adapters directly).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from keel.providers.client import UpstreamClient
from tests.fakes.openai_upstream import FAKE_API_KEY, FAULTS, FakeOpenAI, FakeRequest

__all__ = [
    "FAKE_API_KEY",
    "FAULTS",
    "FakeOpenAI",
    "FakeRequest",
    "RawUpstream",
    "client_session",
    "fake_openai",
    "raw_upstream",
]


class RawUpstream:
    """Answers every POST with `status`, `body` and `content_type` as the test sets them."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b""
        self.content_type = "text/event-stream"
        self.base_url = ""  # http://127.0.0.1:PORT/v1

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_route("POST", "/{path:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        return runner


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI(api_key=FAKE_API_KEY)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def client_session() -> AsyncIterator[UpstreamClient]:
    session = UpstreamClient()
    try:
        yield session
    finally:
        await session.close()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    raw = RawUpstream()
    runner = await raw.start()
    try:
        yield raw
    finally:
        await runner.cleanup()
