"""OpenAI-compatible providers: `openai` (any server by `base_url`) and `azure` (Azure OpenAI).

Owns the calls to upstreams that already speak Keel's internal format, which is OpenAI's own.
This adapter is on the hot path, so it translates as little as it can: the client's body dict is
forwarded as is (only Azure moves `model` into the URL), headers are built once per instance, a
plain answer is parsed once only to read `usage` and `model` and its bytes are returned unchanged,
and stream frames are forwarded byte for byte (only the usage chunk Keel asked for on the client's
behalf is held back).

Provider options: `headers` (extra static headers), `organization` (OpenAI-Organization),
`price_provider` (price book id for a non-OpenAI base_url), and for azure `api_version`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from keel.config import ConfigError, ProviderConfig
from keel.providers.base import CallContext, ChatResult, EmbeddingResult, UpstreamError, Usage
from keel.providers.client import Response, TransportError
from keel.providers.http import DONE_FRAME, asked_usage, iter_sse, open_post, post_json
from keel.providers.registry import ProviderRegistry

__all__ = ["AzureOpenAIProvider", "OpenAIProvider", "OpenAIStream", "parse_usage", "register"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_AZURE_API_VERSION = "2024-10-21"

# Whatever the gateway puts in forward_headers, client credentials and hop-by-hop headers must
# not reach an upstream: the provider's own credentials are the only ones it may see.
_CREDENTIALS = {"authorization", "api-key", "x-api-key", "proxy-authorization", "cookie"}
_TRANSPORT = {"host", "content-length", "content-type", "transfer-encoding", "connection"}
_NEVER_FORWARD = frozenset(_CREDENTIALS | _TRANSPORT)
_MAX_MESSAGE = 500
_DRAIN_S = 1.0


def register(registry: ProviderRegistry) -> None:
    """Entry point of the `keel.providers` group."""
    registry.add("openai", OpenAIProvider)
    registry.add("azure", AzureOpenAIProvider)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _detail(raw: dict[str, Any], group: str, name: str) -> int | None:
    details = raw.get(group)
    return _count(details.get(name)) if isinstance(details, dict) else None


def parse_usage(raw: Any) -> Usage | None:
    """Map OpenAI's `usage` object (chat or embeddings) to Keel's Usage; None if there is none."""
    if not isinstance(raw, dict):
        return None
    return Usage(
        input_tokens=_count(raw.get("prompt_tokens")),
        output_tokens=_count(raw.get("completion_tokens")),
        cached_tokens=_detail(raw, "prompt_tokens_details", "cached_tokens"),
        reasoning_tokens=_detail(raw, "completion_tokens_details", "reasoning_tokens"),
    )


def _error_object(provider: str, error: Any) -> UpstreamError:
    """An `{"error": ...}` sent with status 200 or inside a stream: the upstream failed."""
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str) or not message:
        message = orjson.dumps(error).decode("utf-8", "replace")
    return UpstreamError(502, f"provider {provider!r} answered an error: {message[:_MAX_MESSAGE]}")


def _load_object(provider: str, raw: bytes, what: str) -> dict[str, Any]:
    """Parse one JSON answer (or stream chunk); anything but a success object is an error."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError(502, f"provider {provider!r} answered invalid JSON{what}") from None
    if not isinstance(data, dict):
        raise UpstreamError(502, f"provider {provider!r} answered JSON that is not an object{what}")
    if data.get("error") is not None:
        raise _error_object(provider, data["error"])
    return data


