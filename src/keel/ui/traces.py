"""The trace pages: `/traces`, `/traces/{trace_id}` (tree, waterfall, span panel), `/sessions`
and `/sessions/{id}`.

They read through `keel.traces.store`. A span is selected with `?span=<span_id>`: the page is
rendered again with that span's panel, so selection works without any script. The trace itself
comes from one query (no per-span query), and its payloads only for the selected span.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from keel.runtime import Runtime
from keel.traces import store as trace_store
from keel.ui.params import PageError, database, error_page, text_param
from keel.ui.templating import render
from keel.ui.timerange import RangeError, list_range
from keel.ui.waterfall import SCALE, layout, rows_html

__all__ = ["TracePages", "counted_totals", "span_scores"]

PAGE_SIZE = 50
_TRACE_FILTERS = ("name", "customer", "session_id", "status")
_STATUSES = ("ok", "error")
_COUNTED_KINDS = frozenset({"llm", "embedding"})


def _page_links(base: str, keep: dict[str, str], next_cursor: str | None) -> dict[str, Any]:
    return {
        "first_page": base + "?" + urlencode(keep),
        "next_page": base + "?" + urlencode({**keep, "cursor": next_cursor})
        if next_cursor
        else None,
    }


def counted_totals(spans: list[dict[str, Any]]) -> tuple[int, float]:
    """Tokens and cost of a trace's counted calls: an application's span of a call that went
    through the gateway is not counted twice (the gateway's span counts it)."""
    counted = [s for s in spans if s.get("counted") and s.get("kind") in _COUNTED_KINDS]
    tokens = sum(s.get("tokens") or 0 for s in counted)
    return tokens, sum(s.get("cost_usd") or 0.0 for s in counted)


def span_scores(scores: list[dict[str, Any]], span_id: str | None) -> list[dict[str, Any]]:
    """The scores about one span (span_id given) or about the whole trace (None)."""
    return [s for s in scores if s.get("span_id") == span_id]


class TracePages:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def list(self, request: Request) -> Response:
        """`/traces`: newest first, filtered by name, customer, session, status and time."""
        try:
            db = database(self.runtime)
            tr = list_range(request.query_params)
            chosen = {name: v for name in _TRACE_FILTERS if (v := text_param(request, name))}
            if chosen.get("status") not in (None, *_STATUSES):
                raise PageError(400, "`status` must be `ok` or `error`")
            cursor = text_param(request, "cursor")
            rows, next_cursor = await trace_store.list_traces(
                db,
                since=tr.since if tr else None,
                until=tr.until if tr else None,
                limit=PAGE_SIZE,
                cursor=cursor,
                **chosen,
            )
        except PageError as exc:
            return error_page(request, exc)
        except (RangeError, ValueError) as exc:
            return error_page(request, PageError(400, str(exc)))
        keep = {**chosen, **(tr.params if tr else {})}
        context = {
            "rows": rows,
            "tr": tr,
            "chosen": chosen,
            "paged": cursor is not None,
            "filtered": bool(chosen) or tr is not None,
            **_page_links("/traces", keep, next_cursor),
        }
        return render(request, "traces/list.html", context)

    async def detail(self, request: Request) -> Response:
        """`/traces/{trace_id}?span=<id>`: the tree and waterfall, and one span's panel."""
        trace_id = request.path_params["trace_id"]
        try:
            db = database(self.runtime)
            wanted = text_param(request, "span")
        except PageError as exc:
            return error_page(request, exc)
        trace = await trace_store.get_trace(db, trace_id)
        if trace is None:
            message = f"no trace {trace_id!r} (spans reach the database within moments)"
            return error_page(request, PageError(404, message))
        spans = trace["spans"]
        waterfall = layout(spans)
        chosen_id = wanted or (waterfall.rows[0].span["span_id"] if waterfall.rows else None)
        selected = None
        if chosen_id is not None:
            selected = await trace_store.get_span(db, trace_id, chosen_id)
            if selected is None and wanted:
                return error_page(request, PageError(404, f"trace has no span {wanted!r}"))
        scores = trace.get("scores") or []
        root = waterfall.rows[0].span if waterfall.rows else None
        tokens, cost = counted_totals(spans)
        context = {
            "trace": trace,
            "trace_id": trace_id,
            "root": root,
            "waterfall": waterfall,
            "rows": rows_html(waterfall, selected["span_id"] if selected else None),
            "scale": SCALE,
            "selected": selected,
            "selected_scores": span_scores(scores, selected["span_id"]) if selected else [],
            "trace_scores": span_scores(scores, None),
            "errors": sum(1 for row in waterfall.rows if row.error),
            "tokens": tokens,
            "cost": cost,
            "sessions": sorted({s["session_id"] for s in spans if s.get("session_id")}),
        }
        return render(request, "traces/detail.html", context)

    async def sessions(self, request: Request) -> Response:
        """`/sessions`: conversations (spans sharing a session id), latest activity first."""
        try:
            db = database(self.runtime)
            tr = list_range(request.query_params)
            cursor = text_param(request, "cursor")
            rows, next_cursor = await trace_store.list_sessions(
                db,
                since=tr.since if tr else None,
                until=tr.until if tr else None,
                limit=PAGE_SIZE,
                cursor=cursor,
            )
        except PageError as exc:
            return error_page(request, exc)
        except (RangeError, ValueError) as exc:
            return error_page(request, PageError(400, str(exc)))
        context = {
            "rows": rows,
            "tr": tr,
            "paged": cursor is not None,
            "filtered": tr is not None,
            **_page_links("/sessions", tr.params if tr else {}, next_cursor),
        }
        return render(request, "traces/sessions.html", context)

    async def session(self, request: Request) -> Response:
        """`/sessions/{id}`: the session's traces, oldest first."""
        session_id = request.path_params["session_id"]
        try:
            db = database(self.runtime)
        except PageError as exc:
            return error_page(request, exc)
        session = await trace_store.get_session(db, session_id)
        if session is None:
            return error_page(request, PageError(404, f"no traces in session {session_id!r}"))
        rows = session["traces"]
        context = {
            "session": session,
            "rows": rows,
            "more": len(rows) >= trace_store.SESSION_TRACES,
            "limit": trace_store.SESSION_TRACES,
            "tokens": sum(t.get("tokens") or 0 for t in rows),
        }
        return render(request, "traces/session.html", context)
