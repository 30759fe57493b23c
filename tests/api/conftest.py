"""The prompt routes through ASGI over a real PromptService, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from keel.keys import store
from keel.keys.auth import Authenticator
from keel.storage.database import Database
from tests.api.app import build_prompts_app

ADMIN_KEY = "admin-key-for-prompt-tests-0123"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    yield database
    await database.engine.dispose()


@pytest.fixture
async def auth(db: Database) -> Authenticator:
    authenticator = Authenticator(db.engine, ADMIN_KEY)
    await authenticator.start()
    return authenticator


@pytest.fixture
async def client(db: Database, auth: Authenticator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_prompts_app(db, auth))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as c:
        yield c


@pytest.fixture
async def virtual_key(db: Database) -> tuple[str, dict[str, str]]:
    """A virtual key's id and the headers that send it."""
    row, token = await store.insert_key(db.engine, name="app")
    return row.id, {"Authorization": f"Bearer {token}"}
