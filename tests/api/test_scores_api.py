"""POST/GET /api/v1/scores through ASGI on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from keel.keys.auth import Authenticator
from keel.storage.database import Database
from tests.analytics.helpers import build_app
from tests.api.conftest import ADMIN

TRACE = "ab" * 16
SPAN = "cd" * 8


@pytest.fixture
async def client(db: Database, auth: Authenticator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(db, auth))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as c:
        yield c


def _without_generated(score: dict[str, Any]) -> dict[str, Any]:
    assert len(score.pop("id")) == 26 and score.pop("created_at").endswith("Z")
    return score


async def test_scores_of_each_type_are_stored_and_listed(client: httpx.AsyncClient) -> None:
    sent = [
        {"trace_id": TRACE, "name": "accuracy", "data_type": "numeric", "value": 0.75},
        {
            "trace_id": TRACE,
            "span_id": SPAN,
            "name": "helpful",
            "data_type": "boolean",
            "value": False,
            "source": "model",
            "comment": "judge said no",
        },
        {"trace_id": TRACE, "name": "tone", "data_type": "categorical", "label": "polite"},
    ]
    stored = []
    for body in sent:
        response = await client.post("/api/v1/scores", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        stored.append(response.json())
    defaults = {"span_id": None, "value": None, "label": None, "source": "human", "comment": None}
    assert [_without_generated(dict(s)) for s in stored] == [
        {**defaults, **body, "author": "admin"} for body in sent
    ]
    listed = (await client.get("/api/v1/scores", params={"trace_id": TRACE}, headers=ADMIN)).json()
    assert [s["name"] for s in listed["data"]] == ["tone", "helpful", "accuracy"]
    by_span = await client.get("/api/v1/scores", params={"span_id": SPAN}, headers=ADMIN)
    assert [s["name"] for s in by_span.json()["data"]] == ["helpful"]


async def test_a_score_for_a_trace_not_stored_yet_is_accepted(client: httpx.AsyncClient) -> None:
    body = {"trace_id": "9" * 32, "name": "thumbs", "data_type": "boolean", "value": 1}
    response = await client.post("/api/v1/scores", json=body, headers=ADMIN)
    assert response.status_code == 201
    assert response.json()["value"] is True


_GOOD = {"trace_id": TRACE, "name": "x", "data_type": "numeric", "value": 1}
_GONE = object()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trace_id": _GONE}, "`trace_id` must be 32 lower-case hex digits"),
        ({"trace_id": "AB" * 16}, "`trace_id` must be 32"),
        ({"span_id": "12"}, "`span_id` must be 16 lower-case hex digits"),
        ({"name": _GONE}, "`name` is required"),
        ({"name": " "}, "`name` must be a non-empty string"),
        ({"data_type": "stars"}, "`data_type` must be one of: numeric, boolean, categorical"),
        ({"value": _GONE}, "a numeric score needs a finite number `value`"),
        ({"value": "1"}, "a numeric score needs a finite number `value`"),
        ({"label": "a"}, "a numeric score has a `value`, not a `label`"),
        ({"data_type": "boolean", "value": 2}, "a boolean score needs `value` true or false"),
        ({"data_type": "categorical"}, "a categorical score has a `label`, not a `value`"),
        ({"data_type": "categorical", "value": _GONE}, "needs a non-empty string `label`"),
        ({"source": "crowd"}, "`source` must be one of: human, rule, model"),
        ({"colour": 1}, "unknown field(s): colour"),
        ({"author": "me"}, "`author` is set by Keel"),
        ({"comment": 5}, "`comment` must be a non-empty string"),
    ],
)
async def test_invalid_scores_are_refused_with_the_reason(
    client: httpx.AsyncClient, change: dict[str, Any], message: str
) -> None:
    body = {k: v for k, v in {**_GOOD, **change}.items() if v is not _GONE}
    response = await client.post("/api/v1/scores", json=body, headers=ADMIN)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


async def test_a_body_that_is_not_an_object_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/scores", json=[1, 2], headers=ADMIN)
    assert response.status_code == 400
    response = await client.post("/api/v1/scores", content=b"{nope", headers=ADMIN)
    assert response.status_code == 400


async def test_applications_score_with_their_key_but_only_the_admin_lists(
    client: httpx.AsyncClient, virtual_key: tuple[str, dict[str, str]]
) -> None:
    key_id, headers = virtual_key
    body = {"trace_id": TRACE, "name": "thumbs", "data_type": "boolean", "value": True}
    response = await client.post("/api/v1/scores", json=body, headers=headers)
    assert response.status_code == 201
    assert response.json()["author"] == f"key:{key_id}"
    assert (await client.get("/api/v1/scores", headers=headers)).status_code == 403
    assert (await client.post("/api/v1/scores", json=body)).status_code == 401
