"""Scores API: record a score on a trace or span (any caller), list scores (admin).

A score for a trace not stored yet is accepted (201): spans reach the database a moment after
their export, and an application often scores right away.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse

from keel.api.auth import ApiError, require_admin, require_principal
from keel.api.params import database
from keel.keys.auth import Principal
from keel.scores import store

__all__ = ["router"]

router = APIRouter(tags=["scores"])


def _author(principal: Principal) -> str:
    if principal.kind == "key":
        return f"key:{principal.key_id}"
    return principal.kind


@router.post("/scores", status_code=201)
async def add_score(
    request: Request,
    principal: Annotated[Principal, Depends(require_principal)],
    body: Annotated[
        dict[str, Any],
        Body(
            description="trace_id, span_id (optional), name, data_type (numeric | boolean | "
            "categorical), value or label, source (human | rule | model; default human), comment"
        ),
    ],
) -> JSONResponse:
    if "author" in body:
        raise ApiError(400, "`author` is set by Keel from the API key that sends the score")
    unknown = sorted(set(body) - store.FIELDS)
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)}")
    try:
        score = await store.add_score(database(request), **body, author=_author(principal))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return JSONResponse(score, status_code=201)


@router.get("/scores", dependencies=[Depends(require_admin)])
async def list_scores(
    request: Request,
    trace_id: str | None = None,
    span_id: str | None = None,
    name: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    rows = await store.list_scores(
        database(request), trace_id=trace_id, span_id=span_id, name=name, limit=limit
    )
    return {"data": rows}
