"""Trace reads: one trace as a list of spans, one span with its payloads, trace and session lists.

A trace joins two tables: `spans` (ingested over OTLP, source "otlp") and the gateway's
`requests` with that trace id, each shown as a span of source "gateway" (kind llm or
embedding, named like "chat.completions gpt-4o"). Span dicts leave out payloads and events,
so a trace of thousands of spans stays light; `get_span` adds them for one span.

The trace list is driven by entry points, newest first: root spans (no parent) and gateway
requests that have no parent, or whose parent span is not stored (an application that sends
`traceparent` but exports its spans elsewhere). Filters `customer` and `name` apply to the entry
point; `session_id` to any span of the trace; `status` "error" keeps traces with any failed
span or request, "ok" the others. Tokens and cost add up the counted calls only (gateway
requests and counted llm/embedding spans), so an application's span of a call that went
through the gateway is not counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    exists,
    func,
    null,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from keel.analytics.rollups import COUNTED_KINDS
from keel.scores.store import score_json
from keel.storage.database import Database
from keel.storage.requests_repo import decode_cursor, encode_cursor
from keel.storage.tables import request_payloads, requests, scores, spans

__all__ = [
    "MAX_LIMIT",
    "get_session",
    "get_span",
    "get_trace",
    "list_sessions",
    "list_traces",
    "span_from_request",
]

MAX_LIMIT = 1000
SESSION_TRACES = 1000  # traces get_session returns at most
_HEAVY = frozenset({"input", "output", "events"})
_LIGHT_COLUMNS = tuple(c for c in spans.columns if c.name not in _HEAVY)


def _iso(unix_seconds: float | None) -> str | None:
    if unix_seconds is None:
        return None
    moment = datetime.fromtimestamp(unix_seconds, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _tokens(input_tokens: int | None, output_tokens: int | None) -> int | None:
    if input_tokens is None and output_tokens is None:
        return None
    return (input_tokens or 0) + (output_tokens or 0)


def _span_from_row(row: Any) -> dict[str, Any]:
    return {
        "trace_id": row["trace_id"],
        "span_id": row["span_id"],
        "parent_span_id": row["parent_span_id"],
        "name": row["name"],
        "kind": row["kind"],
        "source": "otlp",
        "start_time": _iso(row["start_time"]),
        "end_time": _iso(row["end_time"]),
        "start_unix": row["start_time"],
        "duration_ms": row["duration_ms"],
        "status": row["status"],
        "error": row["error"],
        "provider": row["provider"],
        "model": row["model"],
        "response_model": row["response_model"],
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cached_tokens": row["cached_tokens"],
        "reasoning_tokens": row["reasoning_tokens"],
        "tokens": _tokens(row["input_tokens"], row["output_tokens"]),
        "cost_usd": row["cost_usd"],
        "cost_estimated": bool(row["cost_estimated"]),
        "ttft_ms": row["ttft_ms"],
        "customer": row["customer"],
        "session_id": row["session_id"],
        "pipeline": row["pipeline"],
        "tags": list(row["tags"] or []),
        "prompt_name": row["prompt_name"],
        "prompt_version": row["prompt_version"],
        "service": row["service"],
        "counted": bool(row["counted"]),
        "request_id": None,
        "attributes": dict(row["attributes"] or {}),
    }


def span_from_request(row: Any) -> dict[str, Any]:
    """A gateway request record (a `requests` row mapping) as a span dict of source "gateway"."""
    endpoint, model = row["endpoint"], row["model"]
    latency = row["latency_ms"]
    failed = row["status_code"] >= 400 or row["error"] is not None
    attributes = {
        "keel.endpoint": endpoint,
        "http.status_code": row["status_code"],
        "keel.stream": bool(row["stream"]),
        "keel.final": bool(row["final"]),
        "keel.tokens_estimated": bool(row["tokens_estimated"]),
        "keel.error_type": row["error_type"],
        "keel.cache_status": row["cache_status"],
        "keel.cost_saved_usd": row["cost_saved_usd"],
        "keel.key_id": row["key_id"],
        "keel.fallbacks": row["fallbacks"],
        "keel.trimmed_messages": row["trimmed_messages"],
        "keel.deprecated_model": row["deprecated_model"],
        "keel.cache_write_tokens": row["cache_write_tokens"],
    }
    return {
        "trace_id": row["trace_id"],
        "span_id": row["span_id"],
        "parent_span_id": row["parent_span_id"],
        "name": f"{endpoint} {model}" if model else endpoint,
        "kind": "embedding" if endpoint == "embeddings" else "llm",
        "source": "gateway",
        "start_time": _iso(row["created_at"]),
        "end_time": _iso(row["created_at"] + (latency or 0.0) / 1000.0),
        "start_unix": row["created_at"],
        "duration_ms": latency,
        "status": "error" if failed else "ok",
        "error": row["error"],
        "provider": row["provider"],
        "model": model,
        "response_model": row["provider_model"],
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cached_tokens": row["cached_tokens"],
        "reasoning_tokens": row["reasoning_tokens"],
        "tokens": _tokens(row["input_tokens"], row["output_tokens"]),
        "cost_usd": row["cost_usd"],
        "cost_estimated": bool(row["cost_estimated"]),
        "ttft_ms": row["ttft_ms"],
        "customer": row["customer"],
        "session_id": None,
        "pipeline": row["pipeline"],
        "tags": list(row["tags"] or []),
        "prompt_name": row["prompt_name"],
        "prompt_version": row["prompt_version"],
        "service": "keel",
        "counted": True,
        "request_id": row["id"],
        "attributes": {k: v for k, v in attributes.items() if v is not None},
    }


# -- one trace, one span ----------------------------------------------------------------------


async def get_trace(db: Database, trace_id: str) -> dict[str, Any] | None:
    """{"trace_id", "spans": [span dicts in start order], "scores": [...]}, or None."""
    async with db.engine.connect() as conn:
        span_rows = await conn.execute(select(*_LIGHT_COLUMNS).where(spans.c.trace_id == trace_id))
        found = [_span_from_row(r._mapping) for r in span_rows]
        request_rows = await conn.execute(select(requests).where(requests.c.trace_id == trace_id))
        found += [span_from_request(r._mapping) for r in request_rows]
        if not found:
            return None
        score_rows = await conn.execute(
            select(scores)
            .where(scores.c.trace_id == trace_id)
            .order_by(scores.c.created_at, scores.c.id)
        )
        trace_scores = [score_json(r._mapping) for r in score_rows]
    found.sort(key=lambda s: (s["start_unix"], s["span_id"]))
    return {"trace_id": trace_id, "spans": found, "scores": trace_scores}


async def get_span(db: Database, trace_id: str, span_id: str) -> dict[str, Any] | None:
    """One span with its payloads (`input`, `output`) and `events`, or None."""
    async with db.engine.connect() as conn:
        query = select(spans).where(spans.c.trace_id == trace_id, spans.c.span_id == span_id)
        row = (await conn.execute(query)).first()
        if row is not None:
            span = _span_from_row(row._mapping)
            span.update(input=row.input, output=row.output, events=list(row.events or []))
            return span
        query = (
            select(requests, request_payloads.c.request_body, request_payloads.c.response_body)
            .outerjoin(request_payloads, request_payloads.c.request_id == requests.c.id)
            .where(requests.c.trace_id == trace_id, requests.c.span_id == span_id)
            .limit(1)
        )
        row = (await conn.execute(query)).first()
    if row is None:
        return None
    span = span_from_request(row._mapping)
    span.update(input=row.request_body, output=row.response_body, events=[])
    return span


# -- trace list -------------------------------------------------------------------------------


def _check_limit(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return min(limit, MAX_LIMIT)


def _request_failed() -> ColumnElement[bool]:
    return or_(requests.c.status_code >= 400, requests.c.error.is_not(None))


def _status_condition(trace_id: Any, status: str) -> ColumnElement[bool]:
    inner = spans.alias("failed_spans")
    failed = or_(
        exists().where(inner.c.trace_id == trace_id, inner.c.status == "error"),
        exists().where(requests.c.trace_id == trace_id, _request_failed()),
    )
    if status == "error":
        return failed
    if status == "ok":
        return ~failed
    raise ValueError(f"status must be 'ok' or 'error', got {status!r}")


def _page_conditions(
    time: Any, trace_id: Any, since: float | None, until: float | None, cursor: str | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(time >= since)
    if until is not None:
        conditions.append(time < until)
    if cursor is not None:
        at, last = decode_cursor(cursor)
        conditions.append(or_(time < at, and_(time == at, trace_id < last)))
    return conditions


async def list_traces(
    db: Database,
    *,
    since: float | None = None,
    until: float | None = None,
    limit: int = 50,
    cursor: str | None = None,
    session_id: str | None = None,
    customer: str | None = None,
    name: str | None = None,
    status: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Traces newest first (by entry point) and the cursor of the next page (None: last page).

    Row: trace_id, name, start_time (ISO), start_unix, duration_ms, span_count, error (bool),
    tokens, cost_usd, customer, session_id.
    """
    limit = _check_limit(limit)
    queries = _entry_queries(since, until, cursor, session_id, customer, name, status, limit)
    async with db.engine.connect() as conn:
        entries: list[tuple[float, str]] = []
        more = False  # a source had more than a page: there is a next page
        for query in queries:
            found = [(float(at), trace_id) for trace_id, at in await conn.execute(query)]
            more = more or len(found) > limit
            entries += found
        entries.sort(reverse=True)
        page: list[tuple[float, str]] = []
        seen: set[str] = set()
        for at, trace_id in entries:
            if trace_id in seen:  # a trace with two entry points shows once per page
                continue
            if len(page) == limit:
                more = True
                break
            seen.add(trace_id)
            page.append((at, trace_id))
        rows = await _summaries(conn, [t for _, t in page])
    next_cursor = encode_cursor(*page[-1]) if more and page else None
    return [rows[t] for _, t in page if t in rows], next_cursor


