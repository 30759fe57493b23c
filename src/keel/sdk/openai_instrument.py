"""Trace the openai package: each `chat.completions.create` and `embeddings.create` is an LLM span.

`instrument_openai()` wraps those methods on the SDK's resource classes (sync and async, so every
client, existing or future, is covered); `uninstrument_openai()` puts the originals back. A call
gets a CLIENT span with GenAI attributes (operation, provider "openai", requested and served
model, token usage with cached and reasoning tokens, finish reasons; the messages when content
capture is on) and sends W3C `traceparent`, so Keel's gateway makes its own span a child of it.
When the client's base_url is the Keel given to `init()`, the span says `keel.via_gateway=true`
(the gateway's record counts the call; this span does not) and the current `context()`'s user,
pipeline and tags travel as `x-keel-customer`, `x-keel-pipeline` and `x-keel-tags`; those
headers never go to any other host.

Return values are the SDK's own objects, unchanged: a `Stream`/`AsyncStream` is the same object
with its iterator wrapped, and its span ends when the stream is consumed, fails or is closed.
"""

from __future__ import annotations

import functools
import importlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from keel.sdk import tracing
from keel.sdk.payload import DEFAULT_LIMIT, jsonable, to_json, truncate
from keel.sdk.scope import current_scope

__all__ = ["instrument_openai", "is_instrumented", "uninstrument_openai"]

log = logging.getLogger("keel.sdk")

# (module, class, operation); the first module of a row that imports wins (paths moved in 1.5x)
_TARGETS = (
    (("openai.resources.chat.completions.completions", "openai.resources.chat.completions"),
     "Completions", "chat"),
    (("openai.resources.chat.completions.completions", "openai.resources.chat.completions"),
     "AsyncCompletions", "chat"),
    (("openai.resources.embeddings",), "Embeddings", "embeddings"),
    (("openai.resources.embeddings",), "AsyncEmbeddings", "embeddings"),
)  # fmt: skip
_REQUEST_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
    "n": "gen_ai.request.choice.count",
    "dimensions": "gen_ai.embeddings.dimension.count",
}
_PROPAGATOR = TraceContextTextMapPropagator()
_patched: dict[tuple[type, str], Callable[..., Any]] = {}


def is_instrumented() -> bool:
    return bool(_patched)


def instrument_openai() -> bool:
    """Wrap the openai SDK's create methods; False when the openai package is not installed."""
    if _patched:
        return True
    try:
        openai = importlib.import_module("openai")
    except ImportError:
        log.debug("openai is not installed; nothing to instrument")
        return False
    streams = (openai.Stream, openai.AsyncStream)
    for modules, class_name, operation in _TARGETS:
        cls = _find_class(modules, class_name)
        if cls is None:
            log.warning("openai %s has no %s; not instrumented", openai.__version__, class_name)
            continue
        original = cls.create
        is_async = class_name.startswith("Async")
        wrap = _async_wrapper if is_async else _sync_wrapper
        cls.create = wrap(original, operation, streams[1] if is_async else streams[0])
        _patched[(cls, "create")] = original
    return True


def uninstrument_openai() -> None:
    """Put the openai SDK's own methods back."""
    while _patched:
        (cls, attr), original = _patched.popitem()
        setattr(cls, attr, original)


def _find_class(modules: tuple[str, ...], name: str) -> Any:
    """The resource class (typed Any: its `create` is replaced), or None."""
    for module_name in modules:
        try:
            cls = getattr(importlib.import_module(module_name), name, None)
        except ImportError:
            continue
        if isinstance(cls, type):
            return cls
    return None


def _sync_wrapper(original: Callable[..., Any], operation: str, stream_cls: type) -> Any:
    @functools.wraps(original)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _start(self, operation, kwargs)
        if call is None:
            return original(self, *args, **kwargs)
        token = otel_context.attach(trace.set_span_in_context(call.span))
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            otel_context.detach(token)
        if isinstance(result, stream_cls) and hasattr(result, "_iterator"):
            _follow_stream(result, call)
        else:
            call.finish(result)
        return result

    return create


