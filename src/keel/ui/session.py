"""Who may see the UI: login with the admin key, a signed session cookie, the page's API token.

In open mode (no admin key) every page is open and scripts send no Authorization header. With an
admin key, `/login` checks the key in constant time and sets an HttpOnly, SameSite=Strict cookie
holding a session token (`keys.ui_tokens`); each page then embeds a one-hour API token for its
scripts. Neither token contains the admin key. The login and logout forms are the only
cookie-authenticated POSTs: besides SameSite=Strict they must come from a page of this server
(Origin, else Referer, names the host the request was sent to).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from keel.keys import ui_tokens

__all__ = ["COOKIE", "Sessions", "UiContext", "safe_next", "same_origin"]

COOKIE = "keel_ui"
_FAILED_LOGIN_DELAY_S = 0.3  # slows guessing; the key itself is the real defence


@dataclass(frozen=True, slots=True)
class UiContext:
    """What the layout needs: the scripts' API token ('' in open mode) and the login state."""

    token: str
    open_mode: bool


class Sessions:
    """Issues and checks the UI's tokens for one admin key (None: open mode)."""

    def __init__(self, admin_key: str | None, clock: Callable[[], float] = time.time) -> None:
        self._admin = admin_key.encode("utf-8") if admin_key else None
        self._session = ui_tokens.derive_secret(admin_key, "session") if admin_key else None
        self._api = ui_tokens.derive_secret(admin_key, "api") if admin_key else None
        self._clock = clock

    @property
    def open_mode(self) -> bool:
        return self._admin is None

    async def check_key(self, presented: str) -> bool:
        """True when `presented` is the admin key; a wrong key answers a little later."""
        ok = self._admin is not None and hmac.compare_digest(presented.encode("utf-8"), self._admin)
        if not ok:
            await asyncio.sleep(_FAILED_LOGIN_DELAY_S)
        return ok

    def start(self, response: Response, secure: bool) -> None:
        """Set the session cookie on `response`."""
        assert self._session is not None
        token = ui_tokens.issue(self._session, ui_tokens.SESSION_TTL_S, now=self._clock())
        response.set_cookie(
            COOKIE,
            token,
            max_age=ui_tokens.SESSION_TTL_S,
            path="/",
            secure=secure,
            httponly=True,
            samesite="strict",
        )

    @staticmethod
    def end(response: Response) -> None:
        """Clear the session cookie."""
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")

    def context(self, request: Request) -> UiContext | None:
        """The page context for a request, or None when it must log in first."""
        if self._session is None or self._api is None:
            return UiContext(token="", open_mode=True)
        cookie = request.cookies.get(COOKIE, "")
        if not ui_tokens.verify(self._session, cookie, now=self._clock()):
            return None
        token = ui_tokens.issue(self._api, ui_tokens.API_TTL_S, now=self._clock())
        return UiContext(token=token, open_mode=False)


def same_origin(request: Request) -> bool:
    """True when the request's Origin (else Referer) names the host it was sent to."""
    host = request.headers.get("host", "").lower()
    source = request.headers.get("origin") or request.headers.get("referer") or ""
    if not host or not source or source == "null":
        return False
    return urlsplit(source).netloc.lower() == host


def safe_next(target: str | None) -> str:
    """A local path to go to after login; anything else (another site, odd shapes) is `/`."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 32 for c in target):
        return "/"
    return target


def login_url(request: Request) -> str:
    """`/login?next=<this page>`."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?next=" + quote(here, safe="")
