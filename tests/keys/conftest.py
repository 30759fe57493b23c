"""An empty keys table on SQLite and on PostgreSQL (through the `database_url` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from keel.storage import tables
from keel.storage.urls import async_url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(async_url(database_url))
    async with eng.begin() as conn:
        await conn.run_sync(tables.metadata.create_all)
    yield eng
    await eng.dispose()
