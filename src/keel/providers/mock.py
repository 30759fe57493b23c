"""The offline `mock` provider: deterministic answers, token counts and failures, no network.

Keel registers an instance named `mock` even without config (`DEFAULT_CONFIG`), so `mock/echo`
always works. Models, as clients address them:

- `mock/echo`: answers with the last user message's text (a content string, or the text parts of
  a content list joined by spaces), as a full OpenAI `chat.completion`. `n` gives n identical
  choices. With `tools`, a last user text `call NAME {json}` is answered with a tool call to
  NAME with those arguments (finish_reason `tool_calls`). `response_format` json_object wraps
  the text as `{"echo": text}`. Streams send one chunk per word.
- `mock/fail`: always fails with 502.
- `mock/embed` (and `mock/echo`) for embeddings: 8-dimension unit vectors derived from the
  sha256 of each input, so equal inputs get equal vectors.
- `mock/<model>` for a model of the bundled price book (`mock/gpt-4o-mini`,
  `mock/claude-sonnet-4-5`, `mock/openai/text-embedding-3-small`; the rule is
  `keel.costs.pricing.mock_model_kind`): a chat model answers exactly like `mock/echo`, an
  embedding model like `mock/embed`, and the call costs that model's list price on the mock's
  token counts, so a demo without config shows real costs. Any other name is a 404, so a typo
  never silently succeeds. `mock/echo`, `mock/embed` and `mock/fail` stay free.

Token counts are deterministic: the tokens of a text are its whitespace-separated words
(`len(text.split())`). input_tokens is the sum over all messages' text; output_tokens the words
of the answer (of the tool name and arguments for a tool call), times n.

Knobs, so demos and tests need no network. Provider options: `latency_ms` (delay before
answering), `chunk_delay_ms` (delay between stream chunks), `failure_rate` (0..1, drawn from a
random generator seeded with option `seed`, default 0; a hit fails with 502). Per request, from
the client's headers: `x-mock-latency-ms`, `x-mock-chunk-delay-ms`, and `x-mock-fail`: `429`
(429 with retry_after 1), `500` (502), `timeout` (504), `midstream` (a stream fails after half
its words; a plain call fails with 502).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import random
import re
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from keel.config import ConfigError, ProviderConfig
from keel.costs.pricing import MockKind, mock_model_kind
from keel.providers.base import CallContext, ChatResult, EmbeddingResult, UpstreamError, Usage
from keel.providers.http import DONE_FRAME, asked_usage, sse_frame, timeout_error
from keel.providers.registry import ProviderRegistry

__all__ = [
    "DEFAULT_CONFIG",
    "LISTED_MODELS",
    "MockProvider",
    "MockStream",
    "count_tokens",
    "register",
]

DEFAULT_CONFIG = ProviderConfig(name="mock", type="mock")
_CHAT_MODELS = ("echo", "fail")
_EMBEDDING_MODELS = ("embed", "echo", "fail")
# What GET /v1/models lists for a mock provider: its own models, then the price-book stand-ins
# that `keel demo` calls (the mock serves every book model; listing the whole book helps no one).
LISTED_MODELS = (
    "echo",
    "embed",
    "fail",
    "gpt-4o-mini",
    "gpt-4o",
    "claude-haiku-4-5",
    "claude-sonnet-4-5",
    "openai/text-embedding-3-small",
)
_BOOK_EXAMPLES: dict[MockKind, str] = {
    "chat": "gpt-4o-mini, claude-sonnet-4-5",
    "embedding": "openai/text-embedding-3-small",
}
_FAILURES = ("429", "500", "timeout", "midstream")
_PIECE = re.compile(r"\s*\S+\s*")  # a word with the whitespace around it: pieces add up to the text


def register(registry: ProviderRegistry) -> None:
    """Entry point of the `keel.providers` group."""
    registry.add("mock", MockProvider)


def count_tokens(text: str) -> int:
    """The mock's token count of a text: its whitespace-separated words."""
    return len(text.split())


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return " ".join(str(p.get("text", "")) for p in parts)
    return ""


@dataclass(frozen=True, slots=True)
class _Answer:
    content: str | None  # None for a tool call
    tool_call: dict[str, Any] | None
    usage: Usage
    n: int

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_call else "stop"


def _answer(body: Mapping[str, Any]) -> _Answer:
    raw_messages = body.get("messages")
    messages = (
        [m for m in raw_messages if isinstance(m, dict)] if isinstance(raw_messages, list) else []
    )
    users = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    last = users[-1] if users else ""
    requested_n = body.get("n")
    n = requested_n if isinstance(requested_n, int) and requested_n > 0 else 1
    content: str | None = last
    tool_call = None
    if body.get("tools") and last.startswith("call "):
        name, _, args = last[5:].strip().partition(" ")
        arguments = args.strip() or "{}"
        call_id = "call_mock_" + hashlib.sha256(last.encode()).hexdigest()[:16]
        function = {"name": name, "arguments": arguments}
        tool_call = {"id": call_id, "type": "function", "function": function}
        content, out = None, count_tokens(name) + count_tokens(arguments)
    else:
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_object":
            content = orjson.dumps({"echo": last}).decode()
        out = count_tokens(content or "")
    prompt = sum(count_tokens(_text_of(m.get("content"))) for m in messages)
    usage = Usage(input_tokens=prompt, output_tokens=out * n, cached_tokens=0, reasoning_tokens=0)
    return _Answer(content, tool_call, usage, n)


