"""A real HTTP server with the keys API on 127.0.0.1 (uvicorn on a thread) for CLI tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from keel.keys.auth import Authenticator
from keel.limits import BudgetLedger, LimitPolicies, MemoryState
from keel.storage import tables
from keel.storage.urls import async_url
from tests.keys.app import build_keys_app

ADMIN_KEY = "admin-key-for-cli-tests-0123"

ServeFn = Callable[[str | None], str]


def _app(database_url: str, admin_key: str | None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_async_engine(async_url(database_url))
        async with engine.begin() as conn:
            await conn.run_sync(tables.metadata.create_all)
        authenticator = Authenticator(engine, admin_key)
        await authenticator.start()
        keys_app = build_keys_app(
            engine, authenticator, policies=LimitPolicies(), budgets=BudgetLedger(MemoryState())
        )
        app.mount("/", keys_app)
        yield
        await engine.dispose()

    return FastAPI(lifespan=lifespan)


@contextlib.contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, loop="asyncio", http="h11", ws="none", lifespan="on", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def serve_keys(database_url: str) -> Iterator[ServeFn]:
    """Start a keys API (admin key or open mode) on loopback; returns its URL."""
    with contextlib.ExitStack() as stack:

        def start(admin_key: str | None) -> str:
            return stack.enter_context(_serve(_app(database_url, admin_key)))

        yield start


@pytest.fixture
def keel_url(serve_keys: ServeFn) -> str:
    """A running keys API that needs ADMIN_KEY."""
    return serve_keys(ADMIN_KEY)
