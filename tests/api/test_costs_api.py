"""GET /api/v1/costs through ASGI on SQLite and PostgreSQL: JSON, and CSV safe for spreadsheets."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

import httpx
import pytest

from keel.keys.auth import Authenticator
from keel.storage.batch import write_batch
from keel.storage.database import Database
from tests.analytics.helpers import T0, build_app, llm_span, make_record
from tests.api.conftest import ADMIN

RANGE = {"since": str(T0 - 3600), "until": str(T0 + 3600)}


@pytest.fixture
async def client(db: Database, auth: Authenticator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(db, auth))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as c:
        yield c


@pytest.fixture
async def calls(db: Database) -> None:
    await write_batch(
        db,
        [
            make_record(1, customer="acme", cost_usd=0.25, cost_saved_usd=0.05),
            make_record(2, customer="acme", cost_usd=0.5),
            make_record(3, customer='=HYPERLINK("http://evil","x")', cost_usd=0.125),
            make_record(4, customer='big, "quoted"\nco', cost_usd=1.0),
            make_record(5, customer=None, cost_usd=0.0625),
            llm_span(6, customer="@sum", cost_usd=0.03125),
        ],
    )


async def test_costs_per_customer_as_json(client: httpx.AsyncClient, calls: None) -> None:
    response = await client.get("/api/v1/costs", params=RANGE, headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert body["group_by"] == "customer"
    assert body["total"]["cost_usd"] == pytest.approx(1.96875)
    assert body["total"]["cost_saved_usd"] == pytest.approx(0.05)
    assert [(r["value"], r["requests"], r["cost_usd"]) for r in body["rows"]] == [
        ('big, "quoted"\nco', 1, 1.0),
        ("acme", 2, 0.75),
        ('=HYPERLINK("http://evil","x")', 1, 0.125),
        (None, 1, 0.0625),
        ("@sum", 1, 0.03125),
    ]
    by_model = await client.get(
        "/api/v1/costs", params={**RANGE, "group_by": "model", "customer": "acme"}, headers=ADMIN
    )
    assert [(r["value"], r["cost_usd"]) for r in by_model.json()["rows"]] == [("gpt-4o-mini", 0.75)]


async def test_costs_as_csv_escape_and_defuse_formulas(
    client: httpx.AsyncClient, calls: None
) -> None:
    response = await client.get("/api/v1/costs", params={**RANGE, "format": "csv"}, headers=ADMIN)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert 'filename="keel-costs-by-customer.csv"' in response.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows == [
        [
            "customer",
            "requests",
            "errors",
            "input_tokens",
            "output_tokens",
            "tokens",
            "cost_usd",
            "cost_saved_usd",
        ],
        ['big, "quoted"\nco', "1", "0", "12", "34", "46", "1.0", "0.0"],
        ["acme", "2", "0", "24", "68", "92", "0.75", "0.05"],
        ['\'=HYPERLINK("http://evil","x")', "1", "0", "12", "34", "46", "0.125", "0.0"],
        ["", "1", "0", "12", "34", "46", "0.0625", "0.0"],
        ["'@sum", "1", "0", "7", "3", "10", "0.03125", "0.0"],
    ]
    assert response.text.startswith("customer,requests,")
    assert '"big, ""quoted""\nco"' in response.text  # quoted, quotes doubled, newline kept


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"group_by": "colour"}, "`group_by` must be one of"),
        ({"format": "xlsx"}, "`format` must be `json` or `csv`"),
        ({"range": "forever"}, "`range` must be one of"),
    ],
)
async def test_invalid_parameters_are_400(
    client: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    response = await client.get("/api/v1/costs", params=params, headers=ADMIN)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
