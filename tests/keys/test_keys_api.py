"""The keys routes under /api/v1, through ASGI, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from keel.keys.auth import Authenticator
from tests.keys.app import build_keys_app

ADMIN_KEY = "admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def auth(engine: AsyncEngine) -> Authenticator:
    authenticator = Authenticator(engine, ADMIN_KEY)
    await authenticator.start()
    return authenticator


@pytest.fixture
async def client(engine: AsyncEngine, auth: Authenticator) -> AsyncIterator[httpx.AsyncClient]:
    app = build_keys_app(engine, auth)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as c:
        yield c


async def _create(client: httpx.AsyncClient, **body: object) -> dict[str, object]:
    response = await client.post("/api/v1/keys", json={"name": "app", **body}, headers=ADMIN)
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()
    return data


async def test_create_shows_the_key_once_and_it_works_at_once(
    client: httpx.AsyncClient, auth: Authenticator
) -> None:
    created = await _create(
        client,
        customer="acme",
        expires_at="2099-05-01T12:00:00",
        allowed_models=["mock/echo"],
        metadata={"team": "growth"},
    )
    key_id, token = created["id"], created["key"]
    assert created == {
        "id": key_id,
        "name": "app",
        "prefix": f"sk-keel-{key_id}-…",
        "customer": "acme",
        "created_at": created["created_at"],
        "expires_at": "2099-05-01T12:00:00Z",
        "revoked_at": None,
        "status": "active",
        "allowed_models": ["mock/echo"],
        "metadata": {"team": "growth"},
        "rpm": None,
        "tpm": None,
        "budget_usd": None,
        "budget_period": None,
        "key": token,
    }
    assert (await auth.authenticate(f"Bearer {token}")).key_id == key_id
    shown = (await client.get(f"/api/v1/keys/{key_id}", headers=ADMIN)).json()
    assert "key" not in shown and str(token) not in str(shown)
    assert shown == {k: v for k, v in created.items() if k != "key"}


async def test_create_expires_in_days(client: httpx.AsyncClient) -> None:
    created = await _create(client, expires_in_days=30)
    expires = datetime.fromisoformat(str(created["expires_at"])).timestamp()
    assert abs(expires - (time.time() + 30 * 86400)) < 10


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"name": ""}, 422),
        ({"name": "a", "expires_in_days": 0}, 422),
        ({"name": "a", "expires_in_days": 1, "expires_at": "2099-01-01T00:00:00Z"}, 422),
        ({"name": "a", "unknown": 1}, 422),
        ({"name": "a", "expires_at": "2001-01-01T00:00:00Z"}, 400),
    ],
)
async def test_create_rejects_bad_bodies(
    client: httpx.AsyncClient, body: dict[str, object], status: int
) -> None:
    response = await client.post("/api/v1/keys", json=body, headers=ADMIN)
    assert response.status_code == status
    if status == 400:
        assert response.json() == {
            "error": {
                "message": "expires_at is in the past",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
    assert (await client.get("/api/v1/keys", headers=ADMIN)).json() == {"data": []}


async def test_list_get_revoke_delete(client: httpx.AsyncClient, auth: Authenticator) -> None:
    a = await _create(client, name="a")
    b = await _create(client, name="b")
    c = await _create(client, name="c")
    listed = (await client.get("/api/v1/keys", headers=ADMIN)).json()["data"]
    assert [k["name"] for k in listed] == ["a", "b", "c"]

    revoked = await client.post(f"/api/v1/keys/{b['id']}/revoke", headers=ADMIN)
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked" and revoked.json()["revoked_at"]
    deleted = await client.delete(f"/api/v1/keys/{c['id']}", headers=ADMIN)
    assert deleted.status_code == 200 and deleted.json()["status"] == "revoked"

    listed = (await client.get("/api/v1/keys", headers=ADMIN)).json()["data"]
    assert [k["name"] for k in listed] == ["a"]
    everything = await client.get("/api/v1/keys?include_revoked=true", headers=ADMIN)
    assert [k["status"] for k in everything.json()["data"]] == ["active", "revoked", "revoked"]

    for key in (b, c):  # revocation takes effect in this process at once
        with pytest.raises(Exception, match="this API key was revoked"):
            await auth.authenticate(f"Bearer {key['key']}")
    assert (await auth.authenticate(f"Bearer {a['key']}")).key_id == a["id"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", ""), ("POST", "/revoke"), ("DELETE", "")],
)
async def test_unknown_key_is_404(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, f"/api/v1/keys/nosuchkey234{path}", headers=ADMIN)
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "no API key with id nosuchkey234",
            "type": "not_found_error",
            "param": None,
            "code": None,
        }
    }


async def test_404_does_not_echo_a_whole_key(client: httpx.AsyncClient) -> None:
    token = str((await _create(client))["key"])
    response = await client.get(f"/api/v1/keys/{token}", headers=ADMIN)
    assert response.status_code == 404
    assert token not in response.text
    assert response.json()["error"]["message"] == "no API key with id"


async def test_admin_only(client: httpx.AsyncClient) -> None:
    token = (await _create(client))["key"]
    missing = await client.get("/api/v1/keys")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json() == {
        "error": {
            "message": "missing API key: send Authorization: Bearer <key>",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    bad = await client.get("/api/v1/keys", headers={"Authorization": "Bearer wrong-admin"})
    assert bad.status_code == 401 and "wrong-admin" not in bad.text
    virtual = await client.post(
        "/api/v1/keys", json={"name": "x"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert virtual.status_code == 403
    assert virtual.json()["error"] == {
        "message": "this route needs the admin key",
        "type": "permission_error",
        "param": None,
        "code": None,
    }
    assert str(token) not in virtual.text


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "keel.internal", "[::1]:4000"])
async def test_host_header_grants_nothing(client: httpx.AsyncClient, host: str) -> None:
    response = await client.get("/api/v1/keys", headers={"Host": host})
    assert response.status_code == 401


async def test_open_mode_needs_no_key(engine: AsyncEngine) -> None:
    auth = Authenticator(engine, None)
    await auth.start()
    transport = httpx.ASGITransport(app=build_keys_app(engine, auth))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
        created = await client.post("/api/v1/keys", json={"name": "a"})
        assert created.status_code == 201
        token = created.json()["key"]
        assert (await client.get("/api/v1/keys")).status_code == 200
        sdk = await client.get("/api/v1/keys", headers={"Authorization": "Bearer sk-whatever"})
        assert sdk.status_code == 200
        virtual = await client.get("/api/v1/keys", headers={"Authorization": f"Bearer {token}"})
        assert virtual.status_code == 403


async def test_openapi_documents_the_routes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/api/v1/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths["/api/v1/keys"]) == {"get", "post"}
    assert set(paths["/api/v1/keys/{key_id}"]) == {"get", "delete", "patch"}
    assert set(paths["/api/v1/keys/{key_id}/revoke"]) == {"post"}
    schemas = spec["components"]["schemas"]
    assert {"CreateKeyRequest", "CreatedKey", "KeyOut", "KeyList", "UpdateKeyRequest"} <= set(
        schemas
    )
    assert "key" in schemas["CreatedKey"]["properties"]
    assert "key" not in schemas["KeyOut"]["properties"]


async def test_create_and_change_limits(client: httpx.AsyncClient, auth: Authenticator) -> None:
    created = await _create(client, rpm=60, tpm=100000, budget_usd=20, budget_period="month")
    key_id, token = created["id"], created["key"]
    limits = ("rpm", "tpm", "budget_usd", "budget_period")
    assert [created[k] for k in limits] == [60, 100000, 20.0, "month"]
    principal = await auth.authenticate(f"Bearer {token}")
    assert (principal.rpm, principal.tpm, principal.budget_usd, principal.budget_period) == (
        60,
        100000,
        20.0,
        "month",
    )

    patched = await client.patch(
        f"/api/v1/keys/{key_id}", json={"rpm": None, "budget_usd": 5}, headers=ADMIN
    )
    assert patched.status_code == 200, patched.text
    shown = (await client.get(f"/api/v1/keys/{key_id}", headers=ADMIN)).json()
    assert patched.json() == shown
    assert [shown[k] for k in limits] == [None, 100000, 5.0, "month"]
    principal = await auth.authenticate(f"Bearer {token}")  # this process knows at once
    assert (principal.rpm, principal.budget_usd) == (None, 5.0)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"rpm": 0}, 422, None),
        ({"tpm": -1}, 422, None),
        ({"budget_usd": 0, "budget_period": "day"}, 422, None),
        ({"budget_usd": None}, 400, "budget_usd and budget_period go together"),
        ({"budget_period": "week", "budget_usd": 1}, 422, None),
        ({"rpm": 1.5}, 422, None),
        ({"rpm": 1, "name": "x"}, 422, None),
        ({"budget_period": None}, 400, "budget_usd and budget_period go together"),
    ],
)
async def test_bad_limits_are_refused(
    client: httpx.AsyncClient, body: dict[str, object], status: int, message: str | None
) -> None:
    created = await _create(client, budget_usd=1, budget_period="day")
    bad_create = await client.post(
        "/api/v1/keys", json={"name": "b", **body, "budget_period": "day"}, headers=ADMIN
    )
    if "budget_usd" not in body and "rpm" not in body and "tpm" not in body:
        assert bad_create.status_code == 422  # a period without a budget
    patched = await client.patch(f"/api/v1/keys/{created['id']}", json=body, headers=ADMIN)
    assert patched.status_code == status, patched.text
    if message is not None:
        assert message in patched.json()["error"]["message"]
    shown = (await client.get(f"/api/v1/keys/{created['id']}", headers=ADMIN)).json()
    assert (shown["budget_usd"], shown["budget_period"]) == (1.0, "day")


async def test_patch_unknown_key_is_404(client: httpx.AsyncClient) -> None:
    response = await client.patch("/api/v1/keys/nosuchkey234", json={"rpm": 1}, headers=ADMIN)
    assert response.status_code == 404