def _async_wrapper(original: Callable[..., Any], operation: str, stream_cls: type) -> Any:
    @functools.wraps(original)
    async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _start(self, operation, kwargs)
        if call is None:
            return await original(self, *args, **kwargs)
        token = otel_context.attach(trace.set_span_in_context(call.span))
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            otel_context.detach(token)
        if isinstance(result, stream_cls) and hasattr(result, "_iterator"):
            _follow_async_stream(result, call)
        else:
            call.finish(result)
        return result

    return create


def _start(resource: Any, operation: str, kwargs: dict[str, Any]) -> _Call | None:
    """The call's span, its headers added to `kwargs`; None (call untraced) if that failed."""
    call: _Call | None = None
    try:
        call = _Call(getattr(resource, "_client", None), operation, kwargs)
        kwargs["extra_headers"] = call.headers(kwargs.get("extra_headers"))
    except Exception:  # a tracing bug must never break the app's call
        log.warning("keel.sdk could not trace an openai call", exc_info=True)
        if call is not None:
            call.span.end()
        return None
    return call


def _follow_stream(stream: Any, call: _Call) -> None:
    inner: Iterator[Any] = stream._iterator

    def iterate() -> Iterator[Any]:
        try:
            for chunk in inner:
                call.chunk(chunk)
                yield chunk
        except GeneratorExit:
            call.finish(None)
            raise
        except BaseException as exc:
            call.fail(exc)
            raise
        call.finish(None)

    original_close = stream.close

    def close() -> None:
        try:
            original_close()
        finally:
            call.finish(None)

    stream._iterator = iterate()
    stream.close = close
    weakref.finalize(stream, call.finish, None)  # dropped unread and unclosed


def _follow_async_stream(stream: Any, call: _Call) -> None:
    inner: AsyncIterator[Any] = stream._iterator

    async def iterate() -> AsyncIterator[Any]:
        try:
            async for chunk in inner:
                call.chunk(chunk)
                yield chunk
        except GeneratorExit:
            call.finish(None)
            raise
        except BaseException as exc:
            call.fail(exc)
            raise
        call.finish(None)

    original_close = stream.close

    async def close() -> None:
        try:
            await original_close()
        finally:
            call.finish(None)

    stream._iterator = iterate()
    stream.close = close
    weakref.finalize(stream, call.finish, None)


def _same_origin(a: str, b: str) -> bool:
    x, y = urlsplit(a), urlsplit(b)
    try:
        x_port = x.port or (443 if x.scheme == "https" else 80)
        y_port = y.port or (443 if y.scheme == "https" else 80)
    except ValueError:
        return False
    return (x.scheme, x.hostname, x_port) == (y.scheme, y.hostname, y_port)


