"""`@observe`: a span around each call of a function, with its inputs, output and errors.

```python
@observe                                 # a "chain" span named after the function
def answer(question: str) -> str: ...

@observe(name="search", kind="retrieval", capture_output=False)
async def search(query: str, k: int = 5) -> list[Doc]: ...
```

Works on plain and async functions, generators and async generators (their span stays open
until the generator is exhausted or closed, and its output is the items it yielded, capped).
Spans nest through OpenTelemetry's context, so a function called inside another observed one,
or an OpenAI call inside it, is its child. An exception is recorded (status ERROR and an
`exception` event) and re-raised unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, ParamSpec, Protocol, TypeVar, cast, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from keel.records.span import SPAN_KINDS
from keel.sdk import tracing
from keel.sdk.payload import DEFAULT_LIMIT, to_json

__all__ = ["observe"]

P = ParamSpec("P")
R = TypeVar("R")

_MAX_ITEMS = 1000  # items of a generator's output kept for the span


class Decorator(Protocol):
    def __call__(self, func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def observe(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def observe(
    *,
    name: str | None = None,
    kind: str = "chain",
    capture_input: bool = True,
    capture_output: bool = True,
) -> Decorator: ...


def observe(
    func: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    kind: str = "chain",
    capture_input: bool = True,
    capture_output: bool = True,
) -> Callable[P, R] | Decorator:
    """Trace each call of the function. `kind` is one of Keel's span kinds (docs/sdk.md)."""
    if kind not in SPAN_KINDS:
        raise ValueError(f"unknown span kind {kind!r}; known: {sorted(SPAN_KINDS)}")
    decorate = _decorator(name, kind, capture_input, capture_output)
    return decorate(func) if func is not None else decorate


def _decorator(name: str | None, kind: str, capture_input: bool, capture_output: bool) -> Decorator:
    def decorate(fn: Callable[P, R], /) -> Callable[P, R]:
        spec = _Spec(fn, name or fn.__qualname__, kind, capture_input, capture_output)
        if inspect.isasyncgenfunction(fn):
            wrapper: Callable[..., Any] = _async_generator_wrapper(spec)
        elif inspect.isgeneratorfunction(fn):
            wrapper = _generator_wrapper(spec)
        elif inspect.iscoroutinefunction(fn):
            wrapper = _coroutine_wrapper(spec)
        else:
            wrapper = _function_wrapper(spec)
        return cast(Callable[P, R], functools.wraps(fn)(wrapper))

    return decorate


