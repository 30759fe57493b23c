"""Real `keel serve` processes in front of fake OpenAI upstreams with failure knobs, and the
checks every resilience test shares: one record per request, a process that still answers
promptly and does not spin, a Redis database of the test's own.

Each test names its requests with a customer of its own (`x-keel-customer`), so its records
can be counted through `GET /api/v1/requests?customer=...` whatever else the process served.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from aiohttp import web

from tests.conftest import _pg_exec
from tests.fakes.openai_upstream import Answer, FakeOpenAI
from tests.servers import KeelProcess, LoopThread

ADMIN_KEY = "keel-admin-test-key-0123456789"
UPSTREAM_KEY = "sk-upstream-very-secret-4242"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
REDIS_HOST = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
_CLAIM = "keeltest:resilience:claim"


class WatchedOpenAI(FakeOpenAI):
    """FakeOpenAI that also notes when the connection of a stream it is sending went away
    (the moment Keel let go of the upstream call), can drop its queued faults, and can take
    `delay_s` before each chat answer (a provider's own latency)."""

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__(api_key)
        self.streams_closed: list[float] = []  # time.monotonic() of each early close
        self.delay_s = 0.0

    def clear_faults(self) -> None:
        self._faults.clear()

    async def _chat_body(self, request: web.Request, body: Any) -> web.StreamResponse:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return await super()._chat_body(request, body)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], result: Answer, fault: str | None
    ) -> web.StreamResponse:
        done = asyncio.Event()

        async def watch() -> None:
            while not done.is_set():
                transport = request.transport
                if transport is None or transport.is_closing():
                    self.streams_closed.append(time.monotonic())
                    return
                await asyncio.sleep(0.01)

        watcher = asyncio.ensure_future(watch())
        try:
            return await super()._stream(request, body, result, fault)
        finally:
            done.set()
            await watcher


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def upstreams(loop_thread: LoopThread) -> Iterator[tuple[WatchedOpenAI, WatchedOpenAI]]:
    """Two fake OpenAI servers: the primary provider and the fallback."""
    primary, backup = WatchedOpenAI(UPSTREAM_KEY), WatchedOpenAI(UPSTREAM_KEY)
    loop_thread.run(primary.start())
    loop_thread.run(backup.start())
    yield primary, backup
    loop_thread.run(primary.stop())
    loop_thread.run(backup.stop())


def provider(fake: FakeOpenAI) -> dict[str, Any]:
    return {"type": "openai", "base_url": fake.base_url, "api_key": "env:TEST_UPSTREAM_KEY"}


def start_keel(
    data_dir: Path, config: dict[str, Any], env: dict[str, str] | None = None
) -> KeelProcess:
    base = {"KEEL_ADMIN_KEY": ADMIN_KEY, "TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    return KeelProcess(data_dir, config, env={**base, **(env or {})}).start()


def customer() -> str:
    """A customer name of one test's own, to find its records."""
    return f"res-{uuid.uuid4().hex[:12]}"


def records_of(keel: KeelProcess, who: str) -> list[dict[str, Any]]:
    resp = httpx.get(
        f"{keel.url}/api/v1/requests",
        params={"customer": who, "limit": 1000},
        headers=ADMIN,
        timeout=5,
    )
    assert resp.status_code == 200, resp.text
    data: list[dict[str, Any]] = resp.json()["data"]
    return data


def settled_records(
    keel: KeelProcess, who: str, expected: int, timeout: float = 10
) -> list[dict[str, Any]]:
    """The customer's records once `expected` final ones are stored, after a short extra wait
    that would let a duplicate show up too."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = records_of(keel, who)
        if len([r for r in rows if r["final"]]) >= expected:
            time.sleep(0.2)  # a second record for the same request would land by now
            return records_of(keel, who)
        time.sleep(0.05)
    return rows


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def assert_responsive_and_idle(keel: KeelProcess, idle_s: float = 1.0) -> None:
    """`/healthz` answers within 0.5 s, and the process burns under 0.5 s of CPU while idle for
    `idle_s` (a task spinning on a dead connection would burn all of it)."""
    assert keel.proc is not None and keel.proc.poll() is None, keel.log()[-2000:]
    resp = httpx.get(f"{keel.url}/healthz", timeout=0.5)
    assert resp.status_code == 200
    before = cpu_seconds(keel.proc.pid)
    time.sleep(idle_s)
    burnt = cpu_seconds(keel.proc.pid) - before
    assert burnt < 0.5, f"keel used {burnt:.2f} s of CPU in {idle_s} s idle"


def create_key(keel: KeelProcess, **fields: Any) -> dict[str, Any]:
    resp = httpx.post(
        f"{keel.url}/api/v1/keys", json={"name": "resilience", **fields}, headers=ADMIN, timeout=5
    )
    assert resp.status_code == 201, resp.text
    key: dict[str, Any] = resp.json()
    return key


@pytest.fixture
def redis_db() -> Iterator[str]:
    """A Redis database of this test's own (empty, claimed, flushed afterwards), as a URL.

    Keel's keys (`keel:revoked`, `keel:cache:...`) have fixed names, so replicas under test
    need a whole database rather than a key prefix."""
    try:
        probe = redis.Redis.from_url(f"{REDIS_HOST}/0", socket_connect_timeout=1, socket_timeout=1)
        probe.ping()
        probe.close()
    except redis.RedisError as exc:
        if IN_CI:
            pytest.fail(f"Redis at {REDIS_HOST} is required in CI: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_HOST}: {exc}")
    for db in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_HOST}/{db}")
        try:
            if client.dbsize() == 0 and client.set(_CLAIM, uuid.uuid4().hex, nx=True, ex=900):
                yield f"{REDIS_HOST}/{db}"
                client.flushdb()
                return
        finally:
            client.close()
    pytest.fail("no free Redis database among 1..15 (each holds keys)")


def sse_data(text: str) -> list[str]:
    """The `data:` payloads of a server-sent event stream, in order."""
    out = []
    for event in text.split("\n\n"):
        for line in event.splitlines():
            if line.startswith("data:"):
                out.append(line[5:].strip())
    return out


def streamed_text(events: list[str]) -> str:
    """The content deltas of a chat completion stream, joined."""
    parts = []
    for data in events:
        if data == "[DONE]":
            continue
        for choice in json.loads(data).get("choices") or []:
            parts.append((choice.get("delta") or {}).get("content") or "")
    return "".join(parts)


@pytest.fixture
def shared_database(postgres_server_url: str) -> str:
    """An empty PostgreSQL database for replicas of one test to share, as a `database_url`."""
    asyncio.run(_pg_exec(postgres_server_url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public"))
    return postgres_server_url


def bearer(key: dict[str, Any]) -> dict[str, str]:
    return {"authorization": f"Bearer {key['key']}"}
