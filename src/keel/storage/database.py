"""The database handle: one async engine per process, migrated to the latest schema at open.

`Database.open` is the only way in: it makes the engine (SQLite pragmas per connection), then
applies the Alembic migrations under `storage/migrations` so every caller sees the same schema.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from keel.storage.urls import async_url, dialect_of, redact_url

__all__ = ["SQLITE_PRAGMAS", "Database"]

log = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).with_name("migrations")
# Any fixed 64-bit number: every Keel process migrating the same PostgreSQL takes this lock,
# so two processes starting together apply the migrations once, one after the other.
_MIGRATION_LOCK_KEY = 0x6B65656C_6D696772
_SQLITE_LOCK_RETRIES = 5


class Database:
    """An opened, migrated database. Make one with `await Database.open(url)`."""

    def __init__(self, engine: AsyncEngine, dialect: str, url_for_logs: str) -> None:
        self.engine = engine
        self.dialect = dialect
        self.url_for_logs = url_for_logs

    @classmethod
    async def open(cls, url: str) -> Database:
        """Connect to `sqlite:///path` or `postgresql://…` and migrate it to the latest schema."""
        dialect = dialect_of(url)
        driver_url = async_url(url)
        if dialect == "sqlite":
            _make_sqlite_folder(driver_url)
        engine = create_async_engine(driver_url, pool_pre_ping=True)
        if dialect == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        db = cls(engine, dialect, redact_url(url))
        try:
            await db.migrate()
        except BaseException:
            await engine.dispose()
            raise
        return db

    async def migrate(self) -> None:
        """Apply the migrations to head; safe when several processes open the database at once."""
        for attempt in range(_SQLITE_LOCK_RETRIES):
            try:
                async with self.engine.begin() as conn:
                    await _lock_for_migration(conn, self.dialect)
                    await conn.run_sync(_upgrade_to_head)
                return
            except OperationalError as exc:
                # Two SQLite connections that both start before the file is in WAL mode can
                # block each other (one holds the write lock, the other a read lock while it
                # switches the journal); SQLite then gives up on one of them. Try it again.
                locked = self.dialect == "sqlite" and "locked" in str(exc.orig)
                if not locked or attempt == _SQLITE_LOCK_RETRIES - 1:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))

    @property
    def sqlite_path(self) -> str | None:
        """The SQLite database's file (None for PostgreSQL and in-memory SQLite)."""
        if self.dialect != "sqlite":
            return None
        path = self.engine.url.database
        return path if path and path != ":memory:" else None

    async def ping(self) -> bool:
        """True when a round trip to the database succeeds."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means "down" to the caller (health, metrics)
            log.debug("database %s ping failed: %s", self.url_for_logs, type(exc).__name__)
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()


def _make_sqlite_folder(driver_url: str) -> None:
    path = make_url(driver_url).database
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)


# WAL lets readers run beside the one writer. FULL syncs each commit, so the checkpoint of Keel's
# own log never moves past a batch that power loss could still roll back; only the background
# writer commits, so no request waits for it. busy_timeout rides out lock waits. 16 KiB pages (set
# before the file is first written; an existing database keeps its own): a stored span takes
# about 1 KiB, and four times fewer pages per batch cost SQLite and the kernel a quarter less CPU
# per row than the default 4 KiB (benchmarks/ingest.py). Every connection to the file gets them,
# the span writer process's too (keel.storage.span_writer).
SQLITE_PRAGMAS = (
    "busy_timeout=5000",  # first, so that switching to WAL waits out a lock too
    "page_size=16384",
    "journal_mode=WAL",
    "synchronous=FULL",
    "foreign_keys=ON",
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


async def _lock_for_migration(conn: AsyncConnection, dialect: str) -> None:
    if dialect == "postgresql":
        # Released at commit: the whole migration runs under it, in one transaction.
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    else:
        # The sqlite3 driver only opens a transaction before DML, so DDL would autocommit and two
        # processes could both see an empty schema; an explicit write lock serializes them.
        await conn.exec_driver_sql("BEGIN IMMEDIATE")


def _upgrade_to_head(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