class _Spec:
    """What one decorated function needs at each call."""

    def __init__(
        self, fn: Callable[..., Any], name: str, kind: str, capture_in: bool, capture_out: bool
    ) -> None:
        self.fn = fn
        self.name = name
        self.kind = kind
        self.capture_in = capture_in
        self.capture_out = capture_out
        qualified = f"{getattr(fn, '__module__', None) or '?'}.{fn.__qualname__}"
        self.attributes = {"keel.span.kind": kind, "code.function.name": qualified}
        try:
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins and C callables have none
            self.signature = None

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Span:
        span = tracing.get_tracer().start_span(self.name, attributes=self.attributes)
        if self.capture_in and span.is_recording() and _capture():
            text = to_json(self.inputs(args, kwargs), _limit())
            span.set_attributes({"input.value": text, "input.mime_type": "application/json"})
        return span

    def inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The bound arguments by parameter name, without `self`/`cls`."""
        if self.signature is None:
            return {"args": args, "kwargs": kwargs}
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError:  # the call itself will raise the same error
            return {"args": args, "kwargs": kwargs}
        params = list(self.signature.parameters)
        skip = params[0] if params and params[0] in ("self", "cls") else None
        return {k: v for k, v in bound.arguments.items() if k != skip}

    def finish(self, span: Span, output: Any = None, error: BaseException | None = None) -> None:
        if span.is_recording():
            if error is not None:
                _record_error(span, error)
            elif self.capture_out and _capture() and output is not None:
                text = to_json(output, _limit())
                span.set_attribute("output.value", text)
                mime = "text/plain" if isinstance(output, str) else "application/json"
                span.set_attribute("output.mime_type", mime)
        span.end()


def _capture() -> bool:
    state = tracing.current()
    return state is None or state.settings.capture_content


def _limit() -> int:
    state = tracing.current()
    return state.settings.max_payload_chars if state is not None else DEFAULT_LIMIT


def _record_error(span: Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def _function_wrapper(spec: _Spec) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        span = spec.start(args, kwargs)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            result = spec.fn(*args, **kwargs)
        except BaseException as exc:
            spec.finish(span, error=exc)
            raise
        finally:
            otel_context.detach(token)
        spec.finish(span, result)
        return result

    return wrapper


def _coroutine_wrapper(spec: _Spec) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        span = spec.start(args, kwargs)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            result = await spec.fn(*args, **kwargs)
        except BaseException as exc:
            spec.finish(span, error=exc)
            raise
        finally:
            otel_context.detach(token)
        spec.finish(span, result)
        return result

    return wrapper


class _Items:
    """A generator's output as the span shows it: the items (text joined), at most 1,000."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.dropped = 0

    def add(self, item: Any) -> None:
        if len(self.items) < _MAX_ITEMS:
            self.items.append(item)
        else:
            self.dropped += 1

    def output(self) -> Any:
        if self.items and all(isinstance(i, str) for i in self.items) and not self.dropped:
            return "".join(self.items)
        if self.dropped:
            return [*self.items, f"… {self.dropped} more"]
        return self.items or None


def _generator_wrapper(spec: _Spec) -> Callable[..., Any]:
    # The span is made current only while the generator body runs: between items the caller's
    # code runs, and its spans are not children of the generator's.
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        span = spec.start(args, kwargs)
        ctx = trace.set_span_in_context(span)
        items = _Items()
        token = otel_context.attach(ctx)
        try:
            gen = spec.fn(*args, **kwargs)
        except BaseException as exc:
            spec.finish(span, error=exc)
            raise
        finally:
            otel_context.detach(token)
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            token = otel_context.attach(ctx)
            try:
                item = gen.throw(thrown) if thrown is not None else gen.send(sent)
            except StopIteration as stop:
                spec.finish(span, items.output())
                return stop.value
            except BaseException as exc:
                spec.finish(span, error=exc)
                raise
            finally:
                otel_context.detach(token)
            items.add(item)
            try:
                sent, thrown = (yield item), None
            except GeneratorExit:  # closed early (or garbage-collected): close the inner one
                _close(gen, ctx)
                spec.finish(span, items.output())
                raise
            except BaseException as exc:
                sent, thrown = None, exc

    return wrapper


def _close(gen: Generator[Any, Any, Any], ctx: otel_context.Context) -> None:
    token = otel_context.attach(ctx)
    try:
        gen.close()
    finally:
        otel_context.detach(token)


def _async_generator_wrapper(spec: _Spec) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        span = spec.start(args, kwargs)
        ctx = trace.set_span_in_context(span)
        items = _Items()
        gen = spec.fn(*args, **kwargs)  # creating an async generator runs none of its code
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            token = otel_context.attach(ctx)
            try:
                if thrown is not None:
                    item = await gen.athrow(thrown)
                else:
                    item = await gen.asend(sent)
            except StopAsyncIteration:
                spec.finish(span, items.output())
                return
            except BaseException as exc:
                spec.finish(span, error=exc)
                raise
            finally:
                otel_context.detach(token)
            items.add(item)
            try:
                sent, thrown = (yield item), None
            except GeneratorExit:
                token = otel_context.attach(ctx)
                try:
                    await gen.aclose()
                finally:
                    otel_context.detach(token)
                spec.finish(span, items.output())
                raise
            except BaseException as exc:
                sent, thrown = None, exc

    return wrapper
