"""Read API for traces and sessions: lists with filters and cursors, one trace, one span."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from keel.api.auth import ApiError, require_admin
from keel.api.params import database, unix_time
from keel.traces import store

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(require_admin)], tags=["traces"])


@router.get("/traces")
async def list_traces(
    request: Request,
    since: str | None = Query(None, description="unix seconds or ISO 8601"),
    until: str | None = Query(None, description="unix seconds or ISO 8601"),
    limit: int = Query(50, ge=1, le=1000),
    cursor: str | None = None,
    session_id: str | None = None,
    customer: str | None = None,
    name: str | None = Query(None, description="the name of the trace's root span"),
    status: str | None = Query(None, description="`error` (any span failed) or `ok`"),
) -> dict[str, Any]:
    try:
        rows, next_cursor = await store.list_traces(
            database(request),
            since=unix_time(since, "since"),
            until=unix_time(until, "until"),
            limit=limit,
            cursor=cursor,
            session_id=session_id,
            customer=customer,
            name=name,
            status=status,
        )
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return {"data": rows, "next_cursor": next_cursor}


@router.get("/traces/{trace_id}")
async def get_trace(request: Request, trace_id: str) -> dict[str, Any]:
    found = await store.get_trace(database(request), trace_id)
    if found is None:
        raise ApiError(
            404,
            f"no trace {trace_id!r} (spans reach the database within moments of their "
            "export; a very recent one may not be there yet)",
            "not_found_error",
        )
    return found


@router.get("/traces/{trace_id}/spans/{span_id}")
async def get_span(request: Request, trace_id: str, span_id: str) -> dict[str, Any]:
    found = await store.get_span(database(request), trace_id, span_id)
    if found is None:
        raise ApiError(404, f"no span {span_id!r} in trace {trace_id!r}", "not_found_error")
    return found


@router.get("/sessions")
async def list_sessions(
    request: Request,
    since: str | None = Query(None, description="unix seconds or ISO 8601"),
    until: str | None = Query(None, description="unix seconds or ISO 8601"),
    limit: int = Query(50, ge=1, le=1000),
    cursor: str | None = None,
) -> dict[str, Any]:
    try:
        rows, next_cursor = await store.list_sessions(
            database(request),
            since=unix_time(since, "since"),
            until=unix_time(until, "until"),
            limit=limit,
            cursor=cursor,
        )
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return {"data": rows, "next_cursor": next_cursor}


@router.get("/sessions/{session_id}")
async def get_session(request: Request, session_id: str) -> dict[str, Any]:
    found = await store.get_session(database(request), session_id)
    if found is None:
        raise ApiError(404, f"no session {session_id!r}", "not_found_error")
    return found
