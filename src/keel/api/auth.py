"""Admin access to the management API (`/api/v1`) and its OpenAI-shaped errors.

`require_admin` is the dependency most management routes use: the admin key passes, and so
does anyone in open mode (no admin key configured); a virtual key gets 403. `require_principal`
lets virtual keys in too, for routes an application may call with its own key (prompts).
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from keel.keys.auth import Authenticator, AuthError, Principal

__all__ = ["ApiError", "api_error_handler", "require_admin", "require_principal"]

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    503: "service_unavailable",
}
_CODES = {401: "invalid_api_key"}


class ApiError(Exception):
    """An error the management API answers as `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(status, "invalid_request_error")
        self.code = code if code is not None else _CODES.get(status)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Encode an ApiError; register with `app.add_exception_handler(ApiError, ...)`."""
    if not isinstance(exc, ApiError):  # pragma: no cover - registered for ApiError only
        raise exc
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(
        {"error": {"message": exc.message, "type": exc.type, "param": None, "code": exc.code}},
        status_code=exc.status,
        headers=headers,
    )


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
