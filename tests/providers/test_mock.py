"""The offline mock provider: echo, streams, tools, json mode, knobs and embeddings."""

from __future__ import annotations

import base64
import math
import struct
import time
from typing import Any

import orjson
import pytest

from keel.config import ConfigError, ProviderConfig
from keel.providers.base import CallContext, ChatStream, Provider, UpstreamError, Usage
from keel.providers.client import Timeouts, UpstreamClient
from keel.providers.mock import DEFAULT_CONFIG, MockProvider, count_tokens, register
from keel.providers.registry import ProviderRegistry
from tests import fakes

client_session = fakes.client_session

HELLO = {
    "model": "echo",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there world"},
    ],
}


@pytest.fixture
def mock() -> Provider:
    return MockProvider(DEFAULT_CONFIG)


def make_ctx(session: UpstreamClient, **headers: str) -> CallContext:
    return CallContext(
        session=session,
        timeout=Timeouts(total=10),
        request_id="req-1",
        client_headers={k.replace("_", "-"): v for k, v in headers.items()},
    )


@pytest.fixture
def ctx(client_session: UpstreamClient) -> CallContext:
    return make_ctx(client_session)


async def frames_of(stream: ChatStream) -> list[dict[str, Any]]:
    frames = [frame async for frame in stream]
    assert frames[-1] == b"data: [DONE]\n\n"
    return [orjson.loads(f.removeprefix(b"data: ")) for f in frames[:-1]]


def test_registered_as_mock_and_free() -> None:
    registry = ProviderRegistry()
    register(registry)
    provider = registry.create(DEFAULT_CONFIG)
    assert isinstance(provider, MockProvider) and isinstance(provider, Provider)
    assert provider.price_provider_id() == "mock"
    assert (count_tokens("  two\nwords "), count_tokens("")) == (2, 0)