def _usage_json(usage: Usage) -> dict[str, Any]:
    prompt, completion = usage.input_tokens or 0, usage.output_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _head(model: str, ctx: CallContext, kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-mock-{ctx.request_id}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
    }


def _completion(model: str, answer: _Answer, ctx: CallContext) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content}
    if answer.tool_call:
        message["tool_calls"] = [answer.tool_call]
    choice = {"message": message, "logprobs": None, "finish_reason": answer.finish_reason}
    choices = [{"index": i, **choice} for i in range(answer.n)]
    return {
        **_head(model, ctx, "chat.completion"),
        "choices": choices,
        "usage": _usage_json(answer.usage),
    }


def _chunks(
    model: str, answer: _Answer, ctx: CallContext, with_usage: bool
) -> list[tuple[dict[str, Any], str]]:
    """The stream's chunks, each with the text it adds: role, one per word, finish, usage."""
    head = _head(model, ctx, "chat.completion.chunk")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [{"index": i, **choice} for i in range(answer.n)]}

    out = [(chunk({"role": "assistant", "content": ""}), "")]
    if answer.tool_call:
        out.append((chunk({"tool_calls": [{"index": 0, **answer.tool_call}]}), ""))
    else:
        pieces = _PIECE.findall(answer.content or "")
        # the text is what the n choices add, as an OpenAI stream reader would collect it
        out += [(chunk({"content": piece}), piece * answer.n) for piece in pieces]
    out.append((chunk({}, answer.finish_reason), ""))
    if with_usage:
        out.append(({**head, "choices": [], "usage": _usage_json(answer.usage)}, ""))
    return out


class MockStream:
    """The mock's stream: precomputed chunks sent with the configured delays."""

    def __init__(
        self,
        model: str,
        chunks: list[tuple[dict[str, Any], str]],
        usage: Usage,
        delay: float,
        fail_at: int | None,
    ) -> None:
        # Like a provider's usage, it grows with what was actually sent: a stream the client
        # cut short reports the words it got, and the whole count only once it is complete.
        self._full = usage
        self.usage: Usage | None = Usage(input_tokens=usage.input_tokens, output_tokens=0)
        self.served_model: str | None = model
        self._parts: list[str] = []
        self._chunks = chunks
        self._delay = delay
        self._fail_at = fail_at
        self._next = 0
        self._closed = False

    @property
    def output_text(self) -> str:
        return "".join(self._parts)

    @output_text.setter
    def output_text(self, value: str) -> None:
        self._parts = [value]

    def __aiter__(self) -> MockStream:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        index = self._next
        self._next += 1
        if index == len(self._chunks):
            self._closed = True
            self.usage = self._full
            return DONE_FRAME
        if index > 0 and self._delay > 0:
            await asyncio.sleep(self._delay)
        if index == self._fail_at:
            self._closed = True
            raise UpstreamError(
                502,
                "the mock stream broke midstream (x-mock-fail: midstream)",
                type="upstream_stream_error",
            )
        chunk, text = self._chunks[index]
        self._parts.append(text)
        if self.usage is not self._full and self.usage is not None:
            # the mock's chunks are whole words, so counting chunk by chunk adds up
            sent = (self.usage.output_tokens or 0) + count_tokens(text)
            self.usage = Usage(input_tokens=self._full.input_tokens, output_tokens=sent)
        return sse_frame(chunk)

    async def aclose(self) -> None:
        self._closed = True


