"""Rendering pages: the Jinja2 environment, the security headers every UI response carries.

Template names are ours (files in this package), never taken from a request. Autoescape is on for
every template, so stored strings and model output are shown as text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.ui import charts, formatting

__all__ = [
    "CSP",
    "NAV",
    "SECURITY_HEADERS",
    "Endpoint",
    "SecurityHeaders",
    "page",
    "redirect",
    "render",
]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}

# (path, label) of the navigation, in order; only pages that exist are listed
NAV: list[tuple[str, str]] = [
    ("/", "Overview"),
    ("/requests", "Requests"),
    ("/traces", "Traces"),
    ("/sessions", "Sessions"),
    ("/costs", "Costs"),
    ("/alerts", "Alerts"),
    ("/prompts", "Prompts"),
    ("/playground", "Playground"),
]

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(ts: float | None) -> str:
    """A unix time as `2025-01-31 14:05 UTC`."""
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


_env.filters["when"] = _when
_env.filters["count"] = formatting.count
_env.filters["duration"] = formatting.duration
_env.filters["usd"] = formatting.usd
_env.filters["pct"] = formatting.pct
_env.filters["fmt"] = formatting.fmt
_env.filters["metric_unit"] = formatting.metric_unit
_env.filters["ts"] = formatting.timestamp
_env.filters["pretty_json"] = formatting.pretty_json
_env.filters["payload"] = formatting.payload
_env.globals["nav"] = NAV
_env.globals["meter"] = charts.meter


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """A page from one of our templates. `request.state.ui` holds what the layout needs."""
    ui = getattr(request.state, "ui", None)
    html = _env.get_template(template).render({"path": request.url.path, "ui": ui, **context})
    # pages embed a short-lived API token: never keep them in a cache
    return HTMLResponse(html, status_code=status_code, headers={"cache-control": "no-store"})


def redirect(url: str) -> RedirectResponse:
    """A 303 to a path on this server."""
    return RedirectResponse(url, status_code=303)


Endpoint = Callable[[Request], Awaitable[Response]]


def page(endpoint: Endpoint) -> Endpoint:
    """Wrap a UI endpoint so its response, whatever it is, carries the security headers."""

    async def wrapped(request: Request) -> Response:
        response = await endpoint(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    wrapped.__name__ = endpoint.__name__
    wrapped.__doc__ = endpoint.__doc__
    return wrapped


class SecurityHeaders:
    """ASGI middleware adding the security headers to every response of an app (static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.decode("latin-1").lower() not in SECURITY_HEADERS
                ]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