@pytest.mark.parametrize(
    "options",
    [{"latency_ms": "soon"}, {"failure_rate": 2}, {"chunk_delay_ms": -1}],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        MockProvider(ProviderConfig("m", "mock", options=options))


async def test_echo_answers_a_whole_chat_completion(mock: Provider, ctx: CallContext) -> None:
    result = await mock.chat(dict(HELLO), ctx)

    message = {"role": "assistant", "content": "hello there world"}
    body = orjson.loads(result.body)
    assert isinstance(body.pop("created"), int)
    assert body == {
        "id": "chatcmpl-mock-req-1",
        "object": "chat.completion",
        "model": "echo",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 3,
            "total_tokens": 8,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
    assert result.usage == Usage(
        input_tokens=5, output_tokens=3, cached_tokens=0, reasoning_tokens=0
    )
    assert (result.served_model, result.output_text) == ("echo", "hello there world")


async def test_content_parts_and_n(mock: Provider, ctx: CallContext) -> None:
    parts = [
        {"type": "text", "text": "look at"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "this"},
    ]
    body = {"model": "echo", "messages": [{"role": "user", "content": parts}], "n": 3}
    result = await mock.chat(body, ctx)

    choices = orjson.loads(result.body)["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert {c["message"]["content"] for c in choices} == {"look at this"}
    assert result.usage == Usage(
        input_tokens=3, output_tokens=9, cached_tokens=0, reasoning_tokens=0
    )


async def test_tool_call(mock: Provider, ctx: CallContext) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    say = 'call get_weather {"city": "Paris"}'
    body = {"model": "echo", "messages": [{"role": "user", "content": say}], "tools": tools}
    result = await mock.chat(body, ctx)

    choice = orjson.loads(result.body)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_mock_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
    without_tools = await mock.chat({**body, "tools": []}, ctx)
    assert without_tools.output_text == say


async def test_json_mode(mock: Provider, ctx: CallContext) -> None:
    body = {**HELLO, "response_format": {"type": "json_object"}}
    result = await mock.chat(body, ctx)
    content = orjson.loads(result.body)["choices"][0]["message"]["content"]
    assert orjson.loads(content) == {"echo": "hello there world"}


async def test_stream_sends_a_chunk_per_word(mock: Provider, ctx: CallContext) -> None:
    stream = await mock.stream_chat({**HELLO, "stream": True}, ctx)
    chunks = await frames_of(stream)

    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "hello "},
        {"content": "there "},
        {"content": "world"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-2:] == [None, "stop"]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert stream.usage == Usage(
        input_tokens=5, output_tokens=3, cached_tokens=0, reasoning_tokens=0
    )
    assert (stream.served_model, stream.output_text) == ("echo", "hello there world")


async def test_stream_usage_chunk_when_asked(mock: Provider, ctx: CallContext) -> None:
    body = {**HELLO, "stream": True, "stream_options": {"include_usage": True}}
    chunks = await frames_of(await mock.stream_chat(body, ctx))
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 8


async def test_stream_tool_call(mock: Provider, ctx: CallContext) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    body = {"model": "echo", "messages": [{"role": "user", "content": "call f"}], "tools": tools}
    chunks = await frames_of(await mock.stream_chat({**body, "stream": True}, ctx))
    (call,) = chunks[1]["choices"][0]["delta"]["tool_calls"]
    assert (call["index"], call["function"]) == (0, {"name": "f", "arguments": "{}"})
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_aclose_ends_the_stream(mock: Provider, ctx: CallContext) -> None:
    stream = await mock.stream_chat({**HELLO, "stream": True}, ctx)
    await anext(aiter(stream))
    await stream.aclose()
    assert [frame async for frame in stream] == []


@pytest.mark.parametrize(
    ("fail", "status", "retry_after"),
    [("429", 429, 1.0), ("500", 502, None), ("timeout", 504, None), ("midstream", 502, None)],
)
async def test_fail_header(
    mock: Provider,
    client_session: UpstreamClient,
    fail: str,
    status: int,
    retry_after: float | None,
) -> None:
    ctx = make_ctx(client_session, x_mock_fail=fail)
    with pytest.raises(UpstreamError) as caught:
        await mock.chat(dict(HELLO), ctx)
    assert (caught.value.status, caught.value.retry_after) == (status, retry_after)
    if fail != "midstream":  # a stream fails before it starts
        with pytest.raises(UpstreamError):
            await mock.stream_chat({**HELLO, "stream": True}, ctx)


async def test_midstream_failure_after_half_the_words(
    mock: Provider, client_session: UpstreamClient
) -> None:
    messages = [{"role": "user", "content": "one two three four"}]
    ctx = make_ctx(client_session, x_mock_fail="midstream")
    stream = await mock.stream_chat({"model": "echo", "messages": messages, "stream": True}, ctx)
    received = []
    with pytest.raises(UpstreamError) as caught:
        async for frame in stream:
            received.append(frame)
    assert caught.value.status == 502
    assert len(received) == 3  # role, "one ", "two "
    assert stream.output_text == "one two "
    assert stream.usage is not None


async def test_bad_knob_values(mock: Provider, client_session: UpstreamClient) -> None:
    for headers in ({"x_mock_fail": "sometimes"}, {"x_mock_latency_ms": "soon"}):
        with pytest.raises(UpstreamError) as caught:
            await mock.chat(dict(HELLO), make_ctx(client_session, **headers))
        assert caught.value.status == 400


async def test_latency_and_chunk_delay_knobs(
    mock: Provider, client_session: UpstreamClient
) -> None:
    ctx = make_ctx(client_session, x_mock_latency_ms="50", x_mock_chunk_delay_ms="20")
    started = time.monotonic()
    stream = await mock.stream_chat({**HELLO, "stream": True}, ctx)
    answered = time.monotonic()
    await frames_of(stream)
    finished = time.monotonic()
    assert answered - started >= 0.05
    assert finished - answered >= 4 * 0.02  # 4 delays between the 5 chunks


async def test_latency_option(client_session: UpstreamClient) -> None:
    slow = MockProvider(ProviderConfig("m", "mock", options={"latency_ms": 30}))
    started = time.monotonic()
    await slow.chat(dict(HELLO), make_ctx(client_session))
    assert time.monotonic() - started >= 0.03


async def test_failure_rate_is_seeded(ctx: CallContext) -> None:
    async def outcomes(seed: int) -> list[bool]:
        config = ProviderConfig("m", "mock", options={"failure_rate": 0.5, "seed": seed})
        provider, out = MockProvider(config), []
        for _ in range(20):
            try:
                await provider.chat(dict(HELLO), ctx)
                out.append(True)
            except UpstreamError as exc:
                assert exc.status == 502
                out.append(False)
        return out

    first = await outcomes(7)
    assert first == await outcomes(7)
    assert True in first and False in first


async def test_fail_model_and_unknown_model(mock: Provider, ctx: CallContext) -> None:
    with pytest.raises(UpstreamError) as caught:
        await mock.chat({**HELLO, "model": "fail"}, ctx)
    assert caught.value.status == 502
    with pytest.raises(UpstreamError) as caught:
        await mock.chat({**HELLO, "model": "gpt-7"}, ctx)  # no price book model either
    assert caught.value.status == 404
    assert "echo" in caught.value.message


async def test_embeddings_are_deterministic_unit_vectors(mock: Provider, ctx: CallContext) -> None:
    body = {"model": "embed", "input": ["one two", "three", "one two"]}
    first = await mock.embeddings(body, ctx)
    second = await mock.embeddings({**body, "model": "echo"}, ctx)

    data = orjson.loads(first.body)
    vectors = [d["embedding"] for d in data["data"]]
    assert [d["index"] for d in data["data"]] == [0, 1, 2]
    assert all(len(v) == 8 and math.isclose(math.hypot(*v), 1.0) for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert orjson.loads(second.body)["data"] == data["data"]
    assert data["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert (first.usage, first.served_model) == (Usage(input_tokens=5), "embed")


async def test_embeddings_base64(mock: Provider, ctx: CallContext) -> None:
    floats = await mock.embeddings({"model": "embed", "input": "hi"}, ctx)
    packed = await mock.embeddings(
        {"model": "embed", "input": "hi", "encoding_format": "base64"}, ctx
    )
    encoded = orjson.loads(packed.body)["data"][0]["embedding"]
    decoded = struct.unpack("<8f", base64.b64decode(encoded))
    expected = orjson.loads(floats.body)["data"][0]["embedding"]
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(decoded, expected, strict=True))


async def test_embeddings_need_input(mock: Provider, ctx: CallContext) -> None:
    with pytest.raises(UpstreamError) as caught:
        await mock.embeddings({"model": "embed"}, ctx)
    assert caught.value.status == 400
