"""The anthropic adapter against a fake Messages API on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from keel.config import ProviderConfig
from keel.providers.anthropic import AnthropicProvider, register
from keel.providers.anthropic_translate import to_messages_request
from keel.providers.base import CallContext, ChatStream, UpstreamError, Usage
from keel.providers.client import Timeouts, UpstreamClient
from keel.providers.registry import ProviderRegistry
from tests.fakes.anthropic_upstream import API_KEY, AnthropicUpstream

MODEL = "claude-test"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
async def fake() -> AsyncIterator[AnthropicUpstream]:
    server = AnthropicUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def ctx() -> AsyncIterator[CallContext]:
    session = UpstreamClient()
    try:
        yield CallContext(session, Timeouts(total=10), request_id="req-1")
    finally:
        await session.close()


def make_provider(fake: AnthropicUpstream, api_key: str = API_KEY) -> AnthropicProvider:
    return AnthropicProvider(
        ProviderConfig(name="claude", type="anthropic", base_url=fake.base_url, api_key=api_key)
    )


@pytest.fixture
def provider(fake: AnthropicUpstream) -> AnthropicProvider:
    return make_provider(fake)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def chat_body(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": list(messages), **extra}


async def collect(stream: ChatStream) -> list[Any]:
    out: list[Any] = []
    async for frame in stream:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        data = frame[6:-2]
        out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out


def deltas(chunks: list[Any]) -> list[Any]:
    return [c["choices"][0]["delta"] for c in chunks if c != "[DONE]" and c["choices"]]


# -- plain calls


async def test_plain_chat(provider: AnthropicProvider, fake: AnthropicUpstream, ctx: CallContext):
    result = await provider.chat(chat_body(user("Hello there")), ctx)

    body = orjson.loads(result.body)
    assert isinstance(body.pop("created"), int)
    assert body == {
        "id": "msg_fake0001",
        "object": "chat.completion",
        "model": "claude-test-20250101",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 2,
            "completion_tokens": 2,
            "total_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
    assert result.usage == Usage(
        input_tokens=2, output_tokens=2, cached_tokens=0, cache_write_tokens=0
    )
    assert result.served_model == "claude-test-20250101"
    assert result.output_text == "Hello there"
    [sent] = fake.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == API_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json == {
        "model": MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}],
        "max_tokens": 4096,
    }


async def test_multi_turn_with_system(
    provider: AnthropicProvider, fake: AnthropicUpstream, ctx: CallContext
):
    body = chat_body(
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        user("Hi"),
        {"role": "assistant", "content": "Hello!"},
        user("How are"),
        user("you?"),
        max_tokens=50,
        temperature=0.2,
        top_p=0.9,
        stop="STOP",
        user="u-42",
        seed=7,
        response_format={"type": "json_object"},
    )
    result = await provider.chat(body, ctx)

    assert fake.requests[0].json == {
        "model": MODEL,
        "system": "Be brief.\n\nAnswer in English.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "How are"}, {"type": "text", "text": "you?"}],
            },
        ],
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["STOP"],
        "metadata": {"user_id": "u-42"},
    }
    assert orjson.loads(result.body)["choices"][0]["message"]["content"] == "How are you?"


async def test_tools_round_trip(
    provider: AnthropicProvider, fake: AnthropicUpstream, ctx: CallContext
):
    ask = user('call get_weather {"city": "Paris"}')
    first = await provider.chat(chat_body(ask, tools=TOOLS, tool_choice="auto"), ctx)

    message = orjson.loads(first.body)["choices"][0]
    assert message == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": "Calling get_weather.",
            "tool_calls": [
                {
                    "id": "toolu_0001",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        "finish_reason": "tool_calls",
        "logprobs": None,
    }
    assert fake.requests[0].json["tools"] == [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "description": "Weather for a city",
        }
    ]
    assert fake.requests[0].json["tool_choice"] == {"type": "auto"}

    calls = message["message"]["tool_calls"] + [
        {"id": "toolu_x", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    ]
    follow = chat_body(
        ask,
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "toolu_0001", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_x", "content": [{"type": "text", "text": "rain"}]},
        tools=TOOLS,
    )
    second = await provider.chat(follow, ctx)

    assert fake.requests[1].json["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_0001",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_x", "name": "get_weather", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_0001", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_x",
                    "content": [{"type": "text", "text": "rain"}],
                },
            ],
        },
    ]
    assert second.output_text == "tool said: sunny rain"


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
    ],
)
def test_tool_choice(choice: Any, parallel: Any, expected: dict[str, Any]):
    body = chat_body(user("x"), tools=TOOLS, tool_choice=choice, parallel_tool_calls=parallel)
    assert to_messages_request(body, default_max_tokens=10)["tool_choice"] == expected


def test_images_and_cache_control_parts():
    parts = [
        {"type": "text", "text": "What is this?", "cache_control": {"type": "ephemeral"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    request = to_messages_request(
        chat_body({"role": "user", "content": parts}, max_completion_tokens=9),
        default_max_tokens=10,
    )
    assert request["max_tokens"] == 9
    assert request["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?", "cache_control": {"type": "ephemeral"}},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (chat_body(user("x"), n=2), "provider anthropic supports n=1 only"),
        (
            chat_body({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}),
            "provider anthropic does not accept content parts of type 'input_audio'",
        ),
    ],
)
async def test_requests_anthropic_cannot_serve(
    provider: AnthropicProvider, fake: AnthropicUpstream, ctx: CallContext, body: Any, message: str
):
    with pytest.raises(UpstreamError) as info:
        await provider.chat(body, ctx)
    assert (info.value.status, info.value.message) == (400, message)
    assert fake.requests == []


async def test_cache_usage(provider: AnthropicProvider, fake: AnthropicUpstream, ctx: CallContext):
    system = [
        {"type": "text", "text": "Long shared prefix", "cache_control": {"type": "ephemeral"}}
    ]
    body = chat_body({"role": "system", "content": system}, user("Hi"))
    result = await provider.chat(body, ctx)

    assert fake.requests[0].json["system"] == system
    # 4 uncached prompt words, and the fake reports 3 cache reads and 2 cache writes on top
    assert result.usage == Usage(
        input_tokens=9, output_tokens=1, cached_tokens=3, cache_write_tokens=2
    )
    assert orjson.loads(result.body)["usage"] == {
        "prompt_tokens": 9,
        "completion_tokens": 1,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 3},
    }


@pytest.mark.parametrize(
    ("text", "extra", "finish", "content"),
    [
        ("one two three", {"max_tokens": 2}, "length", "one two"),
        ("say it END and more", {"stop": ["END"]}, "stop", "say it "),
        ("refuse this", {}, "content_filter", ""),
        (
            'call get_weather {"city": "Oslo"}',
            {"tools": TOOLS},
            "tool_calls",
            "Calling get_weather.",
        ),
    ],
)
async def test_stop_reasons(
    provider: AnthropicProvider, ctx: CallContext, text: str, extra: Any, finish: str, content: str
):
    result = await provider.chat(chat_body(user(text), **extra), ctx)
    choice = orjson.loads(result.body)["choices"][0]
    assert (choice["finish_reason"], choice["message"]["content"]) == (finish, content)


async def test_thinking_blocks_stay_out_of_content(provider: AnthropicProvider, ctx: CallContext):
    result = await provider.chat({**chat_body(user("Hi")), "model": "claude-thinking"}, ctx)
    assert orjson.loads(result.body)["choices"][0]["message"]["content"] == "Hi"


# -- streams


async def test_stream_text(provider: AnthropicProvider, fake: AnthropicUpstream, ctx: CallContext):
    body = chat_body(user("Hello big world"), stream_options={"include_usage": True})
    stream = await provider.stream_chat(body, ctx)
    chunks = await collect(stream)

    assert fake.requests[0].json["stream"] is True
    assert chunks[-1] == "[DONE]"
    assert {c["id"] for c in chunks[:-1]} == {"msg_fake0001"}
    assert {c["model"] for c in chunks[:-1]} == {"claude-test-20250101"}
    assert deltas(chunks) == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": " big"},
        {"content": " world"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-2]][-1] == "stop"
    assert chunks[-2]["choices"] == []
    assert chunks[-2]["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 3,
        "total_tokens": 6,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert stream.usage == Usage(
        input_tokens=3, output_tokens=3, cached_tokens=0, cache_write_tokens=0
    )
    assert stream.served_model == "claude-test-20250101"
    assert stream.output_text == "Hello big world"


async def test_stream_without_include_usage_still_sets_usage(
    provider: AnthropicProvider, ctx: CallContext
):
    stream = await provider.stream_chat({**chat_body(user("Hi")), "model": "claude-cache"}, ctx)
    chunks = await collect(stream)
    assert all(c == "[DONE]" or c["choices"] for c in chunks)
    assert stream.usage == Usage(
        input_tokens=6, output_tokens=1, cached_tokens=3, cache_write_tokens=2
    )


async def test_stream_tool_call(provider: AnthropicProvider, ctx: CallContext):
    body = chat_body(user('call get_weather {"city": "Paris"}'), tools=TOOLS)
    body["model"] = "claude-thinking"
    chunks = await collect(await provider.stream_chat(body, ctx))

    got = deltas(chunks)
    assert got[:2] == [{"role": "assistant", "content": ""}, {"content": "Calling"}]
    calls = [d["tool_calls"][0] for d in got if "tool_calls" in d]
    # the tool_use is content block 2 (after thinking and text) but the first tool call
    assert calls[0] == {
        "index": 0,
        "id": "toolu_0001",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert {c["index"] for c in calls} == {0}
    assert orjson.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Paris"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_stream_aclose_midway(provider: AnthropicProvider, ctx: CallContext):
    stream = await provider.stream_chat(chat_body(user("one two three four")), ctx)
    iterator = aiter(stream)
    first = await anext(iterator)
    assert b'"role":"assistant"' in first
    await stream.aclose()
    assert stream.output_text == ""


# -- faults

HTTP_FAULTS = [
    ("http_400", 400, "invalid_request_error", "messages: field required"),
    ("http_401", 502, "upstream_auth_error", "invalid x-api-key"),
    ("http_429", 429, "rate_limit_error", "rate limit"),
    ("http_500", 502, "upstream_error", "Internal server error"),
    ("http_529", 502, "upstream_error", "Overloaded"),
    ("html_502", 502, "upstream_error", "an HTML page instead of JSON"),
    ("reset", 502, "upstream_connection_error", "could not reach provider 'claude'"),
]


@pytest.mark.parametrize(("fault", "status", "kind", "text"), HTTP_FAULTS)
async def test_chat_faults(
    provider: AnthropicProvider,
    fake: AnthropicUpstream,
    ctx: CallContext,
    fault: str,
    status: int,
    kind: str,
    text: str,
):
    fake.fail_next(fault)
    with pytest.raises(UpstreamError) as info:
        await provider.chat(chat_body(user("Hi")), ctx)
    err = info.value
    assert (err.status, err.type) == (status, kind)
    assert text in err.message
    assert API_KEY not in err.message
    assert err.retry_after == (2.0 if fault == "http_429" else None)


async def test_chat_invalid_json(
    provider: AnthropicProvider, fake: AnthropicUpstream, ctx: CallContext
):
    fake.fail_next("invalid_json")
    with pytest.raises(UpstreamError) as info:
        await provider.chat(chat_body(user("Hi")), ctx)
    assert (info.value.status, info.value.message) == (
        502,
        "provider 'claude' answered with invalid JSON",
    )


@pytest.mark.parametrize(
    ("fault", "status", "text"),
    [
        *[(f, s, t) for f, s, _, t in HTTP_FAULTS],
        ("stream_error_first", 502, "Overloaded"),
        ("invalid_json", 502, "invalid JSON"),
    ],
)
async def test_stream_faults_before_first_byte(
    provider: AnthropicProvider,
    fake: AnthropicUpstream,
    ctx: CallContext,
    fault: str,
    status: int,
    text: str,
):
    fake.fail_next(fault)
    with pytest.raises(UpstreamError) as info:
        await provider.stream_chat(chat_body(user("Hi there")), ctx)
    assert info.value.status == status
    assert text in info.value.message
    assert API_KEY not in info.value.message


@pytest.mark.parametrize(
    ("fault", "text"),
    [
        ("stream_break", "the stream from provider 'claude' broke"),
        ("stream_truncate", "the stream from provider 'claude' ended before message_stop"),
        ("stream_error_mid", "Overloaded"),
    ],
)
async def test_stream_faults_while_iterating(
    provider: AnthropicProvider, fake: AnthropicUpstream, ctx: CallContext, fault: str, text: str
):
    fake.fail_next(fault)
    stream = await provider.stream_chat(chat_body(user("one two three four")), ctx)
    received: list[bytes] = []
    with pytest.raises(UpstreamError) as info:
        async for frame in stream:
            received.append(frame)
    assert info.value.status == 502
    assert text in info.value.message
    assert received and not received[-1].startswith(b"data: [DONE]")
    assert stream.usage is not None and stream.usage.input_tokens == 4


async def test_wrong_api_key_is_an_operator_error(fake: AnthropicUpstream, ctx: CallContext):
    provider = make_provider(fake, api_key="sk-ant-wrong-key-987")
    with pytest.raises(UpstreamError) as info:
        await provider.chat(chat_body(user("Hi")), ctx)
    assert info.value.status == 502
    assert "sk-ant-wrong-key-987" not in info.value.message


async def test_no_embeddings(provider: AnthropicProvider, ctx: CallContext):
    with pytest.raises(UpstreamError) as info:
        await provider.embeddings({"model": MODEL, "input": "x"}, ctx)
    assert (info.value.status, info.value.message) == (
        400,
        "provider anthropic does not offer embeddings",
    )


def test_registered_under_its_type():
    registry = ProviderRegistry()
    register(registry)
    provider = registry.create(ProviderConfig(name="c", type="anthropic", api_key="k"))
    assert isinstance(provider, AnthropicProvider)
    assert provider.price_provider_id() == "anthropic"
