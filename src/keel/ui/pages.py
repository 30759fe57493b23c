"""The pages outside any one area: login and logout."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from keel.ui.session import Sessions, safe_next, same_origin
from keel.ui.templating import redirect, render

__all__ = ["AccountPages"]

_MAX_FORM_BYTES = 8192


async def _small_form(request: Request) -> dict[str, str]:
    """The fields of a small urlencoded form (the login form); {} for anything else.

    Parsed here rather than with `request.form()`, which needs python-multipart for two fields.
    """
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
    return {name: values[0] for name, values in fields.items()}


class AccountPages:
    """`/login` and `/logout` for one admin key."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    async def login(self, request: Request) -> Response:
        """GET: the form. POST: check the key, set the session cookie, go where asked."""
        target = safe_next(request.query_params.get("next"))
        if self.sessions.open_mode:
            return redirect(target)
        if request.method == "GET":
            return render(request, "login.html", {"next": target, "error": None})
        if not same_origin(request):
            return render(
                request, "login.html", {"next": target, "error": "cross-site login refused"}, 403
            )
        form = await _small_form(request)
        key = form.get("key", "")
        target = safe_next(form.get("next") or target)
        if not key or not await self.sessions.check_key(key):
            return render(request, "login.html", {"next": target, "error": "wrong admin key"}, 401)
        response = redirect(target)
        self.sessions.start(response, secure=request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        """POST from the layout's form: clear the session cookie."""
        if not same_origin(request):
            return render(request, "error.html", {"status": 403, "message": "cross-site"}, 403)
        response = redirect("/login" if not self.sessions.open_mode else "/")
        self.sessions.end(response)
        return response
