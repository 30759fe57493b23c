"""requests_repo on both dialects: idempotent upserts, stub/final rules, listing, payloads."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from keel.storage import requests_repo as repo
from keel.storage.database import Database
from tests.storage.factory import T0, make_record


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    yield database
    await database.close()


def _expected(n: int = 0, **overrides: Any) -> dict[str, Any]:
    row = {
        "id": f"req-{n:06d}",
        "trace_id": f"{n:032x}",
        "span_id": f"{n:016x}",
        "parent_span_id": None,
        "created_at": "2023-11-14T22:13:20.000000Z",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "provider_model": "gpt-4o-mini-2024-07-18",
        "endpoint": "chat.completions",
        "status_code": 200,
        "error": None,
        "error_type": None,
        "latency_ms": 120.5,
        "ttft_ms": 40.25,
        "input_tokens": 12,
        "output_tokens": 34,
        "cached_tokens": None,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
        "tokens_estimated": False,
        "cost_usd": 0.000123,
        "cost_estimated": False,
        "customer": "acme",
        "pipeline": "support",
        "tags": ["a", "b"],
        "stream": False,
        "key_id": None,
        "prompt_name": None,
        "prompt_version": None,
        "fallbacks": None,
        "cache_status": None,
        "cost_saved_usd": None,
        "trimmed_messages": None,
        "deprecated_model": None,
        "final": True,
        "interrupted": False,
    }
    row.update(overrides)
    return row


async def test_get_request_returns_the_whole_record(db: Database) -> None:
    await repo.upsert_records(db, [make_record(0)])
    assert await repo.get_request(db, "req-000000") == _expected(0)
    assert await repo.get_request(db, "nope") is None


async def test_upsert_is_idempotent(db: Database) -> None:
    records = [make_record(n) for n in range(3)]
    await repo.upsert_records(db, records)
    await repo.upsert_records(db, records)
    items, cursor = await repo.list_requests(db)
    assert [i["id"] for i in items] == ["req-000002", "req-000001", "req-000000"]
    assert cursor is None


async def test_final_replaces_stub_but_not_the_other_way(db: Database) -> None:
    stub = make_record(0, final=False, status_code=200, output_tokens=None, stream=True)
    final = make_record(0, stream=True, output_tokens=99)
    await repo.upsert_records(db, [stub])
    stored = await repo.get_request(db, stub.id)
    assert stored == _expected(0, final=False, interrupted=True, stream=True, output_tokens=None)
    await repo.upsert_records(db, [final])
    await repo.upsert_records(db, [stub])  # a replayed stub must not undo the final record
    assert await repo.get_request(db, stub.id) == _expected(0, stream=True, output_tokens=99)


async def test_first_final_wins(db: Database) -> None:
    await repo.upsert_records(db, [make_record(0, status_code=200)])
    await repo.upsert_records(db, [make_record(0, status_code=500)])
    stored = await repo.get_request(db, "req-000000")
    assert stored is not None and stored["status_code"] == 200


async def test_rules_apply_within_one_batch(db: Database) -> None:
    batch = [
        make_record(0, final=False),
        make_record(0, output_tokens=1),
        make_record(0, output_tokens=2),
        make_record(0, final=False),
    ]
    await repo.upsert_records(db, batch)
    assert await repo.get_request(db, "req-000000") == _expected(0, output_tokens=1)


async def test_payloads_follow_the_same_rules(db: Database) -> None:
    stub = make_record(0, final=False, request_body='{"q":1}')
    final = make_record(0, request_body='{"q":1}', response_body='{"a":2}', payload_truncated=True)
    await repo.upsert_records(db, [stub, make_record(1)])
    assert await repo.get_payload(db, stub.id) == {
        "request_id": stub.id,
        "request_body": '{"q":1}',
        "response_body": None,
        "truncated": False,
    }
    await repo.upsert_records(db, [final])
    await repo.upsert_records(db, [stub])
    assert await repo.get_payload(db, stub.id) == {
        "request_id": stub.id,
        "request_body": '{"q":1}',
        "response_body": '{"a":2}',
        "truncated": True,
    }
    assert await repo.get_payload(db, "req-000001") is None  # no bodies, no payload row


async def test_list_filters(db: Database) -> None:
    await repo.upsert_records(
        db,
        [
            make_record(0),
            make_record(1, model="claude", provider="anthropic", customer="globex"),
            make_record(2, status_code=429, error="rate limited", pipeline="batch"),
            make_record(3, status_code=200, error="stream broke"),
            make_record(4, status_code=503),
        ],
    )

    async def ids(**filters: Any) -> list[str]:
        items, _ = await repo.list_requests(db, **filters)
        return [item["id"][-1] for item in items]

    assert await ids() == ["4", "3", "2", "1", "0"]
    assert await ids(model="claude") == ["1"]
    assert await ids(provider="openai") == ["4", "3", "2", "0"]
    assert await ids(customer="globex") == ["1"]
    assert await ids(pipeline="batch") == ["2"]
    assert await ids(status=429) == ["2"]
    assert await ids(status="503") == ["4"]
    assert await ids(status="error") == ["4", "3", "2"]
    assert await ids(status="success") == ["1", "0"]
    assert await ids(since=T0 + 1, until=T0 + 3) == ["2", "1"]
    with pytest.raises(ValueError, match="status must be"):
        await ids(status="weird")


async def test_cursor_pages_through_equal_timestamps(db: Database) -> None:
    records = [make_record(n, created_at=T0 + n // 4) for n in range(10)]  # 4 share each second
    await repo.upsert_records(db, records)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        items, cursor = await repo.list_requests(db, limit=3, cursor=cursor)
        seen.extend(item["id"] for item in items)
        pages += 1
        if cursor is None:
            break
    expected = sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)
    assert seen == [r.id for r in expected]
    assert pages == 4


async def test_limit_is_capped(db: Database) -> None:
    await repo.upsert_records(db, [make_record(n) for n in range(1003)])
    items, cursor = await repo.list_requests(db, limit=5000)
    assert len(items) == repo.MAX_LIMIT
    assert cursor is not None
    rest, last = await repo.list_requests(db, limit=5000, cursor=cursor)
    assert [i["id"] for i in rest] == ["req-000002", "req-000001", "req-000000"]
    assert last is None


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 !!",
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),
        base64.urlsafe_b64encode(b'[true, "x"]').decode(),
        base64.urlsafe_b64encode(b"[1.5, 2]").decode(),
    ],
)
async def test_bad_cursor_is_a_value_error(db: Database, cursor: str) -> None:
    with pytest.raises(ValueError, match="invalid cursor"):
        await repo.list_requests(db, cursor=cursor)


async def test_bad_limit_is_a_value_error(db: Database) -> None:
    with pytest.raises(ValueError, match="limit must be at least 1"):
        await repo.list_requests(db, limit=0)


async def test_resilience_columns_round_trip(db: Database) -> None:
    attempts = [
        {
            "provider": "a",
            "model": "gpt-4o",
            "outcome": "error",
            "status": 503,
            "error": "upstream unavailable",
            "latency_ms": 12.5,
        },
        {
            "provider": "b",
            "model": "m",
            "outcome": "ok",
            "status": 200,
            "error": None,
            "latency_ms": 80.0,
        },
    ]
    values = {
        "fallbacks": attempts,
        "cache_status": "semantic-hit",
        "cost_saved_usd": 0.002,
        "trimmed_messages": 3,
        "deprecated_model": "gpt-4-0613",
    }
    await repo.upsert_records(db, [make_record(0, **values)])
    assert await repo.get_request(db, "req-000000") == _expected(0, **values)
