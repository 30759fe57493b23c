"""The web UI: server-rendered pages (Jinja2, autoescaped), our own CSS and JS, a strict CSP.

`ui_routes(runtime)` gives the routes `keel.app` mounts. Every page goes through `_guarded`: the
security headers on whatever it answers and, with an admin key, a login first. An area adds its
pages here and its entry to `templating.NAV`.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from keel.runtime import Runtime
from keel.ui.alerts_page import AlertsPage
from keel.ui.costs import CostsPage
from keel.ui.overview import OverviewPage
from keel.ui.pages import AccountPages
from keel.ui.prompts import PromptPages
from keel.ui.requests import RequestPages
from keel.ui.session import Sessions, login_url
from keel.ui.templating import Endpoint, SecurityHeaders, page, redirect
from keel.ui.traces import TracePages

__all__ = ["ui_routes"]

_STATIC = Path(__file__).parent / "static"


def _guarded(sessions: Sessions, endpoint: Endpoint) -> Endpoint:
    """`endpoint` behind the login (when there is an admin key), with the security headers."""

    async def guarded(request: Request) -> Response:
        ui = sessions.context(request)
        if ui is None:
            return redirect(login_url(request))
        request.state.ui = ui
        return await endpoint(request)

    guarded.__name__ = endpoint.__name__
    return page(guarded)


def ui_routes(runtime: Runtime) -> list[BaseRoute]:
    """The UI's routes: pages, login/logout, and `/static/`."""
    sessions = Sessions(runtime.settings.admin_key)
    account = AccountPages(sessions)
    prompts = PromptPages(runtime)
    requests = RequestPages(runtime)
    traces = TracePages(runtime)

    def guarded(path: str, endpoint: Endpoint) -> Route:
        return Route(path, _guarded(sessions, endpoint), methods=["GET"])

    return [
        guarded("/", OverviewPage(runtime).overview),
        guarded("/requests", requests.list),
        guarded("/requests/{id}", requests.detail),
        guarded("/traces", traces.list),
        guarded("/traces/{trace_id}", traces.detail),
        guarded("/sessions", traces.sessions),
        guarded("/sessions/{session_id}", traces.session),
        guarded("/costs", CostsPage(runtime).costs),
        guarded("/alerts", AlertsPage(runtime).alerts),
        Route("/login", page(account.login), methods=["GET", "POST"]),
        Route("/logout", page(account.logout), methods=["POST"]),
        guarded("/prompts", prompts.list),
        guarded("/prompts/{name}", prompts.detail),
        guarded("/prompts/{name}/diff", prompts.diff),
        guarded("/prompts/{name}/playground", prompts.playground),
        guarded("/playground", prompts.playground),
        Mount("/static", app=SecurityHeaders(StaticFiles(directory=_STATIC)), name="static"),
    ]
