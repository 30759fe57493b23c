"""The overview page (`/`): cards, charts over time, top spenders and score averages.

It reads through `keel.analytics.query` (summary, series, breakdown, score_summary) for the
time range and filters of its query string, and draws the charts on the server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from keel import __version__
from keel.analytics import query as analytics
from keel.runtime import Runtime
from keel.storage.database import Database
from keel.ui.charts import Series, line_chart
from keel.ui.params import PageError, database, error_page, text_param
from keel.ui.templating import render
from keel.ui.timerange import RangeError, TimeRange, parse_range

__all__ = ["OverviewPage", "filters_of", "top_cost"]

FILTER_NAMES = ("model", "customer", "pipeline")
_TOP = 8
# (title, [(metric, label)], unit, area)
_CHARTS: tuple[tuple[str, tuple[tuple[str, str], ...], str, bool], ...] = (
    ("Requests and errors", (("requests", "requests"), ("errors", "errors")), "count", True),
    (
        "Latency",
        (("latency_p50", "p50"), ("latency_p95", "p95"), ("latency_p99", "p99")),
        "ms",
        False,
    ),
    ("Tokens", (("input_tokens", "input"), ("output_tokens", "output")), "tokens", True),
    ("Cost", (("cost_usd", "cost"),), "usd", True),
)


def filters_of(request: Request) -> tuple[analytics.Filters, dict[str, str]]:
    """The analytics filters in the query string, and the same as a dict for the form."""
    chosen = {name: value for name in FILTER_NAMES if (value := text_param(request, name))}
    return analytics.Filters(**chosen), chosen


def dashboard_query(
    runtime: Runtime, request: Request
) -> tuple[Database, TimeRange, analytics.Filters, dict[str, str]]:
    """What a dashboard page reads: the database, `?range=…` and the filters (PageError)."""
    db = database(runtime)
    try:
        tr = parse_range(request.query_params)
    except RangeError as exc:
        raise PageError(400, str(exc)) from None
    filters, chosen = filters_of(request)
    return db, tr, filters, chosen


def charts(points: list[dict[str, Any]], tr: TimeRange) -> list[tuple[str, Markup]]:
    """The overview's time-series charts (title, SVG) from `analytics.series` points."""
    times = [float(p["t"]) for p in points]
    return [
        (
            title,
            line_chart(
                title,
                times,
                [Series(label, [p.get(metric) for p in points]) for metric, label in metrics],
                unit,
                area=area,
                step_s=tr.step_s,
            ),
        )
        for title, metrics, unit, area in _CHARTS
    ]


def top_cost(rows: list[dict[str, Any]]) -> float | None:
    """The largest cost of a breakdown: the full length of its bars."""
    return max((r["cost_usd"] for r in rows if r.get("cost_usd") is not None), default=None)


class OverviewPage:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def overview(self, request: Request) -> Response:
        """`/`: the dashboard for `?range=…` and the model/customer/pipeline filters."""
        try:
            db, tr, filters, chosen = dashboard_query(self.runtime, request)
        except PageError as exc:
            return error_page(request, exc)
        since, until = tr.since, tr.until
        summary, points, models, customers, pipelines, scores = await asyncio.gather(
            analytics.summary(db, since, until, filters),
            analytics.series(db, since, until, tr.step_s, filters),
            analytics.breakdown(db, since, until, "model", filters, limit=_TOP),
            analytics.breakdown(db, since, until, "customer", filters, limit=_TOP),
            analytics.breakdown(db, since, until, "pipeline", filters, limit=_TOP),
            analytics.score_summary(db, since, until),
        )
        context = {
            "tr": tr,
            "chosen": chosen,
            "summary": summary,
            "charts": charts(points, tr),
            "tops": [
                ("Models", "model", models, top_cost(models)),
                ("Customers", "customer", customers, top_cost(customers)),
                ("Pipelines", "pipeline", pipelines, top_cost(pipelines)),
            ],
            "scores": scores,
            "empty": not summary.get("requests") and not scores,
            "version": __version__,
        }
        return render(request, "overview/overview.html", context)
