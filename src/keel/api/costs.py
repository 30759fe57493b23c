"""Cost analytics API: costs per customer, pipeline, model (any dimension), JSON or CSV."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from keel.analytics import query
from keel.analytics.costs import cost_report, to_csv
from keel.api.auth import ApiError, require_admin
from keel.api.metrics import RANGE_DOC, SINCE_DOC, UNTIL_DOC, filters_of, time_range
from keel.storage.database import Database

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(require_admin)], tags=["costs"])


@router.get("/costs", response_model=None)
async def costs(
    request: Request,
    since: str | None = Query(None, description=SINCE_DOC),
    until: str | None = Query(None, description=UNTIL_DOC),
    range_: str | None = Query(None, alias="range", description=RANGE_DOC),
    group_by: str = Query("customer", description="customer, pipeline, model, ... (a dimension)"),
    limit: int = Query(1000, ge=1, le=1000),
    format_: str = Query("json", alias="format", description="`json` or `csv`"),
) -> dict[str, Any] | Response:
    if group_by not in query.DIMENSIONS:
        raise ApiError(400, f"`group_by` must be one of: {', '.join(query.DIMENSIONS)}")
    if format_ not in ("json", "csv"):
        raise ApiError(400, "`format` must be `json` or `csv`")
    tr = time_range(since, until, range_)
    db: Database = request.app.state.db
    try:
        report = await cost_report(
            db, tr.since, tr.until, group_by, filters_of(request), limit=limit
        )
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if format_ == "csv":
        name = f"keel-costs-by-{group_by}.csv"
        return Response(
            to_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return {"since": tr.since, "until": tr.until, **report}
