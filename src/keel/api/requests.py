"""Read API for request records: list with filters and cursor pagination, one, its payload."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from keel.api.auth import ApiError, require_admin
from keel.api.params import database, unix_time
from keel.storage import requests_repo

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(require_admin)], tags=["requests"])


def _status(value: str | None) -> int | str | None:
    if value is None or value in {"error", "success"}:
        return value
    if value.isdigit():
        return int(value)
    raise ApiError(400, "`status` must be an HTTP status code, `error` or `success`")


@router.get("/requests")
async def list_requests(
    request: Request,
    model: str | None = None,
    customer: str | None = None,
    pipeline: str | None = None,
    provider: str | None = None,
    status: str | None = Query(None, description="HTTP status code, `error` or `success`"),
    since: str | None = Query(None, description="unix seconds or ISO 8601"),
    until: str | None = Query(None, description="unix seconds or ISO 8601"),
    limit: int = Query(50, ge=1, le=1000),
    cursor: str | None = None,
    prompt: str | None = Query(None, description="the registry prompt the request used"),
    prompt_version: int | None = None,
) -> dict[str, Any]:
    try:
        items, next_cursor = await requests_repo.list_requests(
            database(request),
            model=model,
            customer=customer,
            pipeline=pipeline,
            provider=provider,
            status=_status(status),
            since=unix_time(since, "since"),
            until=unix_time(until, "until"),
            limit=limit,
            cursor=cursor,
            prompt=prompt,
            prompt_version=prompt_version,
        )
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return {"data": items, "next_cursor": next_cursor}


@router.get("/requests/{request_id}")
async def get_request(request: Request, request_id: str) -> dict[str, Any]:
    found = await requests_repo.get_request(database(request), request_id)
    if found is None:
        raise ApiError(
            404,
            f"no request {request_id!r} (records reach the database within "
            "moments; a very recent one may not be there yet)",
            "not_found_error",
        )
    return found


@router.get("/requests/{request_id}/payload")
async def get_payload(request: Request, request_id: str) -> dict[str, Any]:
    found = await requests_repo.get_payload(database(request), request_id)
    if found is None:
        raise ApiError(404, f"no stored payload for request {request_id!r}", "not_found_error")
    return found
