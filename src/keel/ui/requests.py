"""The request pages: `/requests` (filters, cursor paging) and `/requests/{id}` (one record).

They read through `keel.storage.requests_repo`, the same functions as `GET /api/v1/requests`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from keel.runtime import Runtime
from keel.storage import requests_repo
from keel.ui.params import PageError, database, error_page, text_param
from keel.ui.templating import render
from keel.ui.timerange import RangeError, list_range

__all__ = ["RequestPages"]

PAGE_SIZE = 50
_FILTERS = ("model", "customer", "pipeline", "provider", "status")
_STATUSES = ("error", "success")


def _status(value: str | None) -> int | str | None:
    if value is None or value in _STATUSES:
        return value
    if value.isdigit():
        return int(value)
    raise PageError(400, "`status` must be an HTTP status code, `error` or `success`")


class RequestPages:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def list(self, request: Request) -> Response:
        """`/requests`: newest first, filtered, 50 a page."""
        try:
            db = database(self.runtime)
            tr = list_range(request.query_params)
            chosen = {name: v for name in _FILTERS if (v := text_param(request, name))}
            cursor = text_param(request, "cursor")
            rows, next_cursor = await requests_repo.list_requests(
                db,
                model=chosen.get("model"),
                customer=chosen.get("customer"),
                pipeline=chosen.get("pipeline"),
                provider=chosen.get("provider"),
                status=_status(chosen.get("status")),
                since=tr.since if tr else None,
                until=tr.until if tr else None,
                limit=PAGE_SIZE,
                cursor=cursor,
            )
        except PageError as exc:
            return error_page(request, exc)
        except (RangeError, ValueError) as exc:  # a malformed range or cursor
            return error_page(request, PageError(400, str(exc)))
        keep = {**chosen, **(tr.params if tr else {})}
        context: dict[str, Any] = {
            "rows": rows,
            "tr": tr,
            "chosen": chosen,
            "paged": cursor is not None,
            "first_page": "/requests?" + urlencode(keep),
            "next_page": "/requests?" + urlencode({**keep, "cursor": next_cursor})
            if next_cursor
            else None,
            "filtered": bool(chosen) or tr is not None,
        }
        return render(request, "requests/list.html", context)

    async def detail(self, request: Request) -> Response:
        """`/requests/{id}`: every field, the fallback chain, payloads, links to trace/prompt."""
        request_id = request.path_params["id"]
        try:
            db = database(self.runtime)
        except PageError as exc:
            return error_page(request, exc)
        record = await requests_repo.get_request(db, request_id)
        if record is None:
            message = f"no request {request_id!r} (a very recent one may not be written yet)"
            return error_page(request, PageError(404, message))
        stored = await requests_repo.get_payload(db, request_id)
        context = {
            "r": record,
            "stored": stored,
            "fields": sorted(record.items()),
        }
        return render(request, "requests/detail.html", context)