def _entry_queries(
    since: float | None,
    until: float | None,
    cursor: str | None,
    session_id: str | None,
    customer: str | None,
    name: str | None,
    status: str | None,
    limit: int,
) -> list[Select[Any]]:
    if session_id is not None:
        # Any span of the trace may carry the session; the trace enters at its first one.
        first = func.min(spans.c.start_time)
        having = _page_conditions(first, spans.c.trace_id, since, until, cursor)
        query = (
            select(spans.c.trace_id, first)
            .where(spans.c.session_id == session_id)
            .group_by(spans.c.trace_id)
        )
        if having:
            query = query.having(and_(*having))
        roots = spans.alias("root")
        if customer is not None or name is not None:
            root = [roots.c.trace_id == spans.c.trace_id, roots.c.parent_span_id.is_(None)]
            if customer is not None:
                root.append(roots.c.customer == customer)
            if name is not None:
                root.append(roots.c.name == name)
            query = query.where(exists().where(*root))
        if status is not None:
            query = query.where(_status_condition(spans.c.trace_id, status))
        return [query.order_by(first.desc(), spans.c.trace_id.desc()).limit(limit + 1)]
    span_conditions = [
        spans.c.parent_span_id.is_(None),
        *_page_conditions(spans.c.start_time, spans.c.trace_id, since, until, cursor),
    ]
    if customer is not None:
        span_conditions.append(spans.c.customer == customer)
    if name is not None:
        span_conditions.append(spans.c.name == name)
    if status is not None:
        span_conditions.append(_status_condition(spans.c.trace_id, status))
    span_entries = (
        select(spans.c.trace_id, spans.c.start_time)
        .where(*span_conditions)
        .order_by(spans.c.start_time.desc(), spans.c.trace_id.desc())
        .limit(limit + 1)
    )
    parent = spans.alias("parent")
    request_conditions = [
        or_(
            requests.c.parent_span_id.is_(None),
            ~exists().where(
                parent.c.trace_id == requests.c.trace_id,
                parent.c.span_id == requests.c.parent_span_id,
            ),
        ),
        *_page_conditions(requests.c.created_at, requests.c.trace_id, since, until, cursor),
    ]
    if customer is not None:
        request_conditions.append(requests.c.customer == customer)
    if name is not None:
        endpoint, _, model = name.partition(" ")
        request_conditions.append(requests.c.endpoint == endpoint)
        request_conditions.append(
            requests.c.model == model if model else requests.c.model.is_(None)
        )
    if status is not None:
        request_conditions.append(_status_condition(requests.c.trace_id, status))
    request_entries = (
        select(requests.c.trace_id, requests.c.created_at)
        .where(*request_conditions)
        .order_by(requests.c.created_at.desc(), requests.c.trace_id.desc())
        .limit(limit + 1)
    )
    return [span_entries, request_entries]


