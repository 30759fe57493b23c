"""What the observability pages share: reading query parameters, the database, error pages."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keel.runtime import Runtime
from keel.storage.database import Database
from keel.ui.templating import render

__all__ = ["PageError", "database", "error_page", "text_param"]

_MAX_PARAM = 512


class PageError(Exception):
    """A request a page cannot answer: shown as the error page with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def text_param(request: Request, name: str) -> str | None:
    """A query parameter, stripped; None when absent or empty."""
    value = (request.query_params.get(name) or "").strip()
    if not value:
        return None
    if len(value) > _MAX_PARAM:
        raise PageError(400, f"`{name}` is too long")
    return value


def database(runtime: Runtime) -> Database:
    """The runtime's database, or PageError(503) while Keel is starting or stopping."""
    if runtime.db is None:
        raise PageError(503, "the database is not open yet")
    return runtime.db


def error_page(request: Request, exc: PageError) -> Response:
    return render(request, "error.html", {"status": exc.status, "message": exc.message}, exc.status)
