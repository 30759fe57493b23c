"""`keel demo`'s way to a running Keel: gateway calls (plain and streamed) and management calls.

A call the gateway refuses is an `Answer` with `ok=False`, never an exception: failures are part
of the demo. Only Keel becoming unreachable raises (`KeelUnreachable`), since nothing after that
can succeed. The API key goes in the Authorization header only, never into a message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

__all__ = ["Answer", "ApiFailure", "DemoClient", "DemoError", "KeelUnreachable", "error_message"]


class DemoError(Exception):
    """Something the user can act on; the CLI prints it as `error: <message>`."""


class KeelUnreachable(DemoError):
    pass


class ApiFailure(DemoError):
    """The management API refused a call; `status` is its HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Answer:
    """What one gateway call gave: the text and usage, or the error, and how long it took."""

    ok: bool
    status: int
    text: str = ""
    error: str | None = None
    model: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    cost_usd: float | None = None  # `x-keel-cost-usd`: plain calls whose price Keel knows
    streamed: bool = False


def error_message(raw: bytes, status: int) -> str:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(body.get("detail"), str):
            return str(body["detail"])
    return f"HTTP {status}"


def _chat_text(body: dict[str, Any]) -> str:
    choices = body.get("choices") or [{}]
    message = choices[0].get("message") or {}
    return str(message.get("content") or "")


@dataclass(slots=True)
class _StreamState:
    parts: list[str] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    error: str | None = None
    first_at: float | None = None

    def take(self, line: str) -> None:
        if not line.startswith("data:"):
            return
        data = line[5:].strip()
        if not data or data == "[DONE]":
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.error = "the stream sent a chunk that is not JSON"
            return
        if isinstance(chunk.get("error"), dict):  # an error after the status line
            self.error = str(chunk["error"].get("message") or "the stream broke")
            return
        self.model = chunk.get("model") or self.model
        self.usage = chunk.get("usage") or self.usage
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                if self.first_at is None:
                    self.first_at = time.perf_counter()
                self.parts.append(piece)


class DemoClient:
    """One connection pool to Keel for the whole demo."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            return await self._http.send(request, stream=stream)
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
            message = f"cannot reach Keel at {self.url}: is `keel serve` running?"
            raise KeelUnreachable(message) from None
        except httpx.InvalidURL:
            raise DemoError(f"not a valid Keel URL: {self.url!r} (see --url, KEEL_URL)") from None

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        """A management API call (`/api/v1{path}`); DemoError with Keel's message on failure."""
        request = self._http.build_request(method, f"/api/v1{path}", json=body)
        try:
            response = await self._send(request)
        except httpx.TimeoutException:
            raise DemoError(f"Keel at {self.url} did not answer {method} /api/v1{path}") from None
        if response.is_error:
            message = error_message(response.content, response.status_code)
            raise ApiFailure(f"{method} /api/v1{path}: {message}", response.status_code)
        return orjson.loads(response.content) if response.content else None

    async def get(self, path: str) -> httpx.Response:
        try:
            return await self._send(self._http.build_request("GET", path))
        except httpx.TimeoutException:
            raise KeelUnreachable(f"Keel at {self.url} did not answer GET {path}") from None

    async def call(self, endpoint: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        """One gateway call: `endpoint` is `chat` or `embeddings`."""
        path = "/v1/chat/completions" if endpoint == "chat" else "/v1/embeddings"
        request = self._http.build_request("POST", path, json=body, headers=headers)
        started = time.perf_counter()
        try:
            if body.get("stream"):
                return await self._stream(request, started)
            response = await self._send(request)
        except httpx.TimeoutException:
            return Answer(False, 0, error="Keel did not answer in time", latency_ms=_ms(started))
        latency = _ms(started)
        if response.is_error:
            error = error_message(response.content, response.status_code)
            return Answer(False, response.status_code, error=error, latency_ms=latency)
        answer = orjson.loads(response.content)
        return Answer(
            True,
            response.status_code,
            text=_chat_text(answer) if endpoint == "chat" else "",
            model=answer.get("model"),
            usage=answer.get("usage") or {},
            latency_ms=latency,
            cost_usd=_cost(response.headers.get("x-keel-cost-usd")),
        )

    async def _stream(self, request: httpx.Request, started: float) -> Answer:
        response = await self._send(request, stream=True)
        state = _StreamState()
        try:
            if response.is_error:
                raw = await response.aread()
                error = error_message(raw, response.status_code)
                latency = _ms(started)
                return Answer(False, response.status_code, error=error, latency_ms=latency)
            async for line in response.aiter_lines():
                state.take(line)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            state.error = "the connection closed before the stream ended"
        finally:
            await response.aclose()
        ttft = (state.first_at - started) * 1000.0 if state.first_at is not None else None
        return Answer(
            state.error is None,
            response.status_code,
            text="".join(state.parts),
            error=state.error,
            model=state.model,
            usage=state.usage,
            latency_ms=_ms(started),
            ttft_ms=ttft,
            streamed=True,
        )


def _cost(header: str | None) -> float | None:
    try:
        return float(header) if header is not None else None
    except ValueError:
        return None


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
