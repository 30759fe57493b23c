"""The few ASGI primitives the gateway's hot path needs, without a framework in between."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from keel.gateway.errors import GatewayError, error_body

__all__ = [
    "Receive",
    "Scope",
    "Send",
    "read_body",
    "request_headers",
    "send_error",
    "send_json",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]


def request_headers(scope: Scope) -> dict[str, str]:
    """Request headers as a dict with lower-case names (ASGI already lower-cases them)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; GatewayError 413 past `limit` bytes (read no further)."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise _too_large(limit)
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise GatewayError(400, "the client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"request body is larger than the limit of {limit} bytes (setting max_request_bytes)",
        code="request_too_large",
    )


async def send_json(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    out = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if headers:
        out += headers
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send, err: GatewayError, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = error_body(err.message, err.type, err.code, err.param)
    await send_json(send, err.status, body, (headers or []) + err.headers())
