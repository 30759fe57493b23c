"""The trace and session routes through ASGI on SQLite and PostgreSQL, and end to end through a
real `keel serve`: a gateway call with a traceparent shows up in its trace and the metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from keel.keys import store as key_store
from keel.keys.auth import Authenticator
from keel.storage.batch import write_batch
from keel.storage.database import Database
from tests.analytics.helpers import build_app
from tests.servers import KeelProcess
from tests.traces.test_store_reads import CLIENT, GATEWAY, ROOT, TRACE, _agent_trace

pytestmark = pytest.mark.timeout(60)

ADMIN_KEY = "admin-key-for-trace-tests-0123"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    yield database
    await database.close()


@pytest.fixture
async def client(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    authenticator = Authenticator(db.engine, ADMIN_KEY)
    await authenticator.start()
    transport = httpx.ASGITransport(app=build_app(db, authenticator))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as c:
        yield c


async def test_get_trace_and_span(db: Database, client: httpx.AsyncClient) -> None:
    await write_batch(db, _agent_trace())  # type: ignore[arg-type]
    response = await client.get(f"/api/v1/traces/{TRACE}", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert [s["span_id"] for s in body["spans"]] == [ROOT, CLIENT, GATEWAY]
    assert body["spans"][2]["source"] == "gateway"
    span = (await client.get(f"/api/v1/traces/{TRACE}/spans/{CLIENT}", headers=ADMIN)).json()
    assert (span["input"], span["output"]) == ("hello", "hi there")


async def test_unknown_trace_span_and_session_are_404(client: httpx.AsyncClient) -> None:
    for path, message in (
        (f"/api/v1/traces/{'0' * 32}", "no trace"),
        (f"/api/v1/traces/{TRACE}/spans/{ROOT}", "no span"),
        ("/api/v1/sessions/nope", "no session"),
    ):
        response = await client.get(path, headers=ADMIN)
        assert response.status_code == 404, path
        assert response.json()["error"]["type"] == "not_found_error"
        assert message in response.json()["error"]["message"]


async def test_trace_list_pages_and_validates(db: Database, client: httpx.AsyncClient) -> None:
    for i in range(5):
        await write_batch(db, _agent_trace(f"{i:032x}", 1_700_000_000.0 + i))  # type: ignore[arg-type]
    first = (await client.get("/api/v1/traces?limit=2", headers=ADMIN)).json()
    assert [t["trace_id"][-1] for t in first["data"]] == ["4", "3"]
    second = await client.get(
        "/api/v1/traces", params={"limit": 2, "cursor": first["next_cursor"]}, headers=ADMIN
    )
    assert [t["trace_id"][-1] for t in second.json()["data"]] == ["2", "1"]
    since = await client.get(
        "/api/v1/traces", params={"since": "2023-11-14T22:13:23Z"}, headers=ADMIN
    )
    assert [t["trace_id"][-1] for t in since.json()["data"]] == ["4", "3"]
    for params, message in (
        ({"cursor": "bogus"}, "invalid cursor"),
        ({"since": "yesterday"}, "`since` must be unix seconds or an ISO 8601 time"),
        ({"status": "meh"}, "status must be 'ok' or 'error'"),
        ({"limit": 0}, "limit"),
    ):
        response = await client.get("/api/v1/traces", params=params, headers=ADMIN)
        assert response.status_code == 400, params
        assert message in response.json()["error"]["message"]
    sessions = (await client.get("/api/v1/sessions", headers=ADMIN)).json()
    assert [s["session_id"] for s in sessions["data"]] == ["sess-1"]
    assert sessions["next_cursor"] is None
    detail = (await client.get("/api/v1/sessions/sess-1", headers=ADMIN)).json()
    assert detail["trace_count"] == 5 and len(detail["traces"]) == 5


async def test_trace_routes_need_the_admin_key(db: Database, client: httpx.AsyncClient) -> None:
    _, token = await key_store.insert_key(db.engine, name="app")
    assert (await client.get("/api/v1/traces")).status_code == 401
    response = await client.get("/api/v1/traces", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403


@pytest.mark.slow
def test_a_gateway_call_is_in_its_trace_and_the_metrics(tmp_path: Path) -> None:
    keel = KeelProcess(tmp_path / "keel", env={"KEEL_ADMIN_KEY": ADMIN_KEY}).start(timeout=60)
    try:
        trace, parent = "5e" * 16, "7a" * 8
        with httpx.Client(base_url=keel.url, timeout=10) as http:
            answer = http.post(
                "/v1/chat/completions",
                headers={
                    **ADMIN,
                    "traceparent": f"00-{trace}-{parent}-01",
                    "x-keel-customer": "acme",
                    "x-keel-tags": "demo,e2e",
                },
                json={"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert answer.status_code == 200
            deadline = time.monotonic() + 10
            while (found := http.get(f"/api/v1/traces/{trace}", headers=ADMIN)).status_code == 404:
                assert time.monotonic() < deadline, "the record never reached the database"
                time.sleep(0.05)
            spans = found.json()["spans"]
            assert [(s["source"], s["parent_span_id"], s["customer"]) for s in spans] == [
                ("gateway", parent, "acme")
            ]
            assert spans[0]["request_id"] == answer.headers["x-keel-request-id"]
            metrics = http.get("/api/v1/metrics?range=1h&group_by=tag", headers=ADMIN).json()
            assert metrics["summary"]["requests"] == 1
            assert sorted(r["value"] for r in metrics["breakdown"]) == ["demo", "e2e"]
            # The gateway request is an entry point: its parent span was never exported here.
            listed = http.get("/api/v1/traces", headers=ADMIN).json()["data"]
            assert [t["trace_id"] for t in listed] == [trace]
    finally:
        keel.stop()
