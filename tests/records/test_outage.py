"""The database goes away under the pipeline (a TCP proxy is cut) and comes back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from keel.storage.database import Database
from tests.records.helpers import all_rows, make_pipeline, until
from tests.records.proxy import CuttableProxy
from tests.storage.factory import make_record

pytestmark = [pytest.mark.timeout(60), pytest.mark.parametrize("dialect", ["postgresql"])]


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[CuttableProxy]:
    real = urlsplit(database_url)
    server = CuttableProxy(real.hostname or "127.0.0.1", real.port or 5432)
    await server.start()
    yield server
    await server.cut()


def _through(url: str, port: int) -> str:
    real = urlsplit(url)
    return real._replace(netloc=f"{real.username}@127.0.0.1:{port}").geturl()


async def test_records_wait_while_the_database_is_down(
    tmp_path: Path, database_url: str, proxy: CuttableProxy
) -> None:
    db = await Database.open(_through(database_url, proxy.port))
    direct = await Database.open(database_url)
    pipeline = make_pipeline(tmp_path, db)
    try:
        await pipeline.start()
        pipeline.submit(make_record(0))
        await until(lambda: pipeline.written_records == 1)

        await proxy.cut()
        for n in range(1, 21):
            pipeline.submit(make_record(n))
        await until(lambda: not pipeline.db_up)
        assert pipeline.pending_records == 20
        assert pipeline.last_write_error is not None
        assert len(await all_rows(direct)) == 1

        await proxy.restore()
        await until(lambda: pipeline.pending_records == 0)
        assert pipeline.db_up
        assert sorted(r["id"] for r in await all_rows(direct)) == [
            f"req-{n:06d}" for n in range(21)
        ]
    finally:
        await pipeline.stop(timeout=2)
        await db.close()
        await direct.close()


async def test_start_does_not_wait_for_a_down_database(
    tmp_path: Path, database_url: str, proxy: CuttableProxy
) -> None:
    db = await Database.open(_through(database_url, proxy.port))
    direct = await Database.open(database_url)
    first = make_pipeline(tmp_path, db)
    await first.start()
    await proxy.cut()
    for n in range(5):
        first.submit(make_record(n))
    await first.stop(timeout=0.5)  # cannot drain: the records stay in the log
    assert first.pending_records == 5

    second = make_pipeline(tmp_path, db)
    try:
        await second.start()  # returns although the replay could not be written
        assert not second.db_up
        assert second.pending_records == 5
        await proxy.restore()
        await until(lambda: second.pending_records == 0)
        assert len(await all_rows(direct)) == 5
    finally:
        await second.stop(timeout=2)
        await db.close()
        await direct.close()
