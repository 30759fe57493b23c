"""The durability promise, end to end with real processes.

- `kill -9` under load, then a restart: every request that received a status line has its record,
  exactly once.
- The database goes away: requests are still served, records wait, and arrive once it is back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from keel.storage.urls import async_url
from tests.servers import KeelProcess, LoopThread, TcpProxy

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


async def _stored(database_url: str) -> dict[str, dict[str, Any]]:
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        sa.text("SELECT id, final, status_code, error_type FROM requests")
                    )
                )
                .mappings()
                .all()
            )
    finally:
        await engine.dispose()
    return {r["id"]: dict(r) for r in rows}


def _load(url: str, stop: threading.Event, seen: list[str], errors: list[str], n: int) -> None:
    """Send requests until stopped; keep the id of every response whose status line arrived."""
    body = {"model": "mock/echo", "messages": [{"role": "user", "content": "durable words here"}]}
    with httpx.Client(base_url=url, timeout=10) as http:
        i = 0
        while not stop.is_set():
            i += 1
            stream = (i + n) % 3 == 0
            try:
                with http.stream(
                    "POST",
                    "/v1/chat/completions",
                    json={**body, "stream": stream},
                    headers={
                        "x-mock-chunk-delay-ms": "30" if stream else "0",
                        "x-mock-latency-ms": "5",
                    },
                ) as resp:
                    seen.append(resp.headers["x-keel-request-id"])  # the status line arrived
                    for _ in resp.iter_raw():
                        pass
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
                if stop.is_set():
                    return
                time.sleep(0.01)


def test_kill_9_under_load_loses_no_record(tmp_path: Path, database_url: str) -> None:
    data_dir = tmp_path / "keel"
    keel = KeelProcess(data_dir, env={"KEEL_DATABASE_URL": database_url}).start()
    stop = threading.Event()
    seen: list[str] = []
    errors: list[str] = []
    workers = [
        threading.Thread(target=_load, args=(keel.url, stop, seen, errors, n)) for n in range(8)
    ]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 10
    while len(seen) < 150 and time.monotonic() < deadline:
        time.sleep(0.02)
    keel.kill()
    stop.set()
    for w in workers:
        w.join(15)
    assert len(seen) >= 150, f"load did not get going: {len(seen)} answers, errors {errors[:5]}"

    restarted = KeelProcess(
        data_dir, env={"KEEL_DATABASE_URL": database_url}, port=keel.port
    ).start()
    try:
        stored = asyncio.run(_stored(database_url))
        missing = [i for i in seen if i not in stored]
        assert missing == [], f"{len(missing)} of {len(seen)} answered requests lost"
        assert len(set(seen)) == len(seen)
        # streams cut by the kill are kept as interrupted calls, not dropped
        assert all(r["final"] or r["error_type"] == "interrupted" for r in stored.values())
    finally:
        restarted.stop()


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_records_survive_a_database_outage(tmp_path: Path, database_url: str) -> None:
    loop = LoopThread()
    host_port, _, _db = database_url.split("@", 1)[1].partition("/")
    host, _, port = host_port.partition(":")
    proxy = TcpProxy(host, int(port or 5432))
    loop.run(proxy.start())
    via_proxy = database_url.replace(host_port, f"127.0.0.1:{proxy.port}")
    keel = KeelProcess(tmp_path / "keel", env={"KEEL_DATABASE_URL": via_proxy}).start()
    try:
        loop.run(proxy.cut())
        ids = []
        with httpx.Client(base_url=keel.url, timeout=10) as http:
            for i in range(20):
                resp = http.post(
                    "/v1/chat/completions",
                    json={
                        "model": "mock/echo",
                        "stream": i % 2 == 0,
                        "messages": [{"role": "user", "content": f"during the outage {i}"}],
                    },
                )
                assert resp.status_code == 200
                ids.append(resp.headers["x-keel-request-id"])
            deadline = time.monotonic() + 15
            health: dict[str, Any] = {}
            while time.monotonic() < deadline:
                health = http.get("/healthz").json()
                if health["database"] == "down":
                    break
                time.sleep(0.1)
            assert health["database"] == "down" and health["records_pending"] >= 20
        assert set(ids).isdisjoint(asyncio.run(_stored(database_url)))

        loop.run(proxy.restore())
        deadline = time.monotonic() + 30
        stored: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            stored = asyncio.run(_stored(database_url))
            if set(ids) <= set(stored):
                break
            time.sleep(0.2)
        assert set(ids) <= set(stored)
        assert all(stored[i]["final"] and stored[i]["status_code"] == 200 for i in ids)
    finally:
        keel.stop()
        loop.run(proxy.cut())
        loop.close()
