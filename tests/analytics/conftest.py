from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keel.storage.database import Database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    yield database
    await database.close()
