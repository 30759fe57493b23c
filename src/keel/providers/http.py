"""HTTP plumbing shared by the adapters: one POST, upstream error mapping, an SSE reader.

Every adapter calls upstreams through these, so timeouts, error statuses and messages are the
same for all providers, and no adapter can put a credential into an error message.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from keel.providers.base import CallContext, UpstreamError
from keel.providers.client import Response, TransportError

__all__ = [
    "DONE_FRAME",
    "asked_usage",
    "error_from_response",
    "iter_sse",
    "open_post",
    "post_json",
    "sse_frame",
    "timeout_error",
]

_MAX_ERROR_TEXT = 500


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


# Upstreams quote (partly masked) credentials in their errors, e.g. OpenAI's "Incorrect API key
# provided: sk-proj-****abcd". None of that may reach a client, a record or a log.
_KEYLIKE = re.compile(r"\b(?:sk|pk|rk|key|api[-_]?key|AIza)[-_A-Za-z0-9*.]{6,}", re.IGNORECASE)


def scrub(text: str) -> str:
    """`text` with anything that looks like an API key replaced by `***`."""
    return _KEYLIKE.sub("***", text)


def _upstream_message(body: bytes) -> str:
    """The upstream's own error message when the body is JSON with one, else a short excerpt."""
    return scrub(_raw_upstream_message(body))


def _raw_upstream_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:_MAX_ERROR_TEXT].decode("utf-8", "replace").strip()
        if text.lstrip().lower().startswith(("<!doctype", "<html")):
            return "an HTML page instead of JSON"
        return repr(text) if text else "an empty body"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:_MAX_ERROR_TEXT]
        if isinstance(err, str):
            return err[:_MAX_ERROR_TEXT]
    return str(data)[:_MAX_ERROR_TEXT]


def error_from_response(
    provider: str, status: int, body: bytes, headers: Mapping[str, str]
) -> UpstreamError:
    """Map a non-2xx upstream answer to the error Keel gives its client.

    The client's own mistakes (400, 404, 413, 422) keep their status; the upstream rejecting
    Keel's provider credentials (401, 403) is an operator problem, answered 502; 429 stays 429
    with its Retry-After; anything else from the upstream is 502 (504 for an upstream timeout).
    """
    detail = _upstream_message(body)
    message = f"provider {provider!r} answered HTTP {status}: {detail}"
    retry_after = _retry_after(headers)
    if status in (400, 404, 413, 422):
        kind = "invalid_request_error" if status != 404 else "not_found_error"
        return UpstreamError(status, message, type=kind, upstream_status=status)
    if status == 429:
        return UpstreamError(
            429,
            message,
            type="rate_limit_error",
            code="rate_limit_exceeded",
            upstream_status=status,
            retry_after=retry_after,
        )
    if status in (401, 403):
        return UpstreamError(
            502,
            message + " (check the provider's api_key in Keel's config)",
            type="upstream_auth_error",
            upstream_status=status,
        )
    if status in (408, 504):
        return UpstreamError(504, message, type="upstream_timeout", upstream_status=status)
    return UpstreamError(
        502, message, type="upstream_error", upstream_status=status, retry_after=retry_after
    )


def timeout_error(provider: str) -> UpstreamError:
    return UpstreamError(
        504, f"provider {provider!r} did not answer in time", type="upstream_timeout"
    )


def _connection_error(provider: str, exc: BaseException) -> UpstreamError:
    # The client's messages name only the host, port and what failed: nothing secret.
    detail = str(exc) or type(exc).__name__
    return UpstreamError(
        502, f"could not reach provider {provider!r}: {detail}", type="upstream_connection_error"
    )


def _with_content_type(headers: Mapping[str, str]) -> Mapping[str, str]:
    if any(name.lower() == "content-type" for name in headers):
        return headers
    return {**headers, "content-type": "application/json"}


async def _send(
    ctx: CallContext, provider: str, url: str, headers: Mapping[str, str], payload: Any
) -> Response:
    try:
        return await ctx.session.request(
            "POST",
            url,
            headers=_with_content_type(headers),
            body=orjson.dumps(payload),
            timeouts=ctx.timeout,
        )
    except TimeoutError:
        raise timeout_error(provider) from None
    except TransportError as exc:
        raise _connection_error(provider, exc) from None


async def post_json(
    ctx: CallContext, provider: str, url: str, headers: Mapping[str, str], payload: Any
) -> tuple[bytes, Mapping[str, str]]:
    """POST JSON and return the 2xx body; raise UpstreamError for anything else."""
    resp = await _send(ctx, provider, url, headers, payload)
    try:
        body = await resp.read()
    except TimeoutError:
        raise timeout_error(provider) from None
    except TransportError as exc:
        raise _connection_error(provider, exc) from None
    if resp.status >= 300:
        raise error_from_response(provider, resp.status, body, resp.headers)
    return body, resp.headers


async def open_post(
    ctx: CallContext, provider: str, url: str, headers: Mapping[str, str], payload: Any
) -> Response:
    """POST JSON and return the open 2xx response (for streams); the caller releases it."""
    resp = await _send(ctx, provider, url, headers, payload)
    if resp.status >= 300:
        try:
            body = await resp.read()
        except (TransportError, TimeoutError):
            body = b""
        finally:
            resp.release()
        raise error_from_response(provider, resp.status, body, resp.headers)
    return resp


async def iter_sse(resp: Response, provider: str) -> AsyncIterator[tuple[str, bytes]]:
    """Yield (event, data) for each server-sent event; raise UpstreamError if the stream breaks.

    `event` is "" when the event has no `event:` line. Multi-line data is joined with newlines.
    """
    event = ""
    data: list[bytes] = []
    try:
        async for raw in resp.iter_lines():
            line = raw.rstrip(b"\r\n")
            if not line:
                if data:
                    yield event, b"\n".join(data)
                event, data = "", []
                continue
            if line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                data.append(value)
            elif name == b"event":
                event = value.decode("utf-8", "replace")
    except TimeoutError:
        raise timeout_error(provider) from None
    except (TransportError, ValueError) as exc:  # ValueError: an absurdly long line
        raise UpstreamError(
            502,
            f"the stream from provider {provider!r} broke: {type(exc).__name__}",
            type="upstream_stream_error",
        ) from None
    if data:
        yield event, b"\n".join(data)


DONE_FRAME = b"data: [DONE]\n\n"


def asked_usage(body: Mapping[str, Any]) -> bool:
    """Whether an OpenAI stream request asked for the final usage chunk."""
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def sse_frame(payload: Any) -> bytes:
    """One OpenAI-style SSE frame: `data: <json>` and a blank line."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"
