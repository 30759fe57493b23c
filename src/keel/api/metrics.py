"""Metrics API: the dashboards' numbers (summary, series, breakdown, scores) for a time range."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from keel.analytics import query
from keel.analytics.ranges import TimeRange, default_step, parse_duration, resolve
from keel.api.auth import ApiError, require_admin
from keel.api.params import database

__all__ = ["RANGE_DOC", "SINCE_DOC", "UNTIL_DOC", "filters_of", "router", "time_range"]

router = APIRouter(dependencies=[Depends(require_admin)], tags=["metrics"])

RANGE_DOC = "`15m`, `1h`, `6h`, `24h`, `7d` or `30d`, ending at `until`"
SINCE_DOC = "unix seconds or ISO 8601 (default: 24 hours before until)"
UNTIL_DOC = "unix seconds or ISO 8601 (default: now)"


def filters_of(request: Request) -> query.Filters:
    """The analytics filters in the query string (model=, customer=, ..., prompt=name@3)."""
    chosen = {d: v for d in query.DIMENSIONS if (v := request.query_params.get(d)) is not None}
    try:
        return query.Filters(**chosen)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def time_range(since: str | None, until: str | None, range_: str | None) -> TimeRange:
    try:
        return resolve(since, until, range_)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _dimension(group_by: str | None) -> str | None:
    if group_by is not None and group_by not in query.DIMENSIONS:
        raise ApiError(400, f"`group_by` must be one of: {', '.join(query.DIMENSIONS)}")
    return group_by


@router.get("/metrics")
async def metrics(
    request: Request,
    since: str | None = Query(None, description=SINCE_DOC),
    until: str | None = Query(None, description=UNTIL_DOC),
    range_: str | None = Query(None, alias="range", description=RANGE_DOC),
    step: str | None = Query(None, description="seconds, or like `5m`, `1h` (default: auto)"),
    group_by: str | None = Query(None, description="a dimension: model, customer, ..."),
    order_by: str = Query("cost_usd", description="the metric that orders the breakdown"),
    limit: int = Query(20, ge=1, le=1000),
) -> dict[str, Any]:
    tr = time_range(since, until, range_)
    filters = filters_of(request)
    dimension = _dimension(group_by)
    try:
        step_s = parse_duration(step, "step") if step else default_step(tr.until - tr.since)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if order_by not in query.METRICS:
        raise ApiError(400, f"`order_by` must be one of: {', '.join(query.METRICS)}")
    db = database(request)
    try:
        summary = await query.summary(db, tr.since, tr.until, filters)
        series = await query.series(db, tr.since, tr.until, step_s, filters)
        breakdown = (
            await query.breakdown(
                db, tr.since, tr.until, dimension, filters, limit=limit, order_by=order_by
            )
            if dimension
            else []
        )
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    scores = await query.score_summary(db, tr.since, tr.until)
    return {
        "since": tr.since,
        "until": tr.until,
        "step": step_s,
        "filters": {d: v for d, v in filters.active()},
        "group_by": dimension,
        "summary": summary,
        "series": series,
        "breakdown": breakdown,
        "scores": scores,
    }
