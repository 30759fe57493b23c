"""A real process is SIGKILLed while submitting; every record it acknowledged is in the database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keel.storage.database import Database
from tests.records.helpers import make_pipeline

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from keel.records.pipeline import RecordPipeline
    from keel.storage.database import Database
    from tests.storage.factory import make_record

    async def main(data_dir: str, url: str) -> None:
        db = await Database.open(url)
        pipeline = RecordPipeline(
            data_dir, db, max_bytes=64 << 20, segment_bytes=16 << 10, fsync="batch",
            fsync_interval_ms=5, batch_size=50,
        )
        await pipeline.start()
        for n in range(1_000_000):
            record = make_record(n)
            pipeline.submit(record)
            print(record.id, flush=True)  # acknowledged: submit returned
            if n % 10 == 0:
                await asyncio.sleep(0.001)  # let the writer run, as a serving gateway would

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)

ACKED = 400


@pytest.mark.timeout(60)
async def test_sigkill_loses_no_acknowledged_record(tmp_path: Path) -> None:
    script = tmp_path / "submitter.py"
    script.write_text(SCRIPT)
    data_dir = tmp_path / "data"
    url = f"sqlite:///{data_dir / 'keel.db'}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(data_dir),
        url,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    acked: list[str] = []
    try:
        while len(acked) < ACKED:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "the submitter exited early"
            acked.append(line.decode().strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        rest = await proc.stdout.read()  # lines printed before the kill landed
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    acked += [line.decode() for line in rest.split(b"\n")[:-1]]  # the last may be cut short

    db = await Database.open(url)
    try:
        pipeline = make_pipeline(data_dir, db)
        await pipeline.start()
        await pipeline.stop()
        async with db.engine.connect() as conn:
            ids = [row[0] for row in (await conn.exec_driver_sql("SELECT id FROM requests"))]
        assert set(acked) <= set(ids)
        assert len(ids) == len(set(ids))
        assert len(ids) - len(acked) <= 1  # the one submitted when the kill came, at most
    finally:
        await db.close()