class _Call:
    """One traced API call: its span, what it sent, and what came back (streamed or not)."""

    def __init__(self, client: Any, operation: str, kwargs: dict[str, Any]) -> None:
        state = tracing.current()
        self.capture = state is None or state.settings.capture_content
        self.limit = state.settings.max_payload_chars if state is not None else DEFAULT_LIMIT
        base_url = str(getattr(client, "base_url", ""))
        self.via_gateway = state is not None and _same_origin(base_url, state.url)
        self.client = client
        self.kwargs = kwargs
        self.operation = operation
        model = kwargs.get("model")
        attrs = self._request_attributes(operation, model, base_url)
        name = f"{operation} {model}" if isinstance(model, str) else operation
        self.span = tracing.get_tracer().start_span(name, kind=SpanKind.CLIENT, attributes=attrs)
        if isinstance(kwargs.get("user"), str):  # set after start: it outranks context()'s user
            self.span.set_attribute("user.id", kwargs["user"])
        self.started = time.monotonic()
        self.ended = False
        self.stream = _StreamState()

    def _request_attributes(
        self, operation: str, model: Any, base_url: str
    ) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {
            "keel.span.kind": "llm" if operation == "chat" else "embedding",
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": "openai",
        }
        if isinstance(model, str):
            attrs["gen_ai.request.model"] = model
        for param, attr in _REQUEST_PARAMS.items():
            value = self.kwargs.get(param)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attrs[attr] = value
        stop = self.kwargs.get("stop")
        if isinstance(stop, str | list):
            attrs["gen_ai.request.stop_sequences"] = [stop] if isinstance(stop, str) else stop
        split = urlsplit(base_url)
        if split.hostname:
            attrs["server.address"] = split.hostname
            attrs["server.port"] = split.port or (443 if split.scheme == "https" else 80)
        if self.via_gateway:
            attrs["keel.via_gateway"] = True
        if self.capture:
            attrs.update(self._input_attributes(operation))
        return attrs

    def _input_attributes(self, operation: str) -> dict[str, AttributeValue]:
        # Only sequences: an iterator given as `messages` would be used up by reading it here.
        if operation == "chat":
            messages = self.kwargs.get("messages")
            if isinstance(messages, list | tuple):
                return {"gen_ai.input.messages": to_json(messages, self.limit)}
            return {}
        value = self.kwargs.get("input")
        if isinstance(value, str | list | tuple):
            return {"input.value": to_json(value, self.limit)}
        return {}

    def headers(self, given: Any) -> Any:
        """`extra_headers` plus traceparent (and Keel's metadata headers toward Keel)."""
        extra = dict(given or {})
        taken = {str(k).lower() for k in extra}
        ours: dict[str, str] = {}
        _PROPAGATOR.inject(ours, context=trace.set_span_in_context(self.span))
        if self.via_gateway:
            scope = current_scope()
            defaults = getattr(self.client, "default_headers", None) or {}
            taken |= {str(k).lower() for k in defaults}
            if scope is not None:
                ours.update(scope.gateway_headers())
            if "user" in self.kwargs:  # the call's own `user` names the customer
                ours.pop("x-keel-customer", None)
        return {**{k: v for k, v in ours.items() if k not in taken}, **extra}

    def fail(self, exc: BaseException) -> None:
        if self.ended:
            return
        self.ended = True
        status = getattr(exc, "status_code", None)
        if isinstance(status, int):
            self.span.set_attribute("http.response.status_code", status)
        self.span.set_attribute("error.type", type(exc).__name__)
        self.span.record_exception(exc)
        self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self._end_stream()
        self.span.end()

    def finish(self, result: Any) -> None:
        """End the span with a response (None for a stream: what the chunks said)."""
        if self.ended:
            return
        self.ended = True
        if self.span.is_recording():
            if result is not None:
                self.span.set_attributes(_response_attributes(result, self.capture, self.limit))
            self._end_stream()
        self.span.end()

    def chunk(self, chunk: Any) -> None:
        if not self.ended:
            self.stream.add(chunk, self.started)

    def _end_stream(self) -> None:
        if self.stream.chunks and self.span.is_recording():
            self.span.set_attributes(self.stream.attributes(self.capture, self.limit))


