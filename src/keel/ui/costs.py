"""The costs page (`/costs`): spend per customer, pipeline and model over a time range.

It reads through `keel.analytics.query` (summary, series, breakdown). Each table links to the
same numbers as CSV from `GET /api/v1/costs?format=csv&group_by=…`; the page's script fetches
it with the page's API token (the API never accepts the UI's cookie).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from keel.analytics import query as analytics
from keel.runtime import Runtime
from keel.ui.charts import Series, line_chart
from keel.ui.overview import dashboard_query, top_cost
from keel.ui.params import PageError, error_page
from keel.ui.templating import render
from keel.ui.timerange import TimeRange

__all__ = ["CostsPage", "csv_link"]

GROUPS = (("customer", "Customers"), ("pipeline", "Pipelines"), ("model", "Models"))
ROWS = 50


def csv_link(group_by: str, tr: TimeRange, chosen: dict[str, str]) -> str:
    """The API's CSV export of one breakdown, for the page's range and filters."""
    params = {"format": "csv", "group_by": group_by, "since": f"{tr.since:.0f}"}
    params["until"] = f"{tr.until:.0f}"
    return "/api/v1/costs?" + urlencode({**params, **chosen})


class CostsPage:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def costs(self, request: Request) -> Response:
        """`/costs?range=…`: totals, cost over time, and the three breakdowns."""
        try:
            db, tr, filters, chosen = dashboard_query(self.runtime, request)
        except PageError as exc:
            return error_page(request, exc)
        since, until = tr.since, tr.until
        summary, points, *groups = await asyncio.gather(
            analytics.summary(db, since, until, filters),
            analytics.series(db, since, until, tr.step_s, filters),
            *(analytics.breakdown(db, since, until, dim, filters, limit=ROWS) for dim, _ in GROUPS),
        )
        chart = line_chart(
            "Cost over time",
            [float(p["t"]) for p in points],
            [
                Series("cost", [p.get("cost_usd") for p in points]),
                Series("saved by cache", [p.get("cost_saved_usd") for p in points]),
            ],
            "usd",
            area=True,
            step_s=tr.step_s,
            width=960,
        )
        tables: list[dict[str, Any]] = [
            {
                "dimension": dim,
                "title": title,
                "rows": rows,
                "top": top_cost(rows),
                "total": summary.get("cost_usd"),
                "csv": csv_link(dim, tr, chosen),
            }
            for (dim, title), rows in zip(GROUPS, groups, strict=True)
        ]
        context = {
            "tr": tr,
            "chosen": chosen,
            "summary": summary,
            "chart": chart,
            "tables": tables,
            "empty": not summary.get("requests"),
        }
        return render(request, "costs/costs.html", context)