def _message_text(data: dict[str, Any]) -> str:
    choices = data.get("choices")
    if not isinstance(choices, list):
        return ""
    parts = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
    return "".join(parts)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _with_stream_usage(payload: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy asking for the usage chunk; the caller's dict stays as the client sent it
    (the gateway may retry it on another provider)."""
    options = payload.get("stream_options")
    merged = {**options, "include_usage": True} if isinstance(options, dict) else None
    return {**payload, "stream": True, "stream_options": merged or {"include_usage": True}}


class OpenAIStream:
    """An open OpenAI-format SSE stream, forwarded frame by frame as bytes.

    Each chunk is parsed once (to collect usage, served model and text); its original bytes are
    what the client gets. The usage-only chunk is held back unless the client asked for it.
    """

    def __init__(self, provider: str, resp: Response, show_usage: bool, secret: str | None) -> None:
        self.usage: Usage | None = None
        self.served_model: str | None = None
        self._parts: list[str] = []
        self._provider = provider
        self._resp = resp
        self._events = iter_sse(resp, provider)
        self._show_usage = show_usage
        self._secret = secret
        self._pending: tuple[bytes, dict[str, Any] | None] | None = None
        self._saw_done = False
        self._closed = False

    @property
    def output_text(self) -> str:
        # joined on demand: appending to a str per chunk would copy the text over and over
        return "".join(self._parts)

    @output_text.setter
    def output_text(self, value: str) -> None:
        self._parts = [value]

    async def start(self) -> None:
        """Read the first event, so an upstream that fails at once fails before any byte is sent."""
        try:
            self._pending = await self._read()
        except asyncio.CancelledError:
            self._close_connection()
            raise

    def __aiter__(self) -> OpenAIStream:
        return self

    async def __anext__(self) -> bytes:
        while not self._saw_done and not self._closed:
            if self._pending is not None:
                data, chunk = self._pending
                self._pending = None
            else:
                data, chunk = await self._read()
            if chunk is None:
                self._saw_done = True
                return DONE_FRAME
            if self._show_usage or chunk.get("choices") or chunk.get("usage") is None:
                return b"data: " + data + b"\n\n"
        await self.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if self._closed:
            return
        if self._saw_done:
            await self._drain()
        self._close_connection()
        await self._close_events()

    async def _read(self) -> tuple[bytes, dict[str, Any] | None]:
        """The next data event and its parsed chunk (None for `[DONE]`); errors close the stream."""
        try:
            _event, data = await anext(self._events)
            if data == b"[DONE]":
                return data, None
            chunk = _load_object(self._provider, data, " in its stream")
        except StopAsyncIteration:
            early = f"stream ended early: provider {self._provider!r} closed it without [DONE]"
            raise await self._fail(
                UpstreamError(502, early, type="upstream_stream_error")
            ) from None
        except UpstreamError as exc:
            raise await self._fail(exc) from None
        except ValueError:  # the line reader refuses an absurdly long line
            raise await self._fail(
                UpstreamError(502, f"provider {self._provider!r} sent an oversized stream line")
            ) from None
        self._observe(chunk)
        return data, chunk

    def _observe(self, chunk: dict[str, Any]) -> None:
        if self.served_model is None:
            self.served_model = _str_or_none(chunk.get("model"))
        usage = chunk.get("usage")
        if usage is not None:  # with include_usage, every chunk carries `"usage": null`
            self.usage = parse_usage(usage)
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                self._parts.append(content)

    async def _fail(self, exc: UpstreamError) -> UpstreamError:
        self._close_connection()
        await self._close_events()
        return _scrubbed(exc, self._secret)

    async def _drain(self) -> None:
        """Read the end of the body after [DONE] so the connection goes back to the pool; an
        upstream that keeps it open longer than _DRAIN_S loses the connection instead."""
        try:
            async with asyncio.timeout(_DRAIN_S):
                async for _ in self._events:
                    pass
        except (UpstreamError, ValueError, TimeoutError):
            self._close_connection()

    def _close_connection(self) -> None:
        self._closed = True
        # release() keeps a fully read connection for reuse and closes an unfinished one
        self._resp.release()

    async def _close_events(self) -> None:
        close = getattr(self._events, "aclose", None)
        if close is not None:
            await close()


async def _json_instead_of_stream(provider: str, resp: Response) -> UpstreamError:
    """A 200 JSON answer to a stream request: usually an error object, never a stream."""
    try:
        _load_object(provider, await resp.read(), "")
    except UpstreamError as exc:
        return exc
    except (TransportError, TimeoutError):
        pass  # unreadable: the answer below says enough
    finally:
        resp.release()
    return UpstreamError(502, f"provider {provider!r} answered JSON to a stream request")


def _scrubbed(exc: UpstreamError, secret: str | None) -> UpstreamError:
    """Upstream messages are quoted in errors; make sure none quotes the provider's key back."""
    if secret and secret in exc.message:
        exc.message = exc.message.replace(secret, "***")
        exc.args = (exc.message,)
    return exc


def _static_headers(config: ProviderConfig) -> dict[str, str]:
    headers = config.options.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigError(f"provider {config.name!r}: `headers` must map header names to strings")
    return dict(headers)


class OpenAIProvider:
    """Any OpenAI-compatible server (OpenAI, vLLM, Ollama, Groq, Together, ...) by base_url."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._name = config.name
        self._secret = config.api_key
        base = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._base = base
        self._chat_url = f"{base}/chat/completions"
        self._embeddings_url = f"{base}/embeddings"
        self._headers = self._build_headers(config)
        self._blocked = _NEVER_FORWARD | {name.lower() for name in self._headers}
        self._price_id = self._price_provider(config)

    def _build_headers(self, config: ProviderConfig) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **_static_headers(config)}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        organization = config.options.get("organization")
        if organization:
            headers["OpenAI-Organization"] = str(organization)
        return headers

    def _price_provider(self, config: ProviderConfig) -> str | None:
        if config.base_url is None or urlsplit(config.base_url).hostname == "api.openai.com":
            return "openai"
        return _str_or_none(config.options.get("price_provider"))

    def price_provider_id(self) -> str | None:
        return self._price_id

    def _chat_target(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return self._chat_url, body

    def _embeddings_target(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return self._embeddings_url, body

    def _headers_for(self, ctx: CallContext) -> Mapping[str, str]:
        if not ctx.forward_headers:
            return self._headers
        merged = {k: v for k, v in ctx.forward_headers.items() if k.lower() not in self._blocked}
        merged.update(self._headers)
        return merged

    async def _post(
        self, target: tuple[str, dict[str, Any]], ctx: CallContext
    ) -> tuple[bytes, dict[str, Any]]:
        url, payload = target
        try:
            raw, _headers = await post_json(ctx, self._name, url, self._headers_for(ctx), payload)
            return raw, _load_object(self._name, raw, "")
        except UpstreamError as exc:
            raise _scrubbed(exc, self._secret) from None

    async def chat(self, body: dict[str, Any], ctx: CallContext) -> ChatResult:
        raw, data = await self._post(self._chat_target(body), ctx)
        return ChatResult(
            body=raw,
            usage=parse_usage(data.get("usage")),
            served_model=_str_or_none(data.get("model")),
            output_text=_message_text(data),
        )

    async def stream_chat(self, body: dict[str, Any], ctx: CallContext) -> OpenAIStream:
        url, payload = self._chat_target(body)
        headers = self._headers_for(ctx)
        try:
            resp = await open_post(ctx, self._name, url, headers, _with_stream_usage(payload))
        except UpstreamError as exc:
            raise _scrubbed(exc, self._secret) from None
        if resp.content_type == "application/json":
            raise _scrubbed(await _json_instead_of_stream(self._name, resp), self._secret)
        stream = OpenAIStream(self._name, resp, asked_usage(body), self._secret)
        await stream.start()
        return stream

    async def embeddings(self, body: dict[str, Any], ctx: CallContext) -> EmbeddingResult:
        raw, data = await self._post(self._embeddings_target(body), ctx)
        model = _str_or_none(data.get("model"))
        return EmbeddingResult(body=raw, usage=parse_usage(data.get("usage")), served_model=model)


class AzureOpenAIProvider(OpenAIProvider):
    """Azure OpenAI: `base_url` is the resource endpoint and the model is the deployment name."""

    def __init__(self, config: ProviderConfig) -> None:
        if not config.base_url:
            example = "https://NAME.openai.azure.com"
            raise ConfigError(f"provider {config.name!r} (azure) needs `base_url`: {example}")
        super().__init__(config)
        version = config.options.get("api_version") or DEFAULT_AZURE_API_VERSION
        self._query = f"?api-version={quote(str(version), safe='')}"

    def _build_headers(self, config: ProviderConfig) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **_static_headers(config)}
        if config.api_key:
            headers["api-key"] = config.api_key
        return headers

    def _price_provider(self, config: ProviderConfig) -> str | None:
        return "azure"

    def _deployment_target(
        self, body: dict[str, Any], operation: str
    ) -> tuple[str, dict[str, Any]]:
        deployment = body.get("model")
        if not isinstance(deployment, str) or not deployment:
            needs = f"provider {self._name!r} (azure) needs the deployment name as the model"
            raise UpstreamError(400, needs, type="invalid_request_error")
        url = f"{self._base}/openai/deployments/{quote(deployment, safe='')}/{operation}"
        # the deployment is in the URL; Azure takes no `model` in the body
        return url + self._query, {k: v for k, v in body.items() if k != "model"}

    def _chat_target(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return self._deployment_target(body, "chat/completions")

    def _embeddings_target(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return self._deployment_target(body, "embeddings")
