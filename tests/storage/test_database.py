"""Database.open: migrations create exactly the tables in keel.storage.tables, on both dialects."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from keel.storage.database import _MIGRATIONS, Database
from keel.storage.tables import metadata

# The newest revision: the highest-numbered file under storage/migrations/versions.
HEAD = max(p.name[1:5] for p in (Path(_MIGRATIONS) / "versions").glob("r[0-9]*.py"))


def _schema_diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_open_migrates_to_exactly_the_declared_tables(database_url: str) -> None:
    db = await Database.open(database_url)
    try:
        async with db.engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            diff = await conn.run_sync(_schema_diff)
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        assert names == {"alembic_version", *metadata.tables}
        assert diff == []
        assert version == [(HEAD,)]
        assert await db.ping()
    finally:
        await db.close()


async def test_concurrent_opens_migrate_once(database_url: str) -> None:
    dbs = await asyncio.gather(*(Database.open(database_url) for _ in range(4)))
    try:
        async with dbs[0].engine.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        assert rows == [(HEAD,)]
        reopened = await Database.open(database_url)
        await reopened.close()
    finally:
        for db in dbs:
            await db.close()


async def test_sqlite_settings_and_folder(tmp_path: Path) -> None:
    db = await Database.open(f"sqlite:///{tmp_path / 'deep' / 'er' / 'keel.db'}")
    try:
        assert db.dialect == "sqlite"
        async with db.engine.connect() as conn:
            values = [
                (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            ]
        assert values == ["wal", 2, 5000, 1]  # journal_mode, synchronous=FULL, busy_timeout, fk
    finally:
        await db.close()


async def test_url_for_logs_hides_the_password(postgres_server_url: str) -> None:
    # The local server trusts loopback, so any password is accepted and must never be shown.
    url = postgres_server_url.replace("postgres@", "postgres:hunter2@")
    db = await Database.open(url)
    try:
        assert db.dialect == "postgresql"
        assert "hunter2" not in db.url_for_logs
        assert db.url_for_logs == url.replace("hunter2", "***")
    finally:
        await db.close()


def _migrate(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    if revision == "head":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


def _columns(conn: Connection, table: str) -> list[str]:
    return [c["name"] for c in inspect(conn).get_columns(table)]


async def test_0003_adds_limits_and_keeps_existing_rows(database_url: str) -> None:
    db = await Database.open(database_url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_migrate, "0002")
            assert "rpm" not in await conn.run_sync(_columns, "keys")
            assert "limit_policies" not in await conn.run_sync(
                lambda c: inspect(c).get_table_names()
            )
            await conn.execute(
                text(
                    "INSERT INTO keys (id, name, salt, hash, created_at) "
                    "VALUES ('abcdefgh2345', 'old', 's', 'h', 1.0)"
                )
            )
        async with db.engine.begin() as conn:
            await conn.run_sync(_migrate, "head")
            keys_columns = await conn.run_sync(_columns, "keys")
            request_columns = await conn.run_sync(_columns, "requests")
            old = (
                await conn.execute(
                    text("SELECT name, rpm, tpm, budget_usd, budget_period FROM keys")
                )
            ).all()
            diff = await conn.run_sync(_schema_diff)
        assert keys_columns[-4:] == ["rpm", "tpm", "budget_usd", "budget_period"]
        assert request_columns[-5:] == [
            "fallbacks",
            "cache_status",
            "cost_saved_usd",
            "trimmed_messages",
            "deprecated_model",
        ]
        assert old == [("old", None, None, None, None)]
        assert diff == []
    finally:
        await db.close()
