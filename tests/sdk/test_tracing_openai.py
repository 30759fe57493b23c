"""The OpenAI instrumentation against a fake OpenAI server on loopback, through the real SDK.

The fake runs on its own loop thread so the sync client can call it from the test's thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import keel.sdk
from keel.sdk import context, observe
from keel.sdk.openai_instrument import is_instrumented
from tests.fakes.openai_upstream import FAKE_API_KEY, FakeOpenAI
from tests.sdk.tracing_helpers import finished, parsed, tree
from tests.servers import LoopThread

pytestmark = pytest.mark.timeout(60)

HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    loop = LoopThread()
    server = FakeOpenAI(api_key=FAKE_API_KEY)
    loop.run(server.start())
    try:
        yield server
    finally:
        loop.run(server.stop())
        loop.close()


@pytest.fixture
def traced(fake: FakeOpenAI) -> Iterator[InMemorySpanExporter]:
    """Instrumented, with Keel at some other address: the fake is a plain provider."""
    memory = InMemorySpanExporter()
    keel.sdk.init("http://127.0.0.1:9", exporter=memory, set_global=False)
    fake.requests.clear()
    try:
        yield memory
    finally:
        keel.sdk.shutdown()


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.base_url, api_key=FAKE_API_KEY, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
async def aclient(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=fake.base_url, api_key=FAKE_API_KEY, max_retries=0
    ) as sdk:
        yield sdk


def traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def llm_attrs(fake: FakeOpenAI, model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    port = int(fake.root_url.rsplit(":", 1)[1])
    return {
        "keel.span.kind": "llm",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model,
        "server.address": "127.0.0.1",
        "server.port": port,
        **extra,
    }


@observe
def ask(client: openai.OpenAI, text: str) -> str | None:
    answer = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": text}],
        temperature=0.5,
        max_tokens=20,
        stop=["\n"],
    )
    assert type(answer) is ChatCompletion  # the SDK's own type, unchanged
    return answer.choices[0].message.content


def test_chat_span_is_child_of_observed_function_and_parent_of_the_call(
    traced: InMemorySpanExporter, client: openai.OpenAI, fake: FakeOpenAI
) -> None:
    assert ask(client, "ping pong") == "ping pong"
    spans = finished(traced)
    records = tree(spans)
    assert records[1] == {
        "name": "chat gpt-4o-mini",
        "parent": "ask",
        "attributes": llm_attrs(
            fake,
            **{
                "gen_ai.request.temperature": 0.5,
                "gen_ai.request.max_tokens": 20,
                "gen_ai.request.stop_sequences": ["\n"],
                "gen_ai.input.messages": '[{"role": "user", "content": "ping pong"}]',
                "gen_ai.response.model": "gpt-4o-mini",
                "gen_ai.response.id": records[1]["attributes"]["gen_ai.response.id"],
                "gen_ai.usage.input_tokens": 2,
                "gen_ai.usage.output_tokens": 2,
                "gen_ai.usage.cache_read.input_tokens": 0,
                "gen_ai.usage.reasoning.output_tokens": 0,
                "gen_ai.response.finish_reasons": ["stop"],
                "gen_ai.output.messages": '[{"content": "ping pong", "role": "assistant", '
                '"finish_reason": "stop"}]',
            },
        ),
        "status": "UNSET",
    }
    assert records[0]["name"] == "ask"
    (request,) = fake.requests
    assert request.headers["traceparent"] == traceparent(spans[1])
    assert not any(h.startswith("x-keel-") for h in request.headers)  # not Keel: no metadata


def test_reasoning_and_cached_tokens(traced: InMemorySpanExporter, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="o3-mini-reasoning", messages=HELLO)
    (span,) = finished(traced)
    usage = {k: v for k, v in (span.attributes or {}).items() if k.startswith("gen_ai.usage.")}
    assert usage == {
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.cache_read.input_tokens": 3,
        "gen_ai.usage.reasoning.output_tokens": 5,
    }


def test_stream_is_the_sdk_stream_and_its_span_ends_when_consumed(
    traced: InMemorySpanExporter, client: openai.OpenAI, fake: FakeOpenAI
) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert type(stream) is openai.Stream
    assert finished(traced) == []  # open until the stream is read
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "hello there"
    (span,) = finished(traced)
    attrs = dict(span.attributes or {})
    assert 0 < attrs.pop("keel.ttft_ms") < 5000  # type: ignore[operator]
    assert span.name == "chat gpt-4o-mini"
    assert attrs == llm_attrs(
        fake,
        **{
            "gen_ai.input.messages": json.dumps(HELLO),
            "gen_ai.response.model": "gpt-4o-mini",
            "gen_ai.response.id": attrs["gen_ai.response.id"],
            "gen_ai.response.finish_reasons": ("stop",),
            "gen_ai.usage.input_tokens": 4,
            "gen_ai.usage.output_tokens": 2,
            "gen_ai.usage.cache_read.input_tokens": 0,
            "gen_ai.usage.reasoning.output_tokens": 0,
            "gen_ai.output.messages": '[{"role": "assistant", "content": "hello there", '
            '"finish_reason": "stop"}]',
        },
    )
    assert fake.requests[-1].headers["traceparent"] == traceparent(span)


def test_stream_closed_early_ends_span(traced: InMemorySpanExporter, client: openai.OpenAI) -> None:
    with client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "a b c d e"}], stream=True
    ) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
    (span,) = finished(traced)
    attrs = span.attributes or {}
    assert parsed(attrs["gen_ai.output.messages"]) == [
        {"role": "assistant", "content": "a ", "finish_reason": None}
    ]
    assert "gen_ai.usage.input_tokens" not in attrs  # the stream never got that far
    assert span.status.status_code.name == "UNSET"


def test_stream_error_midway(
    traced: InMemorySpanExporter, client: openai.OpenAI, fake: FakeOpenAI
) -> None:
    fake.fail_next("stream_error_mid")
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "a b c d"}], stream=True
    )
    with pytest.raises(openai.APIError, match="error while streaming"):
        list(stream)
    (span,) = finished(traced)
    assert span.status.status_code.name == "ERROR"
    assert (span.attributes or {})["error.type"] == "APIError"


def test_tool_call_stream(traced: InMemorySpanExporter, client: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": 'call lookup {"id": 7}'}],
        tools=tools,
        stream=True,
    )
    list(stream)
    (span,) = finished(traced)
    (message,) = parsed((span.attributes or {})["gen_ai.output.messages"])
    call = message["tool_calls"][0]
    assert call["function"] == {"name": "lookup", "arguments": '{"id": 7}'}
    assert message["finish_reason"] == "tool_calls"
    assert "keel.ttft_ms" in (span.attributes or {})


def test_http_error_is_recorded_and_raised(
    traced: InMemorySpanExporter, client: openai.OpenAI, fake: FakeOpenAI
) -> None:
    fake.fail_next("http_400")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    (span,) = finished(traced)
    assert span.status.status_code.name == "ERROR"
    attrs = span.attributes or {}
    assert (attrs["http.response.status_code"], attrs["error.type"]) == (400, "BadRequestError")
    assert [e.name for e in span.events] == ["exception"]


def test_embeddings(traced: InMemorySpanExporter, client: openai.OpenAI, fake: FakeOpenAI) -> None:
    result = client.embeddings.create(model="text-embedding-3-small", input=["one two", "three"])
    assert type(result) is CreateEmbeddingResponse
    (span,) = finished(traced)
    assert span.name == "embeddings text-embedding-3-small"
    assert dict(span.attributes or {}) == {
        **llm_attrs(fake, "text-embedding-3-small"),
        "keel.span.kind": "embedding",
        "gen_ai.operation.name": "embeddings",
        "input.value": '["one two", "three"]',
        "gen_ai.response.model": "text-embedding-3-small",
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.embeddings.dimension.count": 8,
    }


async def test_async_chat_stream_and_embeddings(
    traced: InMemorySpanExporter, aclient: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    @observe(name="work")
    async def work() -> str:
        answer = await aclient.chat.completions.create(model="gpt-4o", messages=HELLO)
        assert type(answer) is ChatCompletion
        stream = await aclient.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
        assert type(stream) is openai.AsyncStream
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await aclient.embeddings.create(model="text-embedding-3-small", input="x")
        return "".join(parts)

    assert await work() == "hello there"
    rows = [(s["name"], s["parent"]) for s in tree(finished(traced))]
    assert rows == [
        ("work", None),
        ("chat gpt-4o", "work"),
        ("chat gpt-4o", "work"),
        ("embeddings text-embedding-3-small", "work"),
    ]
    spans = finished(traced)
    assert [r.headers["traceparent"] for r in fake.requests] == [traceparent(s) for s in spans[1:]]
    assert "keel.ttft_ms" in (spans[2].attributes or {})


async def test_async_stream_closed_early(
    traced: InMemorySpanExporter, aclient: openai.AsyncOpenAI
) -> None:
    stream = await aclient.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
    async with stream:
        await stream.__anext__()
    await asyncio.sleep(0)
    (span,) = finished(traced)
    assert span.end_time is not None


def test_stream_helper_is_traced(traced: InMemorySpanExporter, client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="gpt-4o-mini", messages=HELLO) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "hello there"
    (span,) = finished(traced)
    assert parsed((span.attributes or {})["gen_ai.output.messages"]) == [
        {"role": "assistant", "content": "hello there", "finish_reason": "stop"}
    ]


def test_raw_response_still_works(traced: InMemorySpanExporter, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
    assert raw.parse().choices[0].message.content == "hello there"
    (span,) = finished(traced)
    assert (span.attributes or {})["gen_ai.request.model"] == "gpt-4o-mini"


def test_calls_to_keel_are_marked_and_carry_keel_metadata(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    """With Keel's URL pointing at the fake, the fake sees what Keel's gateway would."""
    memory = InMemorySpanExporter()
    keel.sdk.init(fake.root_url, exporter=memory, set_global=False)
    fake.requests.clear()
    try:
        with context(session_id="s-9", user_id="acme", pipeline="support", tags=["beta", "eu"]):
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=HELLO,
                user="globex",  # the call's own customer wins
                extra_headers={"x-keel-pipeline": "explicit", "x-other": "kept"},
            )
        spans = finished(memory)
    finally:
        keel.sdk.shutdown()
    keel_headers = [
        {k: v for k, v in r.headers.items() if k.startswith("x-") and "stainless" not in k}
        for r in fake.requests
    ]
    assert keel_headers == [
        {"x-keel-customer": "acme", "x-keel-pipeline": "support", "x-keel-tags": "beta,eu"},
        {"x-keel-pipeline": "explicit", "x-keel-tags": "beta,eu", "x-other": "kept"},
    ]
    who = [
        {k: (s.attributes or {}).get(k) for k in ("keel.via_gateway", "user.id", "session.id")}
        for s in spans
    ]
    assert who == [
        {"keel.via_gateway": True, "user.id": "acme", "session.id": "s-9"},
        {"keel.via_gateway": True, "user.id": "globex", "session.id": "s-9"},
    ]


def test_uninstrument_restores_the_sdk(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    from openai.resources.chat.completions.completions import Completions

    original = Completions.create
    memory = InMemorySpanExporter()
    keel.sdk.init(exporter=memory, set_global=False)
    assert is_instrumented() and Completions.create is not original
    assert keel.sdk.instrument_openai() is True  # already on: no double wrapping
    assert Completions.create.__wrapped__ is original  # type: ignore[attr-defined]
    keel.sdk.shutdown()
    assert not is_instrumented() and Completions.create is original
    fake.requests.clear()
    client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert "traceparent" not in fake.requests[0].headers
    assert memory.get_finished_spans() == ()


def test_capture_content_off(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    memory = InMemorySpanExporter()
    keel.sdk.init(exporter=memory, set_global=False, capture_content=False)
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        (span,) = finished(memory)
    finally:
        keel.sdk.shutdown()
    keys = set(span.attributes or {})
    assert "gen_ai.usage.input_tokens" in keys
    assert not keys & {"gen_ai.input.messages", "gen_ai.output.messages"}