def _counted_span() -> ColumnElement[bool]:
    return and_(spans.c.counted.is_(True), spans.c.kind.in_(COUNTED_KINDS))


async def _summaries(conn: AsyncConnection, trace_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The list row of each trace (see list_traces)."""
    if not trace_ids:
        return {}
    ids = list(trace_ids)
    counted = _counted_span()
    span_totals = (
        select(
            spans.c.trace_id,
            func.count(),
            func.min(spans.c.start_time),
            func.max(spans.c.end_time),
            func.sum(case((spans.c.status == "error", 1), else_=0)),
            func.sum(
                case(
                    (
                        counted,
                        func.coalesce(spans.c.input_tokens, 0)
                        + func.coalesce(spans.c.output_tokens, 0),
                    ),
                    else_=0,
                )
            ),
            func.sum(case((counted, func.coalesce(spans.c.cost_usd, 0.0)), else_=0.0)),
            func.max(spans.c.session_id),
        )
        .where(spans.c.trace_id.in_(ids))
        .group_by(spans.c.trace_id)
    )
    request_totals = (
        select(
            requests.c.trace_id,
            func.count(),
            func.min(requests.c.created_at),
            func.max(requests.c.created_at + func.coalesce(requests.c.latency_ms, 0.0) / 1000.0),
            func.sum(case((_request_failed(), 1), else_=0)),
            func.sum(
                func.coalesce(requests.c.input_tokens, 0)
                + func.coalesce(requests.c.output_tokens, 0)
            ),
            func.sum(func.coalesce(requests.c.cost_usd, 0.0)),
            null(),
        )
        .where(requests.c.trace_id.in_(ids))
        .group_by(requests.c.trace_id)
    )
    totals: dict[str, list[Any]] = {}
    for query in (span_totals, request_totals):
        for trace_id, count, first, last, errors, tokens, cost, session in await conn.execute(
            query
        ):
            seen = totals.get(trace_id)
            values = [count, first, last, errors, tokens, cost, session]
            if seen is None:
                totals[trace_id] = values
            else:
                totals[trace_id] = [
                    seen[0] + count,
                    min(seen[1], first),
                    max(seen[2], last),
                    seen[3] + errors,
                    seen[4] + tokens,
                    seen[5] + cost,
                    seen[6] or session,
                ]
    entry = await _entry_points(conn, ids)
    out: dict[str, dict[str, Any]] = {}
    for trace_id, (count, first, last, errors, tokens, cost, session) in totals.items():
        name, customer = entry.get(trace_id, (None, None))
        out[trace_id] = {
            "trace_id": trace_id,
            "name": name,
            "start_time": _iso(first),
            "start_unix": float(first),
            "duration_ms": max(0.0, (float(last) - float(first)) * 1000.0),
            "span_count": int(count),
            "error": bool(errors),
            "tokens": int(tokens or 0),
            "cost_usd": float(cost or 0.0),
            "customer": customer,
            "session_id": session,
        }
    return out


async def _entry_points(
    conn: AsyncConnection, ids: list[str]
) -> dict[str, tuple[str | None, str | None]]:
    """(name, customer) of each trace's entry point: its root span, else its first request."""
    found: dict[str, tuple[str | None, str | None]] = {}
    roots = await conn.execute(
        select(spans.c.trace_id, spans.c.name, spans.c.customer, spans.c.start_time)
        .where(spans.c.trace_id.in_(ids), spans.c.parent_span_id.is_(None))
        .order_by(spans.c.start_time)
    )
    for trace_id, name, customer, _ in roots:
        found.setdefault(trace_id, (name, customer))
    missing = [t for t in ids if t not in found]
    if missing:
        first_requests = await conn.execute(
            select(requests.c.trace_id, requests.c.endpoint, requests.c.model, requests.c.customer)
            .where(requests.c.trace_id.in_(missing))
            .order_by(requests.c.created_at)
        )
        for trace_id, endpoint, model, customer in first_requests:
            found.setdefault(trace_id, (f"{endpoint} {model}" if model else endpoint, customer))
    return found


# -- sessions ---------------------------------------------------------------------------------


async def list_sessions(
    db: Database,
    *,
    since: float | None = None,
    until: float | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Sessions (spans' session_id) by latest activity, newest first, and the next cursor.

    Row: session_id, first_time, last_time (ISO), trace_count, cost_usd, customer.
    `since`/`until` bound the spans considered.
    """
    limit = _check_limit(limit)
    after = decode_cursor(cursor) if cursor is not None else None
    async with db.engine.connect() as conn:
        # Two queries: SQLite answers a lone min() or max() from the index, not both at once.
        oldest = (await conn.execute(select(func.min(spans.c.start_time)))).scalar()
        newest = (await conn.execute(select(func.max(spans.c.start_time)))).scalar()
        if oldest is None:
            return [], None
        top = newest if until is None else min(newest, until)
        if after is not None:
            top = min(top, after[0])
        floor = oldest if since is None else max(oldest, since)
        # The latest sessions have spans in the latest hours: group the spans of a window
        # ending at the top of the page, four times wider until it holds a page (or all).
        width = 3600.0
        while True:
            low = max(floor, top - width)
            rows = (await conn.execute(_sessions_query(low, top, until, after, limit))).all()
            if len(rows) > limit or low <= floor:
                break
            width *= 4
        page = rows[:limit]
        ids = [r[0] for r in page]
        firsts = await _first_times(conn, ids, since, until)
        details = await _session_details(conn, ids)
    out = [
        {
            "session_id": session_id,
            "first_time": _iso(firsts.get(session_id)),
            "last_time": _iso(latest),
            **details[session_id],
        }
        for session_id, latest in page
    ]
    next_cursor = encode_cursor(page[-1][1], page[-1][0]) if len(rows) > limit else None
    return out, next_cursor


def _sessions_query(
    low: float, top: float, until: float | None, after: tuple[float, str] | None, limit: int
) -> Select[Any]:
    """Sessions with spans in [low, top], each with its latest span (below `until`), if that
    span is in the window and after the cursor."""
    last = func.max(spans.c.start_time)
    inner = spans.alias("latest")
    latest = select(func.max(inner.c.start_time)).where(inner.c.session_id == spans.c.session_id)
    if until is not None:
        latest = latest.where(inner.c.start_time < until)
    having = [last == latest.scalar_subquery()]
    if after is not None:
        at, session_id = after
        having.append(or_(last < at, and_(last == at, spans.c.session_id < session_id)))
    return (
        select(spans.c.session_id, last)
        .where(
            spans.c.session_id.is_not(None),
            spans.c.start_time >= low,
            spans.c.start_time <= top,
            *([spans.c.start_time < until] if until is not None else []),
        )
        .group_by(spans.c.session_id)
        .having(and_(*having))
        .order_by(last.desc(), spans.c.session_id.desc())
        .limit(limit + 1)
        # The window is narrow: read it by time (SQLite may prefer skip-scanning every session).
        .with_hint(spans, "INDEXED BY ix_spans_start_time", "sqlite")
    )


async def _first_times(
    conn: AsyncConnection, ids: list[str], since: float | None, until: float | None
) -> dict[str, float]:
    if not ids:
        return {}
    query = select(spans.c.session_id, func.min(spans.c.start_time)).where(
        spans.c.session_id.in_(ids)
    )
    if since is not None:
        query = query.where(spans.c.start_time >= since)
    if until is not None:
        query = query.where(spans.c.start_time < until)
    rows = await conn.execute(query.group_by(spans.c.session_id))
    return {session_id: first for session_id, first in rows}


async def _session_details(
    conn: AsyncConnection, session_ids: list[str]
) -> dict[str, dict[str, Any]]:
    details: dict[str, dict[str, Any]] = {
        s: {"trace_count": 0, "cost_usd": 0.0, "customer": None} for s in session_ids
    }
    if not session_ids:
        return details
    pairs = await conn.execute(
        select(
            spans.c.session_id,
            spans.c.trace_id,
            func.sum(case((_counted_span(), func.coalesce(spans.c.cost_usd, 0.0)), else_=0.0)),
            func.max(spans.c.customer),
        )
        .where(spans.c.session_id.in_(session_ids))
        .group_by(spans.c.session_id, spans.c.trace_id)
    )
    trace_session: dict[str, str] = {}
    for session_id, trace_id, cost, customer in pairs:
        detail = details[session_id]
        detail["trace_count"] += 1
        detail["cost_usd"] += float(cost or 0.0)
        detail["customer"] = detail["customer"] or customer
        trace_session[trace_id] = session_id
    trace_ids = list(trace_session)
    for start in range(0, len(trace_ids), 500):
        chunk = trace_ids[start : start + 500]
        costs = await conn.execute(
            select(requests.c.trace_id, func.sum(func.coalesce(requests.c.cost_usd, 0.0)))
            .where(requests.c.trace_id.in_(chunk))
            .group_by(requests.c.trace_id)
        )
        for trace_id, cost in costs:
            details[trace_session[trace_id]]["cost_usd"] += float(cost or 0.0)
    return details


async def get_session(db: Database, session_id: str) -> dict[str, Any] | None:
    """A session's totals and its traces (oldest first, at most 1000), or None."""
    traces, _ = await list_traces(db, session_id=session_id, limit=SESSION_TRACES)
    if not traces:
        return None
    async with db.engine.connect() as conn:
        detail = (await _session_details(conn, [session_id]))[session_id]
        first, last = (
            await conn.execute(
                select(func.min(spans.c.start_time), func.max(spans.c.start_time)).where(
                    spans.c.session_id == session_id
                )
            )
        ).one()
    traces.sort(key=lambda t: (t["start_unix"], t["trace_id"]))
    return {
        "session_id": session_id,
        "first_time": _iso(first),
        "last_time": _iso(last),
        **detail,
        "traces": traces,
    }
