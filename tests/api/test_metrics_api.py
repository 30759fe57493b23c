"""GET /api/v1/metrics through ASGI on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from keel.keys.auth import Authenticator
from keel.scores import store as scores
from keel.storage.batch import write_batch
from keel.storage.database import Database
from tests.analytics.helpers import build_app, llm_span, make_record, reference
from tests.api.conftest import ADMIN

NOW = time.time()
HOUR_START = NOW - NOW % 3600


@pytest.fixture
async def client(db: Database, auth: Authenticator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(db, auth))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as c:
        yield c


@pytest.fixture
async def calls(db: Database) -> list[object]:
    data: list[object] = [
        make_record(i, created_at=HOUR_START - 3600 + i * 97, model="gpt-4o") for i in range(20)
    ]
    data += [
        llm_span(
            i,
            trace=i,
            start_time=HOUR_START - 7200 + i * 150,
            end_time=HOUR_START - 7200 + i * 150 + 1,
        )
        for i in range(30)
    ]
    await write_batch(db, data)  # type: ignore[arg-type]
    await scores.add_score(
        db, trace_id="1" * 32, name="helpful", data_type="boolean", value=True, author="t"
    )
    return data


async def test_metrics_for_a_range_with_series_breakdown_and_scores(
    client: httpx.AsyncClient, calls: list[object]
) -> None:
    since, until = HOUR_START - 3 * 3600, HOUR_START
    response = await client.get(
        "/api/v1/metrics",
        params={"since": since, "until": until, "step": "1h", "group_by": "model"},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["since"] == since and body["until"] == until and body["step"] == 3600
    assert body["filters"] == {} and body["group_by"] == "model"
    expected = reference(calls, since, until)  # type: ignore[arg-type]
    assert body["summary"]["requests"] == expected["requests"] == 50
    assert body["summary"]["cost_usd"] == pytest.approx(expected["cost_usd"])
    assert [p["t"] for p in body["series"]] == [since, since + 3600, since + 7200]
    assert [p["requests"] for p in body["series"]] == [0, 24, 26]
    assert [(r["value"], r["requests"]) for r in body["breakdown"]] == [
        ("claude-sonnet", 30),
        ("gpt-4o", 20),
    ]
    assert body["scores"] == []  # scored just now, outside this range


async def test_range_filters_and_defaults(client: httpx.AsyncClient, calls: list[object]) -> None:
    body = (
        await client.get("/api/v1/metrics?range=24h&model=gpt-4o&source=gateway", headers=ADMIN)
    ).json()
    assert body["until"] - body["since"] == 86400
    assert body["filters"] == {"model": "gpt-4o", "source": "gateway"}
    assert body["summary"]["requests"] == 20
    assert body["step"] == 300 and len(body["series"]) in (288, 289)
    assert body["breakdown"] == []
    assert body["scores"] == [
        {"name": "helpful", "data_type": "boolean", "count": 1, "avg": 1.0, "labels": {}}
    ]
    defaults = (await client.get("/api/v1/metrics", headers=ADMIN)).json()
    assert defaults["until"] - defaults["since"] == pytest.approx(86400)
    assert defaults["summary"]["requests"] == 50


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"range": "2w"}, "`range` must be one of"),
        ({"range": "1h", "since": "0"}, "either `range` or `since`"),
        ({"since": "soon"}, "`since` must be unix seconds or an ISO 8601 time"),
        ({"since": "100", "until": "50"}, "`since` must be before `until`"),
        ({"step": "0"}, "`step` must be"),
        ({"step": "fortnight"}, "`step` must be"),
        ({"step": "1", "range": "7d"}, "at most 10000"),
        ({"group_by": "colour"}, "`group_by` must be one of"),
        ({"order_by": "vibes"}, "`order_by` must be one of"),
        ({"source": "kafka"}, "source must be 'gateway' or 'otlp'"),
    ],
)
async def test_invalid_parameters_are_400(
    client: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    response = await client.get("/api/v1/metrics", params=params, headers=ADMIN)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


async def test_metrics_need_the_admin_key(
    client: httpx.AsyncClient, virtual_key: tuple[str, dict[str, str]]
) -> None:
    assert (await client.get("/api/v1/metrics", headers=virtual_key[1])).status_code == 403
