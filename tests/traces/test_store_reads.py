"""Trace reads (keel.traces.store): a trace joins its spans and gateway requests; lists page."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keel.records.span import SpanRecord
from keel.scores import store as scores
from keel.storage.batch import write_batch
from keel.storage.database import Database
from keel.storage.requests_repo import upsert_records
from keel.traces import store
from tests.analytics.helpers import T0, llm_span, make_record

pytestmark = pytest.mark.timeout(60)

TRACE = "ab" * 16
ROOT, CLIENT, GATEWAY = "1" * 16, "2" * 16, "3" * 16


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    yield database
    await database.close()


def _agent_trace(trace: str = TRACE, at: float = T0, **root: object) -> list[object]:
    """An agent (root) whose client span called the gateway, which recorded the request."""
    return [
        SpanRecord(
            trace_id=trace,
            span_id=ROOT,
            name="agent run",
            start_time=at,
            end_time=at + 2,
            kind="agent",
            service="support-bot",
            status="ok",
            session_id="sess-1",
            customer="acme",
            **root,  # type: ignore[arg-type]
        ),
        SpanRecord(
            trace_id=trace,
            span_id=CLIENT,
            parent_span_id=ROOT,
            name="openai.chat",
            start_time=at + 0.1,
            end_time=at + 1.5,
            kind="llm",
            model="gpt-4o-mini",
            input_tokens=12,
            output_tokens=34,
            cost_usd=0.000123,
            counted=False,  # the gateway's record counts this call
            session_id="sess-1",
            input="hello",
            output="hi there",
            events=[{"name": "gen_ai.choice", "time": at + 1.4, "attributes": {}}],
            attributes={"http.method": "POST"},
        ),
        make_record(
            1,
            id=f"req-{trace[-6:]}",
            trace_id=trace,
            span_id=GATEWAY,
            parent_span_id=CLIENT,
            created_at=at + 0.2,
            request_body='{"messages": []}',
            response_body='{"choices": []}',
        ),
    ]


async def test_a_trace_joins_spans_and_the_gateway_request(db: Database) -> None:
    await write_batch(db, _agent_trace())  # type: ignore[arg-type]
    trace = await store.get_trace(db, TRACE)
    assert trace is not None
    assert [(s["span_id"], s["source"], s["parent_span_id"]) for s in trace["spans"]] == [
        (ROOT, "otlp", None),
        (CLIENT, "otlp", ROOT),
        (GATEWAY, "gateway", CLIENT),
    ]
    assert trace["spans"][2] == {
        "trace_id": TRACE,
        "span_id": GATEWAY,
        "parent_span_id": CLIENT,
        "name": "chat.completions gpt-4o-mini",
        "kind": "llm",
        "source": "gateway",
        "start_time": "2023-11-14T22:13:20.200000Z",
        "end_time": "2023-11-14T22:13:20.320500Z",
        "start_unix": T0 + 0.2,
        "duration_ms": 120.5,
        "status": "ok",
        "error": None,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "response_model": "gpt-4o-mini-2024-07-18",
        "input_tokens": 12,
        "output_tokens": 34,
        "cached_tokens": None,
        "reasoning_tokens": None,
        "tokens": 46,
        "cost_usd": 0.000123,
        "cost_estimated": False,
        "ttft_ms": 40.25,
        "customer": "acme",
        "session_id": None,
        "pipeline": "support",
        "tags": ["a", "b"],
        "prompt_name": None,
        "prompt_version": None,
        "service": "keel",
        "counted": True,
        "request_id": "req-ababab",
        "attributes": {
            "keel.endpoint": "chat.completions",
            "http.status_code": 200,
            "keel.stream": False,
            "keel.final": True,
            "keel.tokens_estimated": False,
        },
    }
    client = trace["spans"][1]
    assert "input" not in client and "events" not in client  # payloads come with get_span
    assert client["attributes"] == {"http.method": "POST"}
    assert client["start_time"] == "2023-11-14T22:13:20.100000Z"
    assert client["counted"] is False
    assert trace["scores"] == []


async def test_get_span_adds_payloads_and_events(db: Database) -> None:
    await write_batch(db, _agent_trace())  # type: ignore[arg-type]
    client = await store.get_span(db, TRACE, CLIENT)
    assert client is not None
    assert (client["input"], client["output"]) == ("hello", "hi there")
    assert client["events"] == [{"name": "gen_ai.choice", "time": T0 + 1.4, "attributes": {}}]
    gateway = await store.get_span(db, TRACE, GATEWAY)
    assert gateway is not None and gateway["source"] == "gateway"
    assert (gateway["input"], gateway["output"], gateway["events"]) == (
        '{"messages": []}',
        '{"choices": []}',
        [],
    )
    assert await store.get_span(db, TRACE, "f" * 16) is None
    assert await store.get_span(db, "f" * 32, CLIENT) is None


async def test_unknown_trace_is_none_and_scores_come_with_the_trace(db: Database) -> None:
    assert await store.get_trace(db, "0" * 32) is None
    await scores.add_score(db, trace_id=TRACE, name="helpful", data_type="boolean", value=True)
    assert await store.get_trace(db, TRACE) is None  # a score alone does not make a trace
    await write_batch(db, _agent_trace())  # type: ignore[arg-type]
    trace = await store.get_trace(db, TRACE)
    assert trace is not None
    assert [(s["name"], s["value"]) for s in trace["scores"]] == [("helpful", True)]


async def test_list_traces_rows_and_entry_points(db: Database) -> None:
    await write_batch(db, _agent_trace())  # type: ignore[arg-type]
    lone = make_record(2, created_at=T0 + 10)  # a plain SDK call: its own trace
    orphan = make_record(  # sent a traceparent, but its app exports spans elsewhere
        3, trace_id="cd" * 16, parent_span_id="9" * 16, created_at=T0 + 20, status_code=500
    )
    await upsert_records(db, [lone, orphan])
    rows, cursor = await store.list_traces(db)
    assert cursor is None
    assert [r["trace_id"] for r in rows] == ["cd" * 16, lone.trace_id, TRACE]
    assert rows[2] == {
        "trace_id": TRACE,
        "name": "agent run",
        "start_time": "2023-11-14T22:13:20.000000Z",
        "start_unix": T0,
        "duration_ms": 2000.0,
        "span_count": 3,
        "error": False,
        "tokens": 46,  # the gateway's count; the client span is not counted again
        "cost_usd": 0.000123,
        "customer": "acme",
        "session_id": "sess-1",
    }
    assert rows[0]["error"] is True and rows[0]["name"] == "chat.completions gpt-4o-mini"


async def test_list_traces_pages_with_a_cursor_and_filters(db: Database) -> None:
    for i in range(7):
        at = T0 + i * 60
        trace = f"{i:032x}"
        calls = _agent_trace(trace, at)
        if i % 3 == 0:
            failed = llm_span(9, trace=i, start_time=at + 1, end_time=at + 1.2, status="error")
            failed.parent_span_id = ROOT
            calls.append(failed)
        await write_batch(db, calls)  # type: ignore[arg-type]
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        rows, cursor = await store.list_traces(db, limit=3, cursor=cursor)
        seen += [r["trace_id"] for r in rows]
        if cursor is None:
            break
    assert seen == [f"{i:032x}" for i in reversed(range(7))]
    failed, _ = await store.list_traces(db, status="error")
    assert [r["trace_id"] for r in failed] == [f"{i:032x}" for i in (6, 3, 0)]
    assert all(r["error"] for r in failed)
    ok, _ = await store.list_traces(db, status="ok", since=T0 + 60, until=T0 + 300)
    assert [r["trace_id"] for r in ok] == [f"{i:032x}" for i in (4, 2, 1)]
    assert (await store.list_traces(db, customer="nobody"))[0] == []
    named, _ = await store.list_traces(db, name="agent run", limit=2)
    assert len(named) == 2
    in_session, more = await store.list_traces(db, session_id="sess-1", limit=4)
    assert [r["trace_id"] for r in in_session] == [f"{i:032x}" for i in (6, 5, 4, 3)]
    assert more is not None
    rest, last = await store.list_traces(db, session_id="sess-1", limit=4, cursor=more)
    assert [r["trace_id"] for r in rest] == [f"{i:032x}" for i in (2, 1, 0)] and last is None
    with pytest.raises(ValueError, match="invalid cursor"):
        await store.list_traces(db, cursor="nonsense")
    with pytest.raises(ValueError, match="status must be"):
        await store.list_traces(db, status="maybe")


async def test_sessions_list_and_detail(db: Database) -> None:
    for i in range(5):
        calls = _agent_trace(f"{i:032x}", T0 + i * 60)
        for call in calls:
            if isinstance(call, SpanRecord):
                call.session_id = f"sess-{i % 2}"
        await write_batch(db, calls)  # type: ignore[arg-type]
    first, cursor = await store.list_sessions(db, limit=1)
    assert first == [
        {
            "session_id": "sess-0",
            "first_time": "2023-11-14T22:13:20.000000Z",
            "last_time": "2023-11-14T22:17:20.100000Z",
            "trace_count": 3,
            "cost_usd": pytest.approx(3 * 0.000123),
            "customer": "acme",
        }
    ]
    rest, last = await store.list_sessions(db, limit=1, cursor=cursor)
    assert [s["session_id"] for s in rest] == ["sess-1"] and last is None
    assert rest[0]["trace_count"] == 2
    detail = await store.get_session(db, "sess-1")
    assert detail is not None
    assert [t["trace_id"] for t in detail["traces"]] == [f"{i:032x}" for i in (1, 3)]
    assert detail["trace_count"] == 2
    assert await store.get_session(db, "nope") is None


async def test_session_pages_follow_the_latest_activity_over_any_time_span(db: Database) -> None:
    # Sessions far apart in time (the list widens its window until it holds a page), one of
    # them active twice: it ranks by its latest span, and shows once.
    offsets = {"old": -30 * 86400.0, "mid": -2 * 86400.0, "new": -60.0, "twice": -86400.0}
    calls: list[SpanRecord] = []
    for n, (session, offset) in enumerate(sorted(offsets.items())):
        calls.append(llm_span(n, trace=n, start_time=T0 + offset, session_id=session))
    calls.append(llm_span(9, trace=9, start_time=T0 - 10.0, session_id="twice"))
    await write_batch(db, calls)
    seen, cursor = [], None
    while True:
        page, cursor = await store.list_sessions(db, limit=1, cursor=cursor)
        seen += [(s["session_id"], s["trace_count"]) for s in page]
        if cursor is None:
            break
    assert seen == [("twice", 2), ("new", 1), ("mid", 1), ("old", 1)]
    window, _ = await store.list_sessions(db, since=T0 - 3 * 86400, until=T0 - 30)
    assert [(s["session_id"], s["last_time"]) for s in window] == [
        ("new", "2023-11-14T22:12:20.000000Z"),
        ("twice", "2023-11-13T22:13:20.000000Z"),  # its span at T0 - 10 is after `until`
        ("mid", "2023-11-12T22:13:20.000000Z"),
    ]
    assert await store.list_sessions(db, since=T0 + 1) == ([], None)
