"""Shared fixtures. `database_url` runs a storage test once on SQLite and once on PostgreSQL.

PostgreSQL is the real server at KEEL_TEST_POSTGRES_URL (default: the local one, database
`test`). Outside CI a missing server skips those tests with the reason; in CI it fails them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

pytest_plugins = ["tests.fakes"]

PG_ADMIN_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


async def _pg_exec(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"keel_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_pg_exec(PG_ADMIN_URL, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    asyncio.run(_pg_exec(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database of the test's dialect, as a Keel `database_url`."""
    if dialect == "sqlite":
        return f"sqlite:///{tmp_path / 'keel.db'}"
    url: str = request.getfixturevalue("postgres_server_url")
    asyncio.run(_pg_exec(url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public"))
    return url
