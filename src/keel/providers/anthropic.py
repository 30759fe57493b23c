"""The `anthropic` provider type: Anthropic's Messages API behind Keel's OpenAI-shaped interface.

Config: `base_url` (default https://api.anthropic.com), `api_key`, and the options
`anthropic_version` (default 2023-06-01) and `default_max_tokens` (default 4096, sent when the
client gives no max_tokens because Anthropic requires one). The body translation lives in
`anthropic_translate`; this module owns the HTTP calls and the stream of events.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from keel.config import ProviderConfig
from keel.providers.anthropic_translate import (
    finish_reason,
    openai_usage,
    to_chat_completion,
    to_messages_request,
    usage_from,
)
from keel.providers.base import (
    CallContext,
    ChatResult,
    ChatStream,
    EmbeddingResult,
    Provider,
    UpstreamError,
    Usage,
)
from keel.providers.http import (
    DONE_FRAME,
    asked_usage,
    error_from_response,
    open_post,
    post_json,
    sse_frame,
)
from keel.providers.registry import ProviderRegistry
from keel.providers.translated import open_translated

__all__ = ["AnthropicProvider", "register"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"

# the HTTP status Anthropic gives each error type, for errors that arrive inside a stream
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def _invalid_json(provider: str) -> UpstreamError:
    return UpstreamError(502, f"provider {provider!r} answered with invalid JSON")


def _stream_error(provider: str, payload: Mapping[str, Any], data: bytes) -> UpstreamError:
    err = payload.get("error")
    kind = err.get("type") if isinstance(err, dict) else None
    status = _ERROR_STATUS.get(str(kind), 500)
    return error_from_response(provider, status, data, {})


class _StreamTranslator:
    """Turns Anthropic stream events into OpenAI chat.completion.chunk frames."""

    def __init__(self, provider: str, model: str, include_usage: bool) -> None:
        self.provider = provider
        self.model = model
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self.texts: list[str] = []
        self.finished = False
        self._id = "chatcmpl-anthropic"
        self._created = int(time.time())
        self._finish = "stop"
        self._tool_index: dict[int, int] = {}  # content block index -> OpenAI tool_calls index

    def feed(self, data: bytes) -> list[bytes]:
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise _invalid_json(self.provider) from None
        if not isinstance(payload, dict):
            raise _invalid_json(self.provider)
        kind = payload.get("type")
        if kind == "error":
            raise _stream_error(self.provider, payload, data)
        if kind == "message_start":
            return self._start(payload.get("message") or {})
        if kind == "content_block_start":
            return self._block_start(payload)
        if kind == "content_block_delta":
            return self._block_delta(payload)
        if kind == "message_delta":
            self._message_delta(payload)
        elif kind == "message_stop":
            return self._stop()
        # ping, content_block_stop and event types added later carry nothing for the client
        return []

    @property
    def done(self) -> bool:
        return self.finished

    def finish(self) -> list[bytes]:
        if self.finished:
            return []
        raise UpstreamError(
            502,
            f"the stream from provider {self.provider!r} ended before message_stop",
            type="upstream_stream_error",
        )

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return sse_frame(
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self.model,
                "choices": [choice],
            }
        )

    def _start(self, message: Mapping[str, Any]) -> list[bytes]:
        self._id = str(message.get("id") or self._id)
        self.model = str(message.get("model") or self.model)
        self.usage = usage_from(message.get("usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, payload: Mapping[str, Any]) -> list[bytes]:
        block = payload.get("content_block") or {}
        if block.get("type") == "text" and block.get("text"):
            return self._text(block["text"])
        if block.get("type") != "tool_use":
            return []
        index = len(self._tool_index)
        self._tool_index[int(payload.get("index", 0))] = index
        call = {
            "index": index,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, payload: Mapping[str, Any]) -> list[bytes]:
        delta = payload.get("delta") or {}
        if delta.get("type") == "text_delta":
            return self._text(delta.get("text") or "")
        index = self._tool_index.get(int(payload.get("index", -1)))
        if (
            delta.get("type") == "input_json_delta"
            and delta.get("partial_json")
            and index is not None
        ):
            call = {"index": index, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # thinking and signature deltas stay out of the OpenAI answer

    def _text(self, text: str) -> list[bytes]:
        if not text:
            return []
        self.texts.append(text)
        return [self._chunk({"content": text})]

    def _message_delta(self, payload: Mapping[str, Any]) -> None:
        delta = payload.get("delta") or {}
        if delta.get("stop_reason"):
            self._finish = finish_reason(delta["stop_reason"])
        self.usage = usage_from(payload.get("usage"), self.usage)

    def _stop(self) -> list[bytes]:
        self.finished = True
        frames = [self._chunk({}, self._finish)]
        if self.include_usage:
            usage = openai_usage(self.usage or Usage())
            frames.append(
                sse_frame(
                    {
                        "id": self._id,
                        "object": "chat.completion.chunk",
                        "created": self._created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        frames.append(DONE_FRAME)
        return frames


class AnthropicProvider:
    """One configured Anthropic account."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._base = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._version = str(config.options.get("anthropic_version", API_VERSION))
        self._default_max_tokens = int(config.options.get("default_max_tokens", 4096))

    def _headers(self, ctx: CallContext) -> dict[str, str]:
        headers = dict(ctx.forward_headers)
        headers["anthropic-version"] = self._version
        headers["content-type"] = "application/json"
        if self.config.api_key:
            headers["x-api-key"] = self.config.api_key
        return headers

    def _payload(self, body: dict[str, Any]) -> dict[str, Any]:
        return to_messages_request(body, default_max_tokens=self._default_max_tokens)

    async def chat(self, body: dict[str, Any], ctx: CallContext) -> ChatResult:
        payload = self._payload(body)
        url = f"{self._base}/v1/messages"
        raw, _ = await post_json(ctx, self.config.name, url, self._headers(ctx), payload)
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _invalid_json(self.config.name) from None
        if not isinstance(message, dict) or message.get("type") != "message":
            raise UpstreamError(502, f"provider {self.config.name!r} answered with no message")
        out, text, usage = to_chat_completion(message, str(body["model"]))
        served = message.get("model")
        return ChatResult(orjson.dumps(out), usage, str(served) if served else None, text)

    async def stream_chat(self, body: dict[str, Any], ctx: CallContext) -> ChatStream:
        payload = self._payload(body)
        payload["stream"] = True
        url = f"{self._base}/v1/messages"
        resp = await open_post(ctx, self.config.name, url, self._headers(ctx), payload)
        translator = _StreamTranslator(self.config.name, str(body["model"]), asked_usage(body))
        return await open_translated(resp, self.config.name, translator)

    async def embeddings(self, body: dict[str, Any], ctx: CallContext) -> EmbeddingResult:
        raise UpstreamError(
            400, "provider anthropic does not offer embeddings", type="invalid_request_error"
        )

    def price_provider_id(self) -> str | None:
        return "anthropic"


def register(registry: ProviderRegistry) -> None:
    registry.add("anthropic", _create)


def _create(config: ProviderConfig) -> Provider:
    return AnthropicProvider(config)
