"""Fixtures of the alert tests: a migrated database of each dialect and a webhook receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keel.storage.database import Database
from tests.alerts.receiver import Receiver


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    yield database
    await database.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.close()