def _number(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UpstreamError(
            400, f"{what} must be a number, not {value!r}", type="invalid_request_error"
        ) from None
    if not math.isfinite(number) or number < 0:
        raise UpstreamError(400, f"{what} must be a number >= 0", type="invalid_request_error")
    return number


@dataclass(frozen=True, slots=True)
class _Knobs:
    latency: float  # seconds
    chunk_delay: float  # seconds
    fail: str | None


class MockProvider:
    """Answers offline; see the module docstring for models, token counts and knobs."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        options = config.options
        try:
            self._latency = _number(options.get("latency_ms", 0), "latency_ms") / 1000
            self._chunk_delay = _number(options.get("chunk_delay_ms", 0), "chunk_delay_ms") / 1000
            self._failure_rate = _number(options.get("failure_rate", 0), "failure_rate")
        except UpstreamError as exc:
            raise ConfigError(f"provider {config.name!r}: {exc.message}") from None
        if self._failure_rate > 1:
            raise ConfigError(f"provider {config.name!r}: failure_rate must be between 0 and 1")
        self._random = random.Random(options.get("seed", 0))

    def price_provider_id(self) -> str | None:
        # the cost layer prices `mock` at 0.0, except the book models it stands in for
        return "mock"

    def _knobs(self, ctx: CallContext) -> _Knobs:
        headers = ctx.client_headers
        latency, delay = self._latency, self._chunk_delay
        if "x-mock-latency-ms" in headers:
            latency = _number(headers["x-mock-latency-ms"], "x-mock-latency-ms") / 1000
        if "x-mock-chunk-delay-ms" in headers:
            delay = _number(headers["x-mock-chunk-delay-ms"], "x-mock-chunk-delay-ms") / 1000
        fail = headers.get("x-mock-fail")
        if fail is not None and fail not in _FAILURES:
            raise UpstreamError(
                400,
                f"x-mock-fail must be one of {', '.join(_FAILURES)}, not {fail!r}",
                type="invalid_request_error",
            )
        return _Knobs(latency, delay, fail)

    async def _begin(
        self, body: Mapping[str, Any], ctx: CallContext, models: tuple[str, ...], kind: MockKind
    ) -> tuple[str, _Knobs]:
        """Check the model, wait the latency, then fail as the knobs say; return model and knobs."""
        model = body.get("model")
        if model not in models and not (isinstance(model, str) and mock_model_kind(model) == kind):
            raise UpstreamError(
                404,
                f"the mock provider has no {kind} model {model!r}; try one of "
                f"{', '.join(models)}, or a {kind} model of the price book "
                f"({_BOOK_EXAMPLES[kind]})",
                type="not_found_error",
            )
        knobs = self._knobs(ctx)
        if knobs.latency > 0:
            await asyncio.sleep(knobs.latency)
        self._fail(str(model), knobs)
        return str(model), knobs

    def _fail(self, model: str, knobs: _Knobs) -> None:
        if model == "fail":
            raise UpstreamError(502, "mock/fail always fails", type="upstream_error")
        if knobs.fail == "429":
            raise UpstreamError(
                429,
                "the mock provider is rate limited (x-mock-fail: 429)",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                upstream_status=429,
                retry_after=1.0,
            )
        if knobs.fail == "500":
            raise UpstreamError(
                502, "the mock provider failed (x-mock-fail: 500)", upstream_status=500
            )
        if knobs.fail == "timeout":
            raise timeout_error(self.config.name)
        if self._failure_rate and self._random.random() < self._failure_rate:
            raise UpstreamError(
                502, f"the mock provider failed at random (failure_rate {self._failure_rate})"
            )

    async def chat(self, body: dict[str, Any], ctx: CallContext) -> ChatResult:
        model, knobs = await self._begin(body, ctx, _CHAT_MODELS, "chat")
        if knobs.fail == "midstream":  # a plain answer that breaks is a broken answer
            raise UpstreamError(502, "the mock answer broke (x-mock-fail: midstream)")
        answer = _answer(body)
        return ChatResult(
            body=orjson.dumps(_completion(model, answer, ctx)),
            usage=answer.usage,
            served_model=model,
            output_text=(answer.content or "") * answer.n,
        )

    async def stream_chat(self, body: dict[str, Any], ctx: CallContext) -> MockStream:
        model, knobs = await self._begin(body, ctx, _CHAT_MODELS, "chat")
        answer = _answer(body)
        with_usage = asked_usage(body)
        chunks = _chunks(model, answer, ctx, with_usage)
        fail_at = None
        if knobs.fail == "midstream":  # after the role chunk and half the words
            fail_at = 1 + len(_PIECE.findall(answer.content or "")) // 2
        return MockStream(model, chunks, answer.usage, knobs.chunk_delay, fail_at)

    async def embeddings(self, body: dict[str, Any], ctx: CallContext) -> EmbeddingResult:
        model, _knobs = await self._begin(body, ctx, _EMBEDDING_MODELS, "embedding")
        inputs = _inputs(body.get("input"))
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(text, as_base64)}
            for i, text in enumerate(inputs)
        ]
        tokens = sum(count_tokens(text) for text in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        answer = {"object": "list", "data": data, "model": model, "usage": usage}
        return EmbeddingResult(orjson.dumps(answer), Usage(input_tokens=tokens), model)


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):  # one input given as token ids
            return [orjson.dumps(value).decode()]
        return [v if isinstance(v, str) else orjson.dumps(v).decode() for v in value]
    raise UpstreamError(
        400, "embeddings need an `input`: a string or a list", type="invalid_request_error"
    )


def _vector(text: str, as_base64: bool) -> list[float] | str:
    """8 numbers from the text's sha256, scaled to length 1."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [int.from_bytes(digest[i : i + 4], "big") / 2**31 - 1 for i in range(0, 32, 4)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    vector = [v / norm for v in raw]
    if as_base64:  # what the openai SDK asks for by default: little-endian float32
        return base64.b64encode(struct.pack("<8f", *vector)).decode()
    return vector
