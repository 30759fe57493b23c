"""Cost reports per customer, pipeline, model (any analytics dimension), as JSON or CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

from keel.analytics.query import Filters, breakdown, summary
from keel.storage.database import Database

__all__ = ["COLUMNS", "cost_report", "to_csv"]

COLUMNS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "tokens",
    "cost_usd",
    "cost_saved_usd",
)
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


async def cost_report(
    db: Database,
    since: float,
    until: float,
    group_by: str,
    filters: Filters,
    *,
    limit: int = 1000,
) -> dict[str, Any]:
    """{"group_by", "total": {...}, "rows": [{"value", ...}]}: costs per value, largest first."""
    total = await summary(db, since, until, filters)
    rows = await breakdown(db, since, until, group_by, filters, limit=limit, order_by="cost_usd")
    return {
        "group_by": group_by,
        "total": {c: total[c] for c in COLUMNS},
        "rows": [{"value": r["value"], **{c: r[c] for c in COLUMNS}} for r in rows],
    }


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def to_csv(report: dict[str, Any]) -> str:
    """The report's rows as CSV: a header row, then one row per value (formulas defused)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([report["group_by"], *COLUMNS])
    for row in report["rows"]:
        writer.writerow([_cell(row["value"]), *(_cell(row[c]) for c in COLUMNS)])
    return out.getvalue()
