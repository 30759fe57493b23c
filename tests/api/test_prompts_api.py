"""The prompt routes under /api/v1 over a real PromptService, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keel.keys.auth import Authenticator
from keel.storage.database import Database
from tests.api.app import build_prompts_app
from tests.api.conftest import ADMIN

SUMMARIZE: dict[str, Any] = {
    "name": "summarize",
    "description": "Summaries for the support inbox",
    "messages": [
        {"role": "system", "content": "You write summaries for {{ audience }}."},
        {"role": "user", "content": "{{ text }}"},
    ],
    "variables": ["audience", "text"],
    "config": {"model": "fast", "temperature": 0.2, "max_tokens": 300},
}


async def _push(client: httpx.AsyncClient, status: int = 201, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/prompts", json={**SUMMARIZE, **body}, headers=ADMIN)
    assert response.status_code == status, response.text
    data: dict[str, Any] = response.json()
    return data


async def _get(client: httpx.AsyncClient, path: str, status: int = 200, **params: Any) -> Any:
    response = await client.get(f"/api/v1{path}", params=params, headers=ADMIN)
    assert response.status_code == status, response.text
    return response.json()


async def _promote(client: httpx.AsyncClient, version: int, label: str = "production") -> Any:
    response = await client.put(
        f"/api/v1/prompts/summarize/labels/{label}", json={"version": version}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_push_is_idempotent_and_numbers_versions(client: httpx.AsyncClient) -> None:
    first = await _push(client, message="first cut")
    version = first["version"]
    assert first == {"version": version, "created": True}
    assert version == {
        "prompt": "summarize",
        "version": 1,
        "content_hash": version["content_hash"],
        "kind": "chat",
        "messages": SUMMARIZE["messages"],
        "template": None,
        "variables": ["audience", "text"],
        "config": {"model": "fast", "temperature": 0.2, "max_tokens": 300},
        "description": "Summaries for the support inbox",
        "message": "first cut",
        "author": "admin",
        "created_at": version["created_at"],
        "labels": [],
    }
    assert len(version["content_hash"]) == 64 and version["created_at"].endswith("Z")

    again = await _push(client, status=200, message="same again")
    assert again["created"] is False and again["version"]["version"] == 1
    second = await _push(client, config={"model": "fast", "temperature": 0.5})
    assert second["created"] is True and second["version"]["version"] == 2


async def test_text_prompt_and_bad_content(client: httpx.AsyncClient) -> None:
    body = {"name": "greet", "template": "Hello {{ who }}", "variables": ["who"]}
    response = await client.post("/api/v1/prompts", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    version = response.json()["version"]
    assert (version["kind"], version["template"], version["messages"]) == (
        "text",
        "Hello {{ who }}",
        None,
    )
    both = {**body, "messages": [{"role": "user", "content": "x"}]}
    refused = await client.post("/api/v1/prompts", json=both, headers=ADMIN)
    assert refused.status_code == 400
    assert refused.json()["error"]["type"] == "invalid_request_error"
    unknown = await client.post("/api/v1/prompts", json={**body, "colour": 1}, headers=ADMIN)
    assert unknown.status_code == 400
    assert "colour" in unknown.json()["error"]["message"]


async def test_list_get_version_and_resolve(client: httpx.AsyncClient) -> None:
    await _push(client)
    await _push(client, config={"model": "fast"})
    await _promote(client, 1)

    listed = await _get(client, "/prompts")
    summary = listed["data"][0]
    assert listed == {
        "data": [
            {
                "name": "summarize",
                "description": "Summaries for the support inbox",
                "latest_version": 2,
                "labels": {"production": 1},
                "protected_labels": [],
                "created_at": summary["created_at"],
                "updated_at": summary["updated_at"],
            }
        ]
    }
    whole = await _get(client, "/prompts/summarize")
    assert [v["version"] for v in whole["versions"]] == [2, 1]
    assert {k: v for k, v in whole.items() if k != "versions"} == summary
    assert whole["versions"][1]["labels"] == ["production"]

    one = await _get(client, "/prompts/summarize/versions/2")
    assert one == whole["versions"][0]
    assert (await _get(client, "/prompts/summarize/resolve"))["version"] == 1
    assert (await _get(client, "/prompts/summarize/resolve", version=2))["version"] == 2
    staging = await _get(client, "/prompts/summarize/resolve", 404, label="staging")
    assert staging["error"]["type"] == "not_found_error"
    await _get(client, "/prompts/summarize/resolve", 400, label="production", version=2)
    await _get(client, "/prompts/nothing", 404)
    await _get(client, "/prompts/summarize/versions/9", 404)


async def test_promote_rollback_history(client: httpx.AsyncClient) -> None:
    await _push(client)
    await _push(client, config={"model": "fast"})
    first = await _promote(client, 1)
    assert first == {
        "prompt": "summarize",
        "label": "production",
        "from_version": None,
        "to_version": 1,
        "actor": "admin",
        "at": first["at"],
        "action": "promote",
    }
    await _promote(client, 2)
    back = await client.post("/api/v1/prompts/summarize/labels/production/rollback", headers=ADMIN)
    assert back.status_code == 200, back.text
    assert {k: v for k, v in back.json().items() if k != "at"} == {
        "prompt": "summarize",
        "label": "production",
        "from_version": 2,
        "to_version": 1,
        "actor": "admin",
        "action": "rollback",
    }
    history = await _get(client, "/prompts/summarize/history", label="production")
    moves = [(m["action"], m["from_version"], m["to_version"]) for m in history["data"]]
    assert moves == [("rollback", 2, 1), ("promote", 1, 2), ("promote", None, 1)]
    await _promote(client, 2, label="staging")
    everything = await _get(client, "/prompts/summarize/history")
    assert len(everything["data"]) == 4
    await _get(client, "/prompts/summarize/history", label="nope")  # no moves: an empty list


async def test_diff(client: httpx.AsyncClient) -> None:
    await _push(client)
    changed = [SUMMARIZE["messages"][0], {"role": "user", "content": "Summarize: {{ text }}"}]
    await _push(client, messages=changed, config={"model": "fast", "temperature": 0.7})
    diff = await _get(client, "/prompts/summarize/diff", **{"from": 1, "to": 2})
    assert (diff["prompt"], diff["from"], diff["to"]) == ("summarize", 1, 2)
    assert "-" in diff["template"] and "+" in diff["template"]
    assert "Summarize: {{ text }}" in diff["template"]
    assert sorted(diff["config"], key=lambda c: c["key"]) == [
        {"key": "max_tokens", "from": 300, "to": None},
        {"key": "temperature", "from": 0.2, "to": 0.7},
    ]
    await _get(client, "/prompts/summarize/diff", 404, **{"from": 1, "to": 7})
    await _get(client, "/prompts/summarize/diff", 400, to=2)


async def test_render_stored_and_inline(client: httpx.AsyncClient) -> None:
    await _push(client)
    await _promote(client, 1)
    body = {"name": "summarize", "variables": {"audience": "agents", "text": "a <b> c"}}
    response = await client.post("/api/v1/prompts/render", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "prompt": "summarize",
        "version": 1,
        "messages": [
            {"role": "system", "content": "You write summaries for agents."},
            {"role": "user", "content": "a <b> c"},
        ],
        "config": {"model": "fast", "temperature": 0.2, "max_tokens": 300},
    }
    inline = {
        "content": {"template": "Hi {{ who }}", "variables": ["who"]},
        "variables": {"who": "Ann"},
    }
    answer = (await client.post("/api/v1/prompts/render", json=inline, headers=ADMIN)).json()
    assert (answer["prompt"], answer["version"], answer["config"]) == (None, None, {})
    assert answer["messages"][-1]["content"] == "Hi Ann"

    missing = {"name": "summarize", "variables": {"audience": "agents"}}
    refused = await client.post("/api/v1/prompts/render", json=missing, headers=ADMIN)
    assert refused.status_code == 400 and "text" in refused.json()["error"]["message"]
    neither = await client.post("/api/v1/prompts/render", json={"variables": {}}, headers=ADMIN)
    assert neither.status_code == 400


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ self._TemplateReference__context }}",
        "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    ],
)
async def test_sandbox_escapes_are_refused(client: httpx.AsyncClient, payload: str) -> None:
    pushed = await client.post(
        "/api/v1/prompts", json={"name": "evil", "template": payload}, headers=ADMIN
    )
    assert pushed.status_code == 400, pushed.text
    inline = {"content": {"template": payload}, "variables": {}}
    rendered = await client.post("/api/v1/prompts/render", json=inline, headers=ADMIN)
    assert rendered.status_code == 400, rendered.text
    assert (await _get(client, "/prompts"))["data"] == []


async def test_virtual_keys_push_but_not_protected_labels_or_events(
    client: httpx.AsyncClient, virtual_key: tuple[str, dict[str, str]]
) -> None:
    key_id, as_key = virtual_key
    pushed = await client.post("/api/v1/prompts", json=SUMMARIZE, headers=as_key)
    assert pushed.status_code == 201 and pushed.json()["version"]["author"] == key_id
    moved = await client.put(
        "/api/v1/prompts/summarize/labels/staging", json={"version": 1}, headers=as_key
    )
    assert moved.status_code == 200 and moved.json()["actor"] == key_id

    protect = {"version": 1, "protected": True}
    refused = await client.put(
        "/api/v1/prompts/summarize/labels/production", json=protect, headers=as_key
    )
    assert refused.status_code == 403, refused.text
    protected = await client.put(
        "/api/v1/prompts/summarize/labels/production", json=protect, headers=ADMIN
    )
    assert protected.status_code == 200, protected.text
    assert (await _get(client, "/prompts/summarize"))["protected_labels"] == ["production"]
    blocked = await client.put(
        "/api/v1/prompts/summarize/labels/production", json={"version": 1}, headers=as_key
    )
    assert blocked.status_code == 403
    assert blocked.json()["error"]["type"] == "permission_error"
    rollback = await client.post(
        "/api/v1/prompts/summarize/labels/production/rollback", headers=as_key
    )
    assert rollback.status_code == 403

    assert (await client.get("/api/v1/prompts", headers=as_key)).status_code == 200
    assert (await client.get("/api/v1/events", headers=as_key)).status_code == 403
    assert (await client.get("/api/v1/prompts")).status_code == 401


async def test_events(client: httpx.AsyncClient) -> None:
    await _push(client)
    await _promote(client, 1)
    page = await _get(client, "/events", limit=1)
    assert len(page["data"]) == 1 and page["next_cursor"]
    rest = await _get(client, "/events", cursor=page["next_cursor"])
    assert len(rest["data"]) == 1
    assert len((await _get(client, "/events"))["data"]) == 2


async def test_openapi_lists_the_routes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/api/v1/openapi.json")).json()["paths"]
    assert sorted(paths) == [
        "/api/v1/events",
        "/api/v1/prompts",
        "/api/v1/prompts/render",
        "/api/v1/prompts/{name}",
        "/api/v1/prompts/{name}/diff",
        "/api/v1/prompts/{name}/history",
        "/api/v1/prompts/{name}/labels/{label}",
        "/api/v1/prompts/{name}/labels/{label}/rollback",
        "/api/v1/prompts/{name}/resolve",
        "/api/v1/prompts/{name}/versions/{version}",
    ]


async def test_open_mode_acts_as_open(db: Database) -> None:
    authenticator = Authenticator(db.engine, None)
    await authenticator.start()
    transport = httpx.ASGITransport(app=build_prompts_app(db, authenticator))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
        pushed = await client.post("/api/v1/prompts", json=SUMMARIZE)
        assert pushed.status_code == 201 and pushed.json()["version"]["author"] == "open"
        body = {"version": 1, "protected": True}
        moved = await client.put("/api/v1/prompts/summarize/labels/production", json=body)
        assert moved.status_code == 200 and moved.json()["actor"] == "open"
        events = await client.get("/api/v1/events")
        assert events.status_code == 200
        assert {(e["kind"], e["actor"]) for e in events.json()["data"]} >= {
            ("prompt.version_created", "open"),
            ("prompt.label_moved", "open"),
        }
