"""The `gemini` provider type: Google AI Studio's Gemini API behind Keel's OpenAI-shaped interface.

Config: `base_url` (default https://generativelanguage.googleapis.com/v1beta) and `api_key`, sent
in the `x-goog-api-key` header (never in the URL, where it could end up in a log or an error).
A model name without a slash is addressed as `models/<name>`; `tunedModels/...` go as given.
The body translation lives in `gemini_translate`; this module owns the HTTP calls, the stream
of GenerateContentResponse chunks and embeddings.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from keel.config import ProviderConfig
from keel.providers.base import (
    CallContext,
    ChatResult,
    ChatStream,
    EmbeddingResult,
    Provider,
    UpstreamError,
    Usage,
)
from keel.providers.gemini_translate import (
    ToolCallIds,
    blocked_error,
    finish_reason,
    openai_usage,
    to_candidate_message,
    to_generate_request,
    usage_from,
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

__all__ = ["GeminiProvider", "register"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"


def _invalid_json(provider: str) -> UpstreamError:
    return UpstreamError(502, f"provider {provider!r} answered with invalid JSON")


def _key_error(exc: UpstreamError) -> UpstreamError:
    # Gemini answers a bad API key with 400, which would otherwise pass as the client's fault
    if exc.upstream_status == 400 and "API key not valid" in exc.message:
        return UpstreamError(
            502,
            exc.message + " (check the provider's api_key in Keel's config)",
            type="upstream_auth_error",
            upstream_status=400,
        )
    return exc


def _loads(provider: str, data: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _invalid_json(provider) from None
    if not isinstance(payload, dict):
        raise _invalid_json(provider)
    return payload


def _completion(data: Mapping[str, Any], model: str, provider: str) -> tuple[dict[str, Any], str]:
    blocked = blocked_error(data)
    if blocked is not None:
        raise blocked
    candidates = data.get("candidates") or []
    if not candidates:
        raise UpstreamError(502, f"provider {provider!r} answered with no candidates")
    ids = ToolCallIds()
    choices, texts = [], []
    for position, candidate in enumerate(candidates):
        choice, text = to_candidate_message(candidate, ids)
        choices.append({"index": candidate.get("index", position), **choice})
        texts.append(text)
    body: dict[str, Any] = {
        "id": f"chatcmpl-{data.get('responseId') or uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("modelVersion") or model,
        "choices": choices,
    }
    usage = usage_from(data.get("usageMetadata"))
    if usage is not None:
        body["usage"] = openai_usage(usage)
    return body, "".join(texts)


class _StreamTranslator:
    """Turns streamed GenerateContentResponse chunks into OpenAI chat.completion.chunk frames."""

    def __init__(self, provider: str, model: str, include_usage: bool) -> None:
        self.provider = provider
        self.model = model
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self.texts: list[str] = []
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._created = int(time.time())
        self._ids = ToolCallIds()
        self._calls: dict[int, int] = {}  # candidate index -> tool calls so far
        self._started: set[int] = set()
        self._finished: set[int] = set()

    def feed(self, data: bytes) -> list[bytes]:
        payload = _loads(self.provider, data)
        error = payload.get("error")
        if isinstance(error, dict):
            raise error_from_response(self.provider, int(error.get("code") or 500), data, {})
        blocked = blocked_error(payload)
        if blocked is not None:
            raise blocked
        if payload.get("responseId") and not self._started:
            self._id = f"chatcmpl-{payload['responseId']}"
        self.model = str(payload.get("modelVersion") or self.model)
        self.usage = usage_from(payload.get("usageMetadata")) or self.usage
        frames: list[bytes] = []
        for position, candidate in enumerate(payload.get("candidates") or []):
            frames.extend(self._candidate(int(candidate.get("index", position)), candidate))
        return frames

    @property
    def done(self) -> bool:
        return False  # Gemini has no end-of-message event: read until the stream closes

    def finish(self) -> list[bytes]:
        if not self._finished:
            raise UpstreamError(
                502,
                f"the stream from provider {self.provider!r} ended before a finish reason",
                type="upstream_stream_error",
            )
        frames = []
        if self.include_usage:
            usage = openai_usage(self.usage or Usage())
            frames.append(sse_frame({**self._envelope(), "choices": [], "usage": usage}))
        frames.append(DONE_FRAME)
        return frames

    def _envelope(self) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
        }

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        return sse_frame({**self._envelope(), "choices": [choice]})

    def _candidate(self, index: int, candidate: Mapping[str, Any]) -> list[bytes]:
        frames = []
        if index not in self._started:
            self._started.add(index)
            frames.append(self._chunk(index, {"role": "assistant", "content": ""}))
        for part in (candidate.get("content") or {}).get("parts") or []:
            if "functionCall" in part:
                number = self._calls.get(index, 0)
                self._calls[index] = number + 1
                call = self._ids.tool_call(part, number)
                frames.append(self._chunk(index, {"tool_calls": [call]}))
            elif part.get("text") and not part.get("thought"):
                self.texts.append(part["text"])
                frames.append(self._chunk(index, {"content": part["text"]}))
        reason = candidate.get("finishReason")
        if reason and index not in self._finished:
            self._finished.add(index)
            finish = finish_reason(reason, index in self._calls)
            frames.append(self._chunk(index, {}, finish))
        return frames


class GeminiProvider:
    """One configured Gemini API key."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._base = (config.base_url or DEFAULT_BASE_URL).rstrip("/")

    def _headers(self, ctx: CallContext) -> dict[str, str]:
        headers = dict(ctx.forward_headers)
        headers["content-type"] = "application/json"
        if self.config.api_key:
            headers["x-goog-api-key"] = self.config.api_key
        return headers

    @staticmethod
    def _model_path(model: Any) -> str:
        name = str(model)
        return name if "/" in name else f"models/{name}"

    async def _post(self, ctx: CallContext, url: str, payload: Any) -> bytes:
        try:
            raw, _ = await post_json(ctx, self.config.name, url, self._headers(ctx), payload)
        except UpstreamError as exc:
            raise _key_error(exc) from None
        return raw

    async def chat(self, body: dict[str, Any], ctx: CallContext) -> ChatResult:
        payload = to_generate_request(body)
        url = f"{self._base}/{self._model_path(body['model'])}:generateContent"
        data = _loads(self.config.name, await self._post(ctx, url, payload))
        out, text = _completion(data, str(body["model"]), self.config.name)
        served = data.get("modelVersion")
        usage = usage_from(data.get("usageMetadata"))
        return ChatResult(orjson.dumps(out), usage, str(served) if served else None, text)

    async def stream_chat(self, body: dict[str, Any], ctx: CallContext) -> ChatStream:
        payload = to_generate_request(body)
        url = f"{self._base}/{self._model_path(body['model'])}:streamGenerateContent?alt=sse"
        try:
            resp = await open_post(ctx, self.config.name, url, self._headers(ctx), payload)
        except UpstreamError as exc:
            raise _key_error(exc) from None
        translator = _StreamTranslator(self.config.name, str(body["model"]), asked_usage(body))
        return await open_translated(resp, self.config.name, translator)

    async def embeddings(self, body: dict[str, Any], ctx: CallContext) -> EmbeddingResult:
        texts = _embedding_inputs(body.get("input"))
        model = self._model_path(body["model"])
        requests = []
        for text in texts:
            request: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
            if body.get("dimensions"):
                request["outputDimensionality"] = body["dimensions"]
            requests.append(request)
        url = f"{self._base}/{model}:batchEmbedContents"
        data = _loads(self.config.name, await self._post(ctx, url, {"requests": requests}))
        vectors: list[list[float]] = [
            e["values"]
            for e in data.get("embeddings") or []
            if isinstance(e, dict) and isinstance(e.get("values"), list)
        ]
        if len(vectors) != len(texts):
            raise UpstreamError(502, f"provider {self.config.name!r} answered with no embeddings")
        as_base64 = body.get("encoding_format") == "base64"
        out = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode(v, as_base64)}
                for i, v in enumerate(vectors)
            ],
            "model": str(body["model"]),
        }
        # Gemini reports no token counts for embeddings; the gateway may estimate them
        return EmbeddingResult(orjson.dumps(out), None, None)

    def price_provider_id(self) -> str | None:
        return "google"


def _embedding_inputs(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        return list(raw)
    raise UpstreamError(
        400,
        "provider gemini accepts embedding input only as a string or a list of strings",
        type="invalid_request_error",
    )


def _encode(vector: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return vector
    # OpenAI's base64 format: little-endian float32s
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def register(registry: ProviderRegistry) -> None:
    registry.add("gemini", _create)


def _create(config: ProviderConfig) -> Provider:
    return GeminiProvider(config)