class _StreamState:
    """What the chunks of a streamed chat completion add up to."""

    def __init__(self) -> None:
        self.chunks = 0
        self.ttft_ms: float | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.usage: Any = None
        self.content: dict[int, list[str]] = {}
        self.chars = 0
        self.finish: dict[int, str] = {}
        self.tools: dict[int, dict[int, dict[str, str]]] = {}

    def add(self, chunk: Any, started: float) -> None:
        self.chunks += 1
        self.model = getattr(chunk, "model", None) or self.model
        self.response_id = getattr(chunk, "id", None) or self.response_id
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        for choice in getattr(chunk, "choices", None) or []:
            delta = getattr(choice, "delta", None)
            text = getattr(delta, "content", None)
            calls = getattr(delta, "tool_calls", None)
            if self.ttft_ms is None and (text or calls):
                self.ttft_ms = round((time.monotonic() - started) * 1000, 3)
            if text:
                self.chars += len(text)
                self.content.setdefault(choice.index, []).append(text)
            for call in calls or []:
                self._add_tool_delta(choice.index, call)
            if getattr(choice, "finish_reason", None):
                self.finish[choice.index] = choice.finish_reason

    def _add_tool_delta(self, choice: int, delta: Any) -> None:
        slot = self.tools.setdefault(choice, {}).setdefault(
            delta.index, {"id": "", "name": "", "arguments": ""}
        )
        slot["id"] = getattr(delta, "id", None) or slot["id"]
        function = getattr(delta, "function", None)
        slot["name"] += getattr(function, "name", None) or ""
        slot["arguments"] += getattr(function, "arguments", None) or ""

    def attributes(self, capture: bool, limit: int) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {}
        if self.ttft_ms is not None:
            attrs["keel.ttft_ms"] = self.ttft_ms
        if self.model:
            attrs["gen_ai.response.model"] = self.model
        if self.response_id:
            attrs["gen_ai.response.id"] = self.response_id
        if self.finish:
            attrs["gen_ai.response.finish_reasons"] = [self.finish[i] for i in sorted(self.finish)]
        if self.usage is not None:
            attrs.update(_usage_attributes(self.usage))
        if capture:
            attrs["gen_ai.output.messages"] = to_json(self._messages(limit), limit)
        return attrs

    def _messages(self, limit: int) -> list[dict[str, Any]]:
        out = []
        for index in sorted(set(self.content) | set(self.tools) | set(self.finish)):
            message: dict[str, Any] = {"role": "assistant"}
            message["content"] = truncate("".join(self.content.get(index, [])), limit)
            if index in self.tools:
                message["tool_calls"] = [
                    {"id": t["id"], "type": "function",
                     "function": {"name": t["name"], "arguments": t["arguments"]}}
                    for _, t in sorted(self.tools[index].items())
                ]  # fmt: skip
            message["finish_reason"] = self.finish.get(index)
            out.append(message)
        return out


def _response_attributes(result: Any, capture: bool, limit: int) -> dict[str, AttributeValue]:
    """GenAI attributes of a ChatCompletion or CreateEmbeddingResponse (others: none)."""
    attrs: dict[str, AttributeValue] = {}
    model = getattr(result, "model", None)
    if isinstance(model, str):
        attrs["gen_ai.response.model"] = model
    response_id = getattr(result, "id", None)
    if isinstance(response_id, str):
        attrs["gen_ai.response.id"] = response_id
    usage = getattr(result, "usage", None)
    if usage is not None:
        attrs.update(_usage_attributes(usage))
    choices = getattr(result, "choices", None)
    if isinstance(choices, list) and choices:
        reasons = [str(getattr(c, "finish_reason", "") or "") for c in choices]
        attrs["gen_ai.response.finish_reasons"] = reasons
        if capture:
            messages = [_choice_message(c) for c in choices]
            attrs["gen_ai.output.messages"] = to_json(messages, limit)
    data = getattr(result, "data", None)
    if isinstance(data, list) and data and isinstance(getattr(data[0], "embedding", None), list):
        attrs["gen_ai.embeddings.dimension.count"] = len(data[0].embedding)
    return attrs


def _choice_message(choice: Any) -> dict[str, Any]:
    message = jsonable(getattr(choice, "message", None))
    if isinstance(message, dict):
        message = {k: v for k, v in message.items() if v is not None}
        message["finish_reason"] = getattr(choice, "finish_reason", None)
        return message
    return {"finish_reason": getattr(choice, "finish_reason", None)}


def _usage_attributes(usage: Any) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {}
    pairs = (
        ("gen_ai.usage.input_tokens", getattr(usage, "prompt_tokens", None)),
        ("gen_ai.usage.output_tokens", getattr(usage, "completion_tokens", None)),
        (
            "gen_ai.usage.cache_read.input_tokens",
            getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", None),
        ),
        (
            "gen_ai.usage.reasoning.output_tokens",
            getattr(getattr(usage, "completion_tokens_details", None), "reasoning_tokens", None),
        ),
    )
    for name, value in pairs:
        if isinstance(value, int):
            attrs[name] = value
    return attrs
