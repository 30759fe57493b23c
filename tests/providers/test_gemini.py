"""The gemini adapter against a fake Gemini API on loopback."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from keel.config import ProviderConfig
from keel.providers.base import CallContext, ChatStream, UpstreamError, Usage
from keel.providers.client import Timeouts, UpstreamClient
from keel.providers.gemini import GeminiProvider, register
from keel.providers.gemini_translate import to_generate_request
from keel.providers.registry import ProviderRegistry
from tests.fakes.gemini_upstream import API_KEY, GeminiUpstream

MODEL = "gemini-test"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "additionalProperties": False,
            },
        },
    }
]


@pytest.fixture
async def fake() -> AsyncIterator[GeminiUpstream]:
    server = GeminiUpstream()
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


def make_provider(fake: GeminiUpstream, api_key: str = API_KEY) -> GeminiProvider:
    return GeminiProvider(
        ProviderConfig(name="gem", type="gemini", base_url=fake.base_url, api_key=api_key)
    )


@pytest.fixture
def provider(fake: GeminiUpstream) -> GeminiProvider:
    return make_provider(fake)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def chat_body(*messages: dict[str, Any], model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": list(messages), **extra}


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


async def test_plain_chat(provider: GeminiProvider, fake: GeminiUpstream, ctx: CallContext):
    result = await provider.chat(chat_body(user("Hello there")), ctx)

    body = orjson.loads(result.body)
    assert isinstance(body.pop("created"), int)
    assert body == {
        "id": "chatcmpl-resp1",
        "object": "chat.completion",
        "model": "gemini-test-001",
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
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
    assert result.usage == Usage(input_tokens=2, output_tokens=2)
    assert result.served_model == "gemini-test-001"
    assert result.output_text == "Hello there"
    [sent] = fake.requests
    assert sent.path == "/v1beta/models/gemini-test:generateContent"
    assert sent.headers["x-goog-api-key"] == API_KEY
    assert sent.json == {"contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]}


async def test_multi_turn_with_system_and_config(
    provider: GeminiProvider, fake: GeminiUpstream, ctx: CallContext
):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = chat_body(
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        user("Hi"),
        {"role": "assistant", "content": "Hello!"},
        user("How are"),
        {"role": "user", "content": [{"type": "text", "text": "you?"}]},
        max_tokens=50,
        temperature=0.2,
        top_p=0.9,
        stop="STOP",
        n=2,
        seed=7,
        user="dropped",
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    result = await provider.chat(body, ctx)

    assert fake.requests[0].json == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello!"}]},
            {"role": "user", "parts": [{"text": "How are"}, {"text": "you?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in English."}]},
        "generationConfig": {
            "temperature": 0.2,
            "topP": 0.9,
            "candidateCount": 2,
            "seed": 7,
            "maxOutputTokens": 50,
            "stopSequences": ["STOP"],
            "responseMimeType": "application/json",
            "responseJsonSchema": schema,
        },
    }
    choices = orjson.loads(result.body)["choices"]
    assert [(c["index"], c["message"]["content"]) for c in choices] == [
        (0, "How are you?"),
        (1, "How are you?"),
    ]


async def test_tools_round_trip(provider: GeminiProvider, fake: GeminiUpstream, ctx: CallContext):
    ask = user('call get_weather {"city": "Paris"}')
    first = await provider.chat(chat_body(ask, tools=TOOLS, tool_choice="required"), ctx)

    choice = orjson.loads(first.body)["choices"][0]
    assert choice == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        "finish_reason": "tool_calls",
        "logprobs": None,
    }
    sent = fake.requests[0].json
    assert sent["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parametersJsonSchema": TOOLS[0]["function"]["parameters"],
                }
            ]
        }
    ]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    other = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_time", "arguments": "{}"},
    }
    follow = chat_body(
        ask,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [*choice["message"]["tool_calls"], other],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": '{"content": "sunny", "c": 21}'},
        {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
        tools=TOOLS,
    )
    second = await provider.chat(follow, ctx)

    assert fake.requests[1].json["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "get_weather",
                        "response": {"content": "sunny", "c": 21},
                    }
                },
                {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}},
            ],
        },
    ]
    assert second.output_text == "tool said: sunny noon"


async def test_thought_signature_round_trip(
    provider: GeminiProvider, fake: GeminiUpstream, ctx: CallContext
):
    ask = user('call get_weather {"city": "Rome"}')
    first = await provider.chat(chat_body(ask, model="gemini-thinking", tools=TOOLS), ctx)
    [call] = orjson.loads(first.body)["choices"][0]["message"]["tool_calls"]
    assert call["extra_content"] == {"google": {"thought_signature": "sig-1"}}

    follow = chat_body(
        ask,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
        model="gemini-thinking",
        tools=TOOLS,
    )
    await provider.chat(follow, ctx)
    assert fake.requests[1].json["contents"][1]["parts"] == [
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Rome"}},
            "thoughtSignature": "sig-1",
        }
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "f"}},
            {"mode": "ANY", "allowedFunctionNames": ["f"]},
        ),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]):
    request = to_generate_request(chat_body(user("x"), tools=TOOLS, tool_choice=choice))
    assert request["toolConfig"] == {"functionCallingConfig": expected}


def test_images_and_json_mode():
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    body = chat_body({"role": "user", "content": parts}, response_format={"type": "json_object"})
    request = to_generate_request(body)
    assert request["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
    ]
    assert request["generationConfig"] == {"responseMimeType": "application/json"}


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
            },
            "provider gemini accepts images only as base64 data: URLs",
        ),
        (
            {"role": "tool", "tool_call_id": "nope", "content": "x"},
            "provider gemini got a tool message for unknown tool_call_id 'nope'",
        ),
    ],
)
async def test_requests_gemini_cannot_serve(
    provider: GeminiProvider, fake: GeminiUpstream, ctx: CallContext, message: Any, error: str
):
    with pytest.raises(UpstreamError) as info:
        await provider.chat(chat_body(user("hi"), message), ctx)
    assert (info.value.status, info.value.message) == (400, error)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("model", "usage", "details"),
    [
        (
            "gemini-thinking",
            Usage(input_tokens=2, output_tokens=6, reasoning_tokens=4),
            {"cached_tokens": 0, "reasoning_tokens": 4, "completion_tokens": 6},
        ),
        (
            "gemini-cache",
            Usage(input_tokens=5, output_tokens=2, cached_tokens=3),
            {"cached_tokens": 3, "reasoning_tokens": 0, "completion_tokens": 2},
        ),
    ],
)
async def test_usage_mapping(
    provider: GeminiProvider, ctx: CallContext, model: str, usage: Usage, details: dict[str, int]
):
    result = await provider.chat(chat_body(user("Hello there"), model=model), ctx)
    assert result.usage == usage
    body_usage = orjson.loads(result.body)["usage"]
    assert body_usage["prompt_tokens_details"]["cached_tokens"] == details["cached_tokens"]
    assert (
        body_usage["completion_tokens_details"]["reasoning_tokens"] == details["reasoning_tokens"]
    )
    assert body_usage["completion_tokens"] == details["completion_tokens"]


@pytest.mark.parametrize(
    ("text", "extra", "finish", "content"),
    [
        ("one two three", {"max_completion_tokens": 2}, "length", "one two"),
        ("say it END and more", {"stop": ["END"]}, "stop", "say it "),
        ("unsafe words", {}, "content_filter", ""),
        ('call get_weather {"city": "Oslo"}', {"tools": TOOLS}, "tool_calls", None),
    ],
)
async def test_stop_reasons(
    provider: GeminiProvider, ctx: CallContext, text: str, extra: Any, finish: str, content: Any
):
    result = await provider.chat(chat_body(user(text), **extra), ctx)
    choice = orjson.loads(result.body)["choices"][0]
    assert (choice["finish_reason"], choice["message"]["content"]) == (finish, content)


async def test_blocked_prompt(provider: GeminiProvider, ctx: CallContext):
    with pytest.raises(UpstreamError) as info:
        await provider.chat(chat_body(user("blocked words")), ctx)
    assert (info.value.status, info.value.message, info.value.code) == (
        400,
        "provider gemini blocked the prompt: SAFETY",
        "content_filter",
    )


# -- streams


async def test_stream_text(provider: GeminiProvider, fake: GeminiUpstream, ctx: CallContext):
    body = chat_body(user("Hello big world"), model="gemini-thinking")
    body["stream_options"] = {"include_usage": True}
    stream = await provider.stream_chat(body, ctx)
    chunks = await collect(stream)

    sent = fake.requests[0]
    assert (sent.path, sent.query) == (
        "/v1beta/models/gemini-thinking:streamGenerateContent",
        {"alt": "sse"},
    )
    assert chunks[-1] == "[DONE]"
    assert {c["id"] for c in chunks[:-1]} == {"chatcmpl-resp1"}
    assert {c["model"] for c in chunks[:-1]} == {"gemini-thinking-001"}
    assert deltas(chunks) == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": " big"},
        {"content": " world"},
        {},
    ]
    assert chunks[-3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2]["choices"] == []
    assert chunks[-2]["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 7,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 4},
    }
    assert stream.usage == Usage(input_tokens=3, output_tokens=7, reasoning_tokens=4)
    assert stream.served_model == "gemini-thinking-001"
    assert stream.output_text == "Hello big world"


async def test_stream_without_include_usage_still_sets_usage(
    provider: GeminiProvider, ctx: CallContext
):
    stream = await provider.stream_chat(chat_body(user("Hi")), ctx)
    chunks = await collect(stream)
    assert all(c == "[DONE]" or c["choices"] for c in chunks)
    assert stream.usage == Usage(input_tokens=1, output_tokens=1)


async def test_stream_tool_call(provider: GeminiProvider, ctx: CallContext):
    body = chat_body(user('call get_weather {"city": "Paris"}'), tools=TOOLS)
    chunks = await collect(await provider.stream_chat(body, ctx))

    assert deltas(chunks) == [
        {"role": "assistant", "content": ""},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ]
        },
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_stream_blocked_prompt_fails_before_first_byte(
    provider: GeminiProvider, ctx: CallContext
):
    with pytest.raises(UpstreamError) as info:
        await provider.stream_chat(chat_body(user("blocked words")), ctx)
    assert info.value.status == 400


# -- faults

HTTP_FAULTS = [
    ("http_400", 400, "invalid_request_error", "Request contains an invalid argument."),
    ("http_401", 502, "upstream_auth_error", "invalid authentication credentials"),
    ("http_429", 429, "rate_limit_error", "Resource has been exhausted"),
    ("http_500", 502, "upstream_error", "An internal error has occurred."),
    ("http_503", 502, "upstream_error", "The model is overloaded."),
    ("html_502", 502, "upstream_error", "an HTML page instead of JSON"),
    ("reset", 502, "upstream_connection_error", "could not reach provider 'gem'"),
]


@pytest.mark.parametrize(("fault", "status", "kind", "text"), HTTP_FAULTS)
async def test_chat_faults(
    provider: GeminiProvider,
    fake: GeminiUpstream,
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


async def test_chat_invalid_json(provider: GeminiProvider, fake: GeminiUpstream, ctx: CallContext):
    fake.fail_next("invalid_json")
    with pytest.raises(UpstreamError) as info:
        await provider.chat(chat_body(user("Hi")), ctx)
    assert (info.value.status, info.value.message) == (
        502,
        "provider 'gem' answered with invalid JSON",
    )


@pytest.mark.parametrize(
    ("fault", "status", "text"),
    [
        *[(f, s, t) for f, s, _, t in HTTP_FAULTS],
        ("stream_error_first", 502, "The model is overloaded."),
        ("invalid_json", 502, "invalid JSON"),
    ],
)
async def test_stream_faults_before_first_byte(
    provider: GeminiProvider,
    fake: GeminiUpstream,
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
        ("stream_break", "the stream from provider 'gem' broke"),
        ("stream_truncate", "the stream from provider 'gem' ended before a finish reason"),
        ("stream_error_mid", "The model is overloaded."),
    ],
)
async def test_stream_faults_while_iterating(
    provider: GeminiProvider, fake: GeminiUpstream, ctx: CallContext, fault: str, text: str
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


async def test_wrong_api_key_is_an_operator_error(fake: GeminiUpstream, ctx: CallContext):
    provider = make_provider(fake, api_key="AIza-wrong-key-987")
    for call in (provider.chat, provider.stream_chat):
        with pytest.raises(UpstreamError) as info:
            await call(chat_body(user("Hi")), ctx)
        assert (info.value.status, info.value.type) == (502, "upstream_auth_error")
        assert "API key not valid" in info.value.message
        assert "AIza-wrong-key-987" not in info.value.message


# -- embeddings


async def test_embeddings(provider: GeminiProvider, fake: GeminiUpstream, ctx: CallContext):
    result = await provider.embeddings(
        {"model": "text-embedding-004", "input": ["hi you", "x"]}, ctx
    )

    assert orjson.loads(result.body) == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [6.0, 2.0, 0.5]},
            {"object": "embedding", "index": 1, "embedding": [1.0, 1.0, 0.5]},
        ],
        "model": "text-embedding-004",
    }
    assert (result.usage, result.served_model) == (None, None)
    [sent] = fake.requests
    assert sent.path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert sent.json == {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "hi you"}]}},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "x"}]}},
        ]
    }


async def test_embeddings_base64_and_dimensions(provider: GeminiProvider, ctx: CallContext):
    body = {"model": "emb", "input": "hi", "encoding_format": "base64", "dimensions": 2}
    result = await provider.embeddings(body, ctx)
    [item] = orjson.loads(result.body)["data"]
    assert struct.unpack("<2f", base64.b64decode(item["embedding"])) == (2.0, 1.0)


async def test_embeddings_of_token_arrays_are_refused(provider: GeminiProvider, ctx: CallContext):
    with pytest.raises(UpstreamError) as info:
        await provider.embeddings({"model": "emb", "input": [[1, 2, 3]]}, ctx)
    assert info.value.status == 400


def test_registered_under_its_type():
    registry = ProviderRegistry()
    register(registry)
    provider = registry.create(ProviderConfig(name="g", type="gemini", api_key="k"))
    assert isinstance(provider, GeminiProvider)
    assert provider.price_provider_id() == "google"
