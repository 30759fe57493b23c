"""Admin access to the management API (`/api/v1`) and its OpenAI-shaped errors.

`require_admin` is the dependency most management routes use: the admin key passes, and so
does anyone in open mode (no admin key configured); a virtual key gets 403. `require_principal`
lets virtual keys in too, for routes an application may call with its own key (prompts).
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from keel.gateway.errors import GatewayError, error_body
from keel.keys.auth import Authenticator, AuthError, Principal

__all__ = ["ApiError", "api_error_handler", "require_admin", "require_principal"]


class ApiError(GatewayError):
    """An error the management API answers in the gateway's OpenAI shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str | None = None,
        code: str | None = None,
    ) -> None:
        if code is None and status == 401:
            code = "invalid_api_key"
        super().__init__(status, message, type=type, code=code)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    """Encode an ApiError; register with `app.add_exception_handler(ApiError, ...)`."""
    if not isinstance(exc, ApiError):  # pragma: no cover - registered for ApiError only
        raise exc
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    body = error_body(exc.message, exc.type, exc.code, exc.param)
    return Response(body, status_code=exc.status, headers=headers, media_type="application/json")


async def require_principal(request: Request) -> Principal:
    """Any authenticated caller: the admin, a virtual key, or anyone in open mode."""
    authenticator: Authenticator = request.app.state.authenticator
    try:
        return await authenticator.authenticate(request.headers.get("authorization"))
    except AuthError as exc:
        raise ApiError(exc.status, exc.message) from None


async def require_admin(request: Request) -> Principal:
    """The caller of a management route: the admin, or anyone in open mode."""
    principal = await require_principal(request)
    if principal.kind == "key":
        raise ApiError(403, "this route needs the admin key")
    return principal
