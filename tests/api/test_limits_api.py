"""The limits routes under /api/v1 through ASGI, on a migrated SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from keel.keys.auth import Authenticator, Principal
from keel.limits import (
    BudgetLedger,
    BudgetSpec,
    LimitPolicies,
    LimitSpec,
    MemoryState,
    parse_limits,
)
from keel.limits import store as policy_store
from keel.storage.database import Database
from tests.api.conftest import ADMIN
from tests.keys.app import build_keys_app

CONFIG = {
    "project": {"budget_usd": 500, "budget_period": "month"},
    "customers": {"acme": {"rpm": 60, "budget_usd": 20, "budget_period": "month"}},
}


@pytest.fixture
def policies() -> LimitPolicies:
    return LimitPolicies(parse_limits(CONFIG))


@pytest.fixture
def ledger() -> BudgetLedger:
    return BudgetLedger(MemoryState())


@pytest.fixture
async def client(
    db: Database, auth: Authenticator, policies: LimitPolicies, ledger: BudgetLedger
) -> AsyncIterator[httpx.AsyncClient]:
    app = build_keys_app(db.engine, auth, policies=policies, budgets=ledger)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as c:
        yield c


def _policy(scope: str, subject: str, source: str, **limits: object) -> dict[str, object]:
    values = {"rpm": None, "tpm": None, "budget_usd": None, "budget_period": None, **limits}
    return {"scope": scope, "subject": subject, **values, "source": source}


def _without_time(data: dict[str, object]) -> dict[str, object]:
    assert "updated_at" in data
    return {k: v for k, v in data.items() if k != "updated_at"}


async def test_set_get_list_delete(
    client: httpx.AsyncClient, db: Database, policies: LimitPolicies
) -> None:
    listed = (await client.get("/api/v1/limits", headers=ADMIN)).json()["data"]
    assert [_without_time(p) for p in listed] == [
        _policy("project", "default", "config", budget_usd=500.0, budget_period="month"),
        _policy("customer", "acme", "config", rpm=60, budget_usd=20.0, budget_period="month"),
    ]
    body = {"rpm": 5, "tpm": 1000, "budget_usd": 3, "budget_period": "day"}
    put = await client.put("/api/v1/limits/customer/acme", json=body, headers=ADMIN)
    assert put.status_code == 200, put.text
    expected = _policy(
        "customer", "acme", "api", rpm=5, tpm=1000, budget_usd=3.0, budget_period="day"
    )
    assert _without_time(put.json()) == expected
    got = await client.get("/api/v1/limits/customer/acme", headers=ADMIN)
    assert got.json() == put.json()
    # in force in this process at once, and stored for the other replicas
    rates, budgets = policies.specs_for(Principal(kind="open"), customer="acme")
    assert rates == [LimitSpec("customer", "acme", rpm=5, tpm=1000)]
    assert budgets[1:] == [BudgetSpec("customer", "acme", 3.0, "day")]
    stored = await policy_store.load_policies(db.engine)
    assert [p.to_dict() for p in stored] == [put.json()]

    pipeline = await client.put(
        "/api/v1/limits/pipeline/nightly%20jobs", json={"rpm": 2}, headers=ADMIN
    )
    assert pipeline.json()["subject"] == "nightly jobs"
    lifted = await client.put("/api/v1/limits/project/default", json={}, headers=ADMIN)
    assert _without_time(lifted.json()) == _policy("project", "default", "api")
    listed = (await client.get("/api/v1/limits", headers=ADMIN)).json()["data"]
    assert [(p["scope"], p["subject"], p["source"]) for p in listed] == [
        ("project", "default", "api"),
        ("customer", "acme", "api"),
        ("pipeline", "nightly jobs", "api"),
    ]

    deleted = await client.delete("/api/v1/limits/customer/acme", headers=ADMIN)
    assert deleted.status_code == 200 and deleted.json() == put.json()
    back = await client.get("/api/v1/limits/customer/acme", headers=ADMIN)
    assert back.json()["source"] == "config"  # the config's applies again
    again = await client.delete("/api/v1/limits/customer/acme", headers=ADMIN)
    assert again.status_code == 404
    assert again.json()["error"]["message"] == "no limits for customer 'acme'"


async def test_without_runtime_policies_the_database_answers(
    db: Database, auth: Authenticator
) -> None:
    transport = httpx.ASGITransport(app=build_keys_app(db.engine, auth))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
        await client.put("/api/v1/limits/model/gpt-4o", json={"rpm": 7}, headers=ADMIN)
        listed = (await client.get("/api/v1/limits", headers=ADMIN)).json()["data"]
        assert [_without_time(p) for p in listed] == [_policy("model", "gpt-4o", "api", rpm=7)]
        got = await client.get("/api/v1/limits/model/gpt-4o", headers=ADMIN)
        assert got.json()["rpm"] == 7
        spend = await client.get("/api/v1/limits/customer/acme/spend", headers=ADMIN)
        assert spend.status_code == 503


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/v1/limits/team/a", {"rpm": 1}, 400, "unknown scope 'team'"),
        ("/api/v1/limits/project/other", {"rpm": 1}, 400, "the project has one subject"),
        ("/api/v1/limits/model/m", {"budget_usd": 1, "budget_period": "day"}, 400, "rpm and tpm"),
        ("/api/v1/limits/customer/a", {"rpm": 0}, 422, None),
        ("/api/v1/limits/customer/a", {"budget_usd": 1}, 422, None),
        ("/api/v1/limits/customer/a", {"rpms": 1}, 422, None),
    ],
)
async def test_bad_policies_are_refused(
    client: httpx.AsyncClient, path: str, body: dict[str, object], status: int, message: str | None
) -> None:
    response = await client.put(path, json=body, headers=ADMIN)
    assert response.status_code == status, response.text
    if message is not None:
        assert message in response.json()["error"]["message"]


async def test_spend(client: httpx.AsyncClient, ledger: BudgetLedger) -> None:
    spec = BudgetSpec("customer", "acme", 20.0, "month")
    held = await ledger.reserve([spec], 1.5)
    await ledger.settle(await ledger.reserve([spec], 2.0), 0.25)
    response = await client.get("/api/v1/limits/customer/acme/spend", headers=ADMIN)
    assert response.json() == {
        "scope": "customer",
        "subject": "acme",
        "budget_usd": 20.0,
        "budget_period": "month",
        "spent_usd": 0.25,
        "reserved_usd": 1.5,
        "remaining_usd": 18.25,
    }
    await ledger.release(held)
    key = await client.post(
        "/api/v1/keys",
        json={"name": "k", "budget_usd": 1, "budget_period": "total"},
        headers=ADMIN,
    )
    key_spend = await client.get(f"/api/v1/limits/key/{key.json()['id']}/spend", headers=ADMIN)
    assert key_spend.json()["budget_period"] == "total"
    assert key_spend.json()["remaining_usd"] == 1.0
    none = await client.get("/api/v1/limits/pipeline/x/spend", headers=ADMIN)
    assert none.status_code == 404
    assert none.json()["error"]["message"] == "no budget for pipeline 'x'"


async def test_admin_only(client: httpx.AsyncClient) -> None:
    key = await client.post("/api/v1/keys", json={"name": "k"}, headers=ADMIN)
    virtual = {"Authorization": f"Bearer {key.json()['key']}"}
    for method, path in [
        ("GET", "/api/v1/limits"),
        ("PUT", "/api/v1/limits/customer/a"),
        ("DELETE", "/api/v1/limits/customer/a"),
        ("GET", "/api/v1/limits/customer/a/spend"),
    ]:
        response = await client.request(method, path, json={}, headers=virtual)
        assert response.status_code == 403
        assert (await client.request(method, path, json={})).status_code == 401
