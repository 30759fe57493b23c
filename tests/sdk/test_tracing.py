"""keel.sdk tracing in process: @observe on every kind of function, context(), init() and friends.

Spans go to an InMemorySpanExporter through keel.sdk.init(exporter=...), the same provider,
processors and batch exporter an application gets, minus the network.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import keel.sdk
from keel.records.span import SPAN_KINDS
from keel.sdk import context, observe
from tests.sdk.tracing_helpers import finished, parsed, tree

JSON = "application/json"


class Boom(Exception):
    pass


BOOM = Boom("bad input")


@observe
def add(a: int, b: int = 2) -> int:
    return a + b


@observe(name="pipeline", kind="agent")
def run(question: str) -> dict[str, Any]:
    return {"sum": add(1) + add(2, b=5), "q": question}


def io(inputs: str, output: str, mime: str = JSON) -> dict[str, Any]:
    return {
        "input.value": inputs,
        "input.mime_type": JSON,
        "output.value": output,
        "output.mime_type": mime,
    }


def chain(**attrs: Any) -> dict[str, Any]:
    return {"keel.span.kind": "chain", **attrs}


def test_sync_spans_nest_with_inputs_and_outputs(exporter: InMemorySpanExporter) -> None:
    assert run("why?") == {"sum": 10, "q": "why?"}
    assert tree(finished(exporter)) == [
        {
            "name": "pipeline",
            "parent": None,
            "attributes": {
                "keel.span.kind": "agent",
                **io('{"question": "why?"}', '{"sum": 10, "q": "why?"}'),
            },
            "status": "UNSET",
        },
        {"name": "add", "parent": "pipeline", "attributes": chain(**io('{"a": 1}', "3")),
         "status": "UNSET"},
        {"name": "add", "parent": "pipeline", "attributes": chain(**io('{"a": 2, "b": 5}', "7")),
         "status": "UNSET"},
    ]  # fmt: skip


@observe
async def double(i: int) -> int:
    await asyncio.sleep(0.01 * (3 - i))  # finish out of order
    return add(i, b=i)


@observe
async def fan_out(n: int) -> list[int]:
    return list(await asyncio.gather(*(double(i) for i in range(n))))


async def test_async_spans_nest_across_concurrent_tasks(exporter: InMemorySpanExporter) -> None:
    assert await fan_out(3) == [0, 2, 4]
    spans = finished(exporter)
    by_id = {s.context.span_id: s for s in spans}
    parents = sorted(
        (s.name, by_id[s.parent.span_id].name if s.parent else None, s.attributes["input.value"])
        for s in spans
    )
    assert parents == [
        ("add", "double", '{"a": 0, "b": 0}'),
        ("add", "double", '{"a": 1, "b": 1}'),
        ("add", "double", '{"a": 2, "b": 2}'),
        ("double", "fan_out", '{"i": 0}'),
        ("double", "fan_out", '{"i": 1}'),
        ("double", "fan_out", '{"i": 2}'),
        ("fan_out", None, '{"n": 3}'),
    ]
    # each add is the child of the double that called it, not of a sibling
    for span in spans:
        if span.name == "add":
            parent = by_id[span.parent.span_id]  # type: ignore[union-attr]
            assert (
                parsed(parent.attributes["input.value"])["i"]
                == parsed(  # type: ignore[index]
                    span.attributes["input.value"]  # type: ignore[index]
                )["a"]
            )


@observe(kind="tool")
def words(text: str) -> Iterator[str]:
    for word in text.split():
        add(len(word))  # inside the generator: its child
        yield word + " "


@observe
def consume(text: str) -> list[str]:
    out = []
    for word in words(text):
        add(0)  # between items: the consumer's child, not the generator's
        out.append(word)
    return out


def test_generator_span_covers_iteration_and_collects_items(
    exporter: InMemorySpanExporter,
) -> None:
    assert consume("a bb") == ["a ", "bb "]
    assert tree(finished(exporter)) == [
        {"name": "consume", "parent": None,
         "attributes": chain(**io('{"text": "a bb"}', '["a ", "bb "]')), "status": "UNSET"},
        {"name": "words", "parent": "consume",
         "attributes": {"keel.span.kind": "tool", **io('{"text": "a bb"}', "a bb ", "text/plain")},
         "status": "UNSET"},
        {"name": "add", "parent": "words", "attributes": chain(**io('{"a": 1}', "3")),
         "status": "UNSET"},
        {"name": "add", "parent": "consume", "attributes": chain(**io('{"a": 0}', "2")),
         "status": "UNSET"},
        {"name": "add", "parent": "words", "attributes": chain(**io('{"a": 2}', "4")),
         "status": "UNSET"},
        {"name": "add", "parent": "consume", "attributes": chain(**io('{"a": 0}', "2")),
         "status": "UNSET"},
    ]  # fmt: skip


def test_generator_closed_early_ends_its_span(exporter: InMemorySpanExporter) -> None:
    gen = words("one two three")
    assert next(gen) == "one "
    assert [s.name for s in finished(exporter)] == ["add"]  # words is still open
    gen.close()
    spans = [s for s in finished(exporter) if s.name == "words"]
    assert len(spans) == 1
    assert spans[0].attributes["output.value"] == "one "  # type: ignore[index]
    assert spans[0].status.status_code.name == "UNSET"


@observe
def accumulate() -> Generator[int, str | None, list[str]]:
    received: list[str] = []
    while True:
        try:
            value = yield len(received)
        except KeyError:
            received.append("<thrown>")
            continue
        if value is None:
            return received
        received.append(value)


def test_generator_send_throw_and_return_value_pass_through(
    exporter: InMemorySpanExporter,
) -> None:
    gen = accumulate()
    assert next(gen) == 0
    assert gen.send("a") == 1
    assert gen.throw(KeyError("k")) == 2
    with pytest.raises(StopIteration) as stop:
        gen.send(None)
    assert stop.value.value == ["a", "<thrown>"]
    (span,) = finished(exporter)
    assert span.attributes["output.value"] == "[0, 1, 2]"  # type: ignore[index]


@observe
def fails(x: int) -> int:
    raise BOOM


@observe
def fails_inside() -> int:
    return fails(1) + 1


def test_errors_are_recorded_and_reraised_unchanged(exporter: InMemorySpanExporter) -> None:
    with pytest.raises(Boom) as info:
        fails_inside()
    assert info.value is BOOM
    error = {"status": "ERROR", "status_description": "Boom: bad input",
             "events": [{"name": "exception", "type": "tests.sdk.test_tracing.Boom"}]}  # fmt: skip
    assert tree(finished(exporter)) == [
        {"name": "fails_inside", "parent": None,
         "attributes": {"keel.span.kind": "chain", "input.value": "{}", "input.mime_type": JSON},
         **error},
        {"name": "fails", "parent": "fails_inside",
         "attributes": {"keel.span.kind": "chain", "input.value": '{"x": 1}',
                        "input.mime_type": JSON},
         **error},
    ]  # fmt: skip


@observe
def breaks_midway() -> Iterator[int]:
    yield 1
    raise BOOM


def test_generator_error_midway(exporter: InMemorySpanExporter) -> None:
    gen = breaks_midway()
    assert next(gen) == 1
    with pytest.raises(Boom) as info:
        next(gen)
    assert info.value is BOOM
    (span,) = finished(exporter)
    assert span.status.status_code.name == "ERROR"
    assert [e.name for e in span.events] == ["exception"]


@observe(kind="retrieval")
async def stream_docs(query: str) -> AsyncIterator[dict[str, str]]:
    for i in range(3):
        await asyncio.sleep(0)
        add(i)
        yield {"doc": f"{query}-{i}"}


@observe
async def async_consumer() -> list[str]:
    out = []
    async for doc in stream_docs("q"):
        out.append(doc["doc"])
    gen = stream_docs("early")
    out.append((await gen.__anext__())["doc"])
    await gen.aclose()
    return out


async def test_async_generators(exporter: InMemorySpanExporter) -> None:
    assert await async_consumer() == ["q-0", "q-1", "q-2", "early-0"]
    rows = [
        (s["name"], s["parent"], s["attributes"].get("output.value"))
        for s in tree(finished(exporter))
    ]
    assert rows == [
        ("async_consumer", None, '["q-0", "q-1", "q-2", "early-0"]'),
        ("stream_docs", "async_consumer", '[{"doc": "q-0"}, {"doc": "q-1"}, {"doc": "q-2"}]'),
        ("add", "stream_docs", "2"),
        ("add", "stream_docs", "3"),
        ("add", "stream_docs", "4"),
        ("stream_docs", "async_consumer", '[{"doc": "early-0"}]'),
        ("add", "stream_docs", "2"),
    ]


@observe
async def async_fails() -> None:
    await asyncio.sleep(0)
    raise BOOM


async def test_async_error(exporter: InMemorySpanExporter) -> None:
    with pytest.raises(Boom) as info:
        await async_fails()
    assert info.value is BOOM
    (span,) = finished(exporter)
    assert (span.status.status_code.name, span.status.description) == ("ERROR", "Boom: bad input")


class Agent:
    def __init__(self, name: str) -> None:
        self.name = name

    @observe(kind="agent")
    def act(self, task: str, *extra: str, **options: int) -> str:
        return f"{self.name}:{task}"

    @classmethod
    @observe
    def build(cls, name: str) -> Agent:
        return cls(name)


def test_methods_skip_self_and_keep_varargs(exporter: InMemorySpanExporter) -> None:
    agent = Agent.build("bond")
    assert agent.act("spy", "quietly", retries=2) == "bond:spy"
    raw = finished(exporter)
    assert [s.attributes["code.function.name"] for s in raw] == [  # type: ignore[index]
        "tests.sdk.test_tracing.Agent.build",
        "tests.sdk.test_tracing.Agent.act",
    ]
    spans = tree(raw, one_trace=False)
    assert [(s["name"], s["attributes"]["input.value"]) for s in spans] == [
        ("Agent.build", '{"name": "bond"}'),
        ("Agent.act", '{"task": "spy", "extra": ["quietly"], "options": {"retries": 2}}'),
    ]
    assert spans[0]["attributes"]["output.value"].startswith('"<tests.sdk.test_tracing.Agent')


@observe(capture_input=False, capture_output=False)
def secret(password: str) -> str:
    return password[::-1]


def test_capture_flags(exporter: InMemorySpanExporter) -> None:
    assert secret("hunter2") == "2retnuh"
    assert tree(finished(exporter)) == [
        {"name": "secret", "parent": None, "attributes": {"keel.span.kind": "chain"},
         "status": "UNSET"}
    ]  # fmt: skip


def test_capture_content_off_and_payload_cap() -> None:
    memory = InMemorySpanExporter()
    keel.sdk.init(exporter=memory, capture_content=False, set_global=False)
    try:
        add(1)
        assert tree(finished(memory))[0]["attributes"] == {"keel.span.kind": "chain"}
    finally:
        keel.sdk.shutdown()
    memory = InMemorySpanExporter()  # shutdown() stopped the first one
    keel.sdk.init(exporter=memory, max_payload_chars=40, set_global=False)
    try:
        assert secret("x") == "x"  # capture flags off: nothing to cut
        words_span = list(words("z" * 100))
        assert words_span == ["z" * 100 + " "]
        spans = tree(finished(memory), one_trace=False)
        (attrs,) = [s["attributes"] for s in spans if s["name"] == "words"]
        assert attrs["input.value"] == '{"text": "' + "z" * 30 + "…[truncated]"
        assert attrs["output.value"] == "z" * 40 + "…[truncated 61 chars]"
    finally:
        keel.sdk.shutdown()


def test_context_stamps_session_user_pipeline_tags(exporter: InMemorySpanExporter) -> None:
    with context(session_id="s1", user_id="u-1", pipeline="support", tags=["beta", "a,b"]):
        add(1)
        with context(tags=["eu", "beta"], pipeline="billing", metadata={"tier": "gold", "n": 3}):
            add(2)
        add(3)
    add(4)
    outer = {"session.id": "s1", "user.id": "u-1", "keel.pipeline": "support",
             "keel.tags": ["beta", "a b"]}  # fmt: skip
    inner = {**outer, "keel.pipeline": "billing", "keel.tags": ["beta", "a b", "eu"],
             "keel.metadata.tier": "gold", "keel.metadata.n": 3}  # fmt: skip
    expected = [outer, inner, outer, {}]
    got = [
        {k: v for k, v in s["attributes"].items() if not k.startswith(("input.", "output."))}
        for s in tree(finished(exporter), one_trace=False)
    ]
    assert got == [{"keel.span.kind": "chain", **e} for e in expected]


async def test_context_follows_asyncio_tasks(exporter: InMemorySpanExporter) -> None:
    async def worker(i: int) -> None:
        await asyncio.sleep(0)
        add(i)

    with context(session_id="chat-42", user_id="acme"):
        task = asyncio.create_task(worker(1))
    await task  # created inside the block: it keeps the block's context
    await worker(2)  # outside the block
    sessions = [s.attributes.get("session.id") for s in finished(exporter)]
    assert sessions == ["chat-42", None]


def test_decorated_functions_look_like_the_originals() -> None:
    assert inspect.signature(add) == inspect.signature(add.__wrapped__)  # type: ignore[attr-defined]
    assert (add.__name__, add.__doc__) == ("add", None)
    assert inspect.iscoroutinefunction(double)
    assert inspect.isgeneratorfunction(words)
    assert inspect.isasyncgenfunction(stream_docs)


def test_observe_validates_kind() -> None:
    with pytest.raises(ValueError, match="unknown span kind 'pipeline'"):
        observe(kind="pipeline")
    for kind in SPAN_KINDS:
        observe(kind=kind)


class CountingRepr:
    calls = 0

    def __repr__(self) -> str:
        CountingRepr.calls += 1
        return "CountingRepr()"


def test_observe_before_init_costs_nothing_and_still_runs() -> None:
    assert keel.sdk.tracing.current() is None
    CountingRepr.calls = 0

    @observe
    def ident(x: object) -> object:
        return x

    value = CountingRepr()
    assert ident(value) is value
    assert list(words("a b")) == ["a ", "b "]
    assert CountingRepr.calls == 0  # a no-op span is not recording: nothing serialised
    assert keel.sdk.flush() is True


def test_init_is_idempotent(caplog: pytest.LogCaptureFixture) -> None:
    memory = InMemorySpanExporter()
    first = keel.sdk.init(exporter=memory, set_global=False)
    try:
        assert keel.sdk.init(exporter=memory, set_global=False) is first
        assert caplog.records == []
        with caplog.at_level(logging.WARNING, logger="keel.sdk"):
            assert keel.sdk.init("http://elsewhere:1", exporter=memory, set_global=False) is first
        assert [r.getMessage() for r in caplog.records] == [
            "keel.sdk.init() already ran; call shutdown() first to change settings"
        ]
        assert first.url == "http://127.0.0.1:4000"
    finally:
        keel.sdk.shutdown()
    assert keel.sdk.tracing.current() is None
    keel.sdk.shutdown()  # twice is fine


def test_init_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_URL", "http://keel.internal:4000/")
    monkeypatch.setenv("KEEL_API_KEY", "sk-keel-from-env")
    state = keel.sdk.init(exporter=InMemorySpanExporter(), set_global=False)
    try:
        assert (state.url, state.settings.api_key) == (
            "http://keel.internal:4000",
            "sk-keel-from-env",
        )
        assert "sk-keel-from-env" not in repr(state)
    finally:
        keel.sdk.shutdown()


def test_sample_rate() -> None:
    with pytest.raises(ValueError, match="sample_rate must be between 0 and 1"):
        keel.sdk.init(sample_rate=1.5)
    memory = InMemorySpanExporter()
    keel.sdk.init(exporter=memory, sample_rate=0.0, set_global=False)
    try:
        assert run("dropped") == {"sum": 10, "q": "dropped"}
        assert finished(memory) == []
    finally:
        keel.sdk.shutdown()


def test_shutdown_then_init_again() -> None:
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    keel.sdk.init(exporter=first, set_global=False)
    add(1)
    keel.sdk.shutdown()  # flushes
    assert [s.name for s in first.get_finished_spans()] == ["add"]
    add(2)  # no Keel tracer now: a no-op span
    keel.sdk.init(exporter=second, set_global=False)
    try:
        add(3)
        assert [s.attributes["input.value"] for s in finished(second)] == ['{"a": 3}']
        assert len(first.get_finished_spans()) == 1
    finally:
        keel.sdk.shutdown()
