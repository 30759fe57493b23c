"""The alert routes under /api/v1/alerts through ASGI, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from keel.alerts import store
from keel.keys import store as key_store
from keel.keys.auth import Authenticator
from keel.storage.database import Database
from tests.alerts.app import alert_service, build_alerts_app
from tests.alerts.receiver import Receiver

ADMIN_KEY = "admin-key-for-alert-tests-0123"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SECRET = "T000/B000/XXXXSECRETXXXX"


@pytest.fixture
async def client(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    authenticator = Authenticator(db.engine, ADMIN_KEY)
    await authenticator.start()
    alerts = alert_service(db)
    transport = httpx.ASGITransport(app=build_alerts_app(db, authenticator, alerts))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel", headers=ADMIN) as c:
        yield c
    await alerts.stop()


def _body(receiver: Receiver, **changes: Any) -> dict[str, Any]:
    return {
        "name": "errors",
        "metric": "error_rate",
        "filters": {"model": "mock/fail"},
        "window_s": 60,
        "comparator": ">",
        "threshold": 0.5,
        "for_s": 30,
        "channels": [
            {"type": "webhook", "url": receiver.url("/hook")},
            {"type": "slack", "url": receiver.url(f"/services/{SECRET}")},
        ],
        **changes,
    }


def _error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["message"]


async def test_create_read_update_delete(client: httpx.AsyncClient, receiver: Receiver) -> None:
    created = await client.post("/api/v1/alerts/rules", json=_body(receiver))
    assert created.status_code == 201, created.text
    rule = created.json()
    assert SECRET not in created.text
    redacted = f"{receiver.base_url}/…"
    assert {k: v for k, v in rule.items() if k not in {"id", "created_at", "updated_at"}} == {
        "name": "errors",
        "metric": "error_rate",
        "filters": {"model": "mock/fail"},
        "window_s": 60,
        "comparator": ">",
        "threshold": 0.5,
        "for_s": 30,
        "channels": [{"type": "webhook", "url": redacted}, {"type": "slack", "url": redacted}],
        "enabled": True,
        "state": "ok",
        "state_since": None,
        "last_value": None,
        "last_evaluated_at": None,
    }
    assert (await client.get(f"/api/v1/alerts/rules/{rule['id']}")).json() == rule
    assert (await client.get("/api/v1/alerts/rules/errors")).json() == rule
    assert (await client.get("/api/v1/alerts/rules")).json() == {"data": [rule]}

    patched = await client.patch(
        "/api/v1/alerts/rules/errors", json={"threshold": 0.2, "enabled": False}
    )
    assert patched.status_code == 200
    assert (patched.json()["threshold"], patched.json()["enabled"]) == (0.2, False)
    assert patched.json()["channels"] == rule["channels"]

    deleted = await client.delete(f"/api/v1/alerts/rules/{rule['id']}")
    assert deleted.json()["name"] == "errors"
    assert _error(await client.get("/api/v1/alerts/rules/errors")) == (
        404,
        "no alert rule 'errors'",
    )
    assert _error(await client.delete("/api/v1/alerts/rules/errors"))[0] == 404
    assert _error(await client.patch("/api/v1/alerts/rules/errors", json={"for_s": 1}))[0] == 404


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"metric": "nope"}, "unknown metric 'nope': use one of requests, errors, error_rate"),
        ({"comparator": "=="}, "invalid request: body.comparator: Input should be '>'"),
        ({"window_s": 0}, "window_s must be between 1 and 2678400, got 0"),
        ({"filters": {"colour": "red"}}, "unknown filter 'colour'"),
        ({"channels": [{"type": "webhook", "url": "gopher://h/SECRET"}]}, "channels[0].url must"),
        ({"channels": [{"type": "pager", "url": "http://h"}]}, "invalid request: body.channels"),
        ({"extra": 1}, "invalid request: body.extra: Extra inputs are not permitted"),
        ({"name": "no spaces"}, "name is 1 to 128 letters"),
    ],
)
async def test_bad_rules_get_clear_400s(
    client: httpx.AsyncClient, receiver: Receiver, changes: dict[str, Any], expected: str
) -> None:
    status, message = _error(
        await client.post("/api/v1/alerts/rules", json=_body(receiver, **changes))
    )
    assert status == 400
    assert message.startswith(expected), message
    assert "SECRET" not in message


async def test_duplicates_nulls_and_unknown_fields_on_update(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await client.post("/api/v1/alerts/rules", json=_body(receiver))
    assert _error(await client.post("/api/v1/alerts/rules", json=_body(receiver))) == (
        409,
        "an alert rule named 'errors' exists",
    )
    assert _error(await client.patch("/api/v1/alerts/rules/errors", json={"metric": None})) == (
        400,
        "metric cannot be null",
    )
    status, message = _error(
        await client.patch("/api/v1/alerts/rules/errors", json={"state": "firing"})
    )
    assert (status, message) == (400, "invalid request: body.state: Extra inputs are not permitted")


async def test_admin_only(client: httpx.AsyncClient, db: Database) -> None:
    anonymous = await client.get("/api/v1/alerts/rules", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    _, token = await key_store.insert_key(db.engine, name="app")
    as_key = await client.get("/api/v1/alerts/events", headers={"Authorization": f"Bearer {token}"})
    assert _error(as_key) == (403, "this route needs the admin key")


async def test_history_by_rule(client: httpx.AsyncClient, db: Database, receiver: Receiver) -> None:
    rule = (await client.post("/api/v1/alerts/rules", json=_body(receiver))).json()
    fired = await store.add_event(
        db,
        rule_id=rule["id"],
        rule_name="errors",
        kind="firing",
        at=10.0,
        value=0.9,
        threshold=0.5,
        message="fired",
        deliveries=[],
    )
    budget = await store.add_event(
        db,
        rule_id=None,
        rule_name="budget customer acme",
        kind="budget_threshold",
        at=20.0,
        value=16.0,
        threshold=16.0,
        message="budget",
        deliveries=[],
    )
    assert (await client.get("/api/v1/alerts/events")).json() == {"data": [budget, fired]}
    by_name = await client.get("/api/v1/alerts/events", params={"rule": "errors"})
    assert by_name.json() == {"data": [fired]}
    await client.delete("/api/v1/alerts/rules/errors")
    by_id = await client.get("/api/v1/alerts/events", params={"rule": rule["id"]})
    assert by_id.json() == {"data": [fired]}
    assert (await client.get("/api/v1/alerts/events", params={"limit": 1})).json() == {
        "data": [budget]
    }
    assert (await client.get("/api/v1/alerts/events", params={"limit": 0})).status_code == 400


async def test_test_notification(client: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.script(f"/services/{SECRET}", 500)
    await client.post("/api/v1/alerts/rules", json=_body(receiver))
    answer = await client.post("/api/v1/alerts/rules/errors/test")
    assert answer.status_code == 200
    redacted = f"{receiver.base_url}/…"
    assert answer.json() == {
        "rule": "errors",
        "deliveries": [
            {
                "channel": redacted,
                "type": "webhook",
                "status": "sent",
                "attempts": 1,
                "error": None,
            },
            {
                "channel": redacted,
                "type": "slack",
                "status": "failed",
                "attempts": 1,
                "error": "HTTP 500",
            },
        ],
    }
    [hook] = receiver.at("/hook")
    assert (hook.body["state"], hook.body["message"]) == (
        "test",
        "Test notification for error_rate > 0.5 over 60 s (model=mock/fail)",
    )
    assert (await client.get("/api/v1/alerts/events")).json() == {"data": []}
