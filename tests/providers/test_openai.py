"""The openai and azure adapters against the fake OpenAI server (and a raw server for the
malformed streams the fake does not produce)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from keel.config import ConfigError, ProviderConfig
from keel.providers.base import CallContext, ChatStream, Provider, UpstreamError, Usage
from keel.providers.client import Timeouts, UpstreamClient
from keel.providers.openai import AzureOpenAIProvider, OpenAIProvider, OpenAIStream, register
from keel.providers.registry import ProviderRegistry
from tests import fakes
from tests.fakes import FAKE_API_KEY, FakeOpenAI, RawUpstream

fake_openai = fakes.fake_openai
client_session = fakes.client_session
raw_upstream = fakes.raw_upstream

USAGE = Usage(input_tokens=3, output_tokens=3, cached_tokens=0, reasoning_tokens=0)
HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there world"}]}


def make_ctx(session: UpstreamClient, **timeout: float) -> CallContext:
    return CallContext(
        session=session,
        timeout=Timeouts(**(timeout or {"total": 10})),
        request_id="req-test",
    )


@pytest.fixture
def ctx(client_session: UpstreamClient) -> CallContext:
    return make_ctx(client_session)


def openai_provider(base_url: str, api_key: str | None = FAKE_API_KEY, **options: Any) -> Provider:
    config = ProviderConfig("up", "openai", base_url=base_url, api_key=api_key, options=options)
    return OpenAIProvider(config)


def azure_provider(fake: FakeOpenAI, **options: Any) -> Provider:
    config = ProviderConfig(
        "az", "azure", base_url=fake.root_url, api_key=FAKE_API_KEY, options=options
    )
    return AzureOpenAIProvider(config)


@pytest.fixture
def provider(fake_openai: FakeOpenAI) -> Provider:
    return openai_provider(fake_openai.base_url)


def without_volatile(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in {"id", "created"}}


async def read_all(stream: ChatStream) -> list[bytes]:
    return [frame async for frame in stream]


def chunks_of(frames: list[bytes]) -> list[dict[str, Any]]:
    assert frames[-1] == b"data: [DONE]\n\n"
    assert all(f.startswith(b"data: ") and f.endswith(b"\n\n") for f in frames)
    return [orjson.loads(f[6:-2]) for f in frames[:-1]]


def test_register_adds_openai_and_azure() -> None:
    registry = ProviderRegistry()
    register(registry)
    assert registry.types() == ["azure", "openai"]
    made = registry.create(ProviderConfig("x", "azure", base_url="https://x.openai.azure.com"))
    assert isinstance(made, AzureOpenAIProvider)
    assert isinstance(made, Provider)


def test_price_provider_ids() -> None:
    assert OpenAIProvider(ProviderConfig("a", "openai")).price_provider_id() == "openai"
    official = ProviderConfig("b", "openai", base_url="https://api.openai.com/v1/")
    assert OpenAIProvider(official).price_provider_id() == "openai"
    local = ProviderConfig("c", "openai", base_url="http://127.0.0.1:8000/v1")
    assert OpenAIProvider(local).price_provider_id() is None
    groq = ProviderConfig(
        "d", "openai", base_url="https://api.groq.com/openai/v1", options={"price_provider": "groq"}
    )
    assert OpenAIProvider(groq).price_provider_id() == "groq"
    azure = ProviderConfig("e", "azure", base_url="https://x.openai.azure.com")
    assert AzureOpenAIProvider(azure).price_provider_id() == "azure"


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="headers"):
        OpenAIProvider(ProviderConfig("a", "openai", options={"headers": ["x"]}))
    with pytest.raises(ConfigError, match="base_url"):
        AzureOpenAIProvider(ProviderConfig("b", "azure"))


async def test_chat_forwards_the_body_and_returns_upstream_answer(
    fake_openai: FakeOpenAI, provider: Provider, ctx: CallContext
) -> None:
    result = await provider.chat(dict(HELLO), ctx)

    message = {"role": "assistant", "content": "hello there world", "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    assert without_volatile(orjson.loads(result.body)) == {
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_fake",
        "choices": [choice],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 3,
            "total_tokens": 6,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
    }
    assert result.usage == USAGE
    assert (result.served_model, result.output_text) == ("gpt-4o-mini", "hello there world")
    sent = fake_openai.requests[-1]
    assert (sent.path, sent.json) == ("/v1/chat/completions", HELLO)
    assert sent.headers["authorization"] == f"Bearer {FAKE_API_KEY}"
    assert sent.headers["content-type"] == "application/json"


async def test_reasoning_and_cached_tokens_are_read(provider: Provider, ctx: CallContext) -> None:
    result = await provider.chat({**HELLO, "model": "o3-mini-reasoning"}, ctx)
    assert result.usage == Usage(
        input_tokens=6, output_tokens=8, cached_tokens=3, reasoning_tokens=5
    )


async def test_unknown_fields_and_tools_pass_through_untouched(
    fake_openai: FakeOpenAI, provider: Provider, ctx: CallContext
) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": 'call get_weather {"city": "Paris"}'}],
        "tools": tools,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "metadata": {"team": "search"},
        "some_future_field": {"nested": [1, 2.5, None, True]},
    }
    result = await provider.chat(body, ctx)

    assert fake_openai.requests[-1].json == body
    message = orjson.loads(result.body)["choices"][0]["message"]
    assert message["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert result.output_text == ""


async def test_headers_forwarded_without_client_credentials(
    fake_openai: FakeOpenAI, client_session: UpstreamClient
) -> None:
    provider = openai_provider(
        fake_openai.base_url, headers={"X-Team": "search"}, organization="org-1"
    )
    ctx = make_ctx(client_session)
    ctx.forward_headers = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "Authorization": "Bearer client-key-must-not-leak",
        "api-key": "client-key-must-not-leak",
    }
    await provider.chat(dict(HELLO), ctx)

    headers = fake_openai.requests[-1].headers
    assert headers["traceparent"].startswith("00-0af7651916cd43dd")
    assert headers["authorization"] == f"Bearer {FAKE_API_KEY}"
    assert (headers["x-team"], headers["openai-organization"]) == ("search", "org-1")
    assert "client-key-must-not-leak" not in str(headers)


async def test_no_authorization_without_api_key(client_session: UpstreamClient) -> None:
    fake = FakeOpenAI()  # like a local vLLM: no key needed
    await fake.start()
    try:
        await openai_provider(fake.base_url, api_key=None).chat(
            dict(HELLO), make_ctx(client_session)
        )
    finally:
        await fake.stop()
    assert "authorization" not in fake.requests[-1].headers


async def test_stream_hides_the_usage_chunk_the_client_did_not_ask_for(
    fake_openai: FakeOpenAI, provider: Provider, ctx: CallContext
) -> None:
    body = {**HELLO, "stream": True}
    stream = await provider.stream_chat(body, ctx)
    chunks = chunks_of(await read_all(stream))

    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "hello "},
        {"content": "there "},
        {"content": "world"},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert stream.usage == USAGE
    assert (stream.served_model, stream.output_text) == ("gpt-4o-mini", "hello there world")
    assert fake_openai.requests[-1].json == {**body, "stream_options": {"include_usage": True}}
    assert body == {**HELLO, "stream": True}  # the caller's dict is left as it was


async def test_stream_passes_the_usage_chunk_when_asked(
    provider: Provider, ctx: CallContext
) -> None:
    body = {**HELLO, "stream": True, "stream_options": {"include_usage": True}}
    stream = await provider.stream_chat(body, ctx)
    chunks = chunks_of(await read_all(stream))

    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert stream.usage is not None and stream.usage.output_tokens == 3


async def test_stream_from_a_server_that_reports_no_usage(
    fake_openai: FakeOpenAI, provider: Provider, ctx: CallContext
) -> None:
    fake_openai.usage_in_stream = False
    stream = await provider.stream_chat({**HELLO, "stream": True}, ctx)
    chunks = chunks_of(await read_all(stream))
    assert len(chunks) == 5
    assert stream.usage is None
    assert stream.output_text == "hello there world"


async def test_stream_with_n_and_tool_calls(provider: Provider, ctx: CallContext) -> None:
    stream = await provider.stream_chat({**HELLO, "stream": True, "n": 2}, ctx)
    await read_all(stream)
    assert stream.output_text == "hello there world" * 2
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    messages = [{"role": "user", "content": "call f {}"}]
    body = {**HELLO, "messages": messages, "tools": tools, "stream": True}
    stream = await provider.stream_chat(body, ctx)
    chunks = chunks_of(await read_all(stream))
    assert chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "f"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_aclose_midway_releases_the_stream(provider: Provider, ctx: CallContext) -> None:
    stream = await provider.stream_chat({**HELLO, "stream": True}, ctx)
    assert isinstance(stream, OpenAIStream) and isinstance(stream, ChatStream)
    first = await anext(aiter(stream))
    assert first.startswith(b"data: ")
    await stream.aclose()
    assert await read_all(stream) == []
    # the session still works: the broken-off connection was not put back half-read
    assert (await provider.chat(dict(HELLO), ctx)).output_text == "hello there world"


async def test_embeddings(fake_openai: FakeOpenAI, provider: Provider, ctx: CallContext) -> None:
    body = {"model": "text-embedding-3-small", "input": ["one two", "three"], "dimensions": 8}
    result = await provider.embeddings(body, ctx)

    data = orjson.loads(result.body)
    assert [d["index"] for d in data["data"]] == [0, 1]
    assert len(data["data"][0]["embedding"]) == 8
    assert result.usage == Usage(input_tokens=3)
    assert result.served_model == "text-embedding-3-small"
    assert (fake_openai.requests[-1].path, fake_openai.requests[-1].json) == (
        "/v1/embeddings",
        body,
    )


async def test_azure_puts_the_deployment_in_the_url(
    fake_openai: FakeOpenAI, ctx: CallContext
) -> None:
    provider = azure_provider(fake_openai)
    body = {**HELLO, "model": "my-gpt", "temperature": 0}
    result = await provider.chat(body, ctx)

    sent = fake_openai.requests[-1]
    assert sent.path == "/openai/deployments/my-gpt/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == FAKE_API_KEY
    assert "authorization" not in sent.headers
    assert sent.json == {"messages": HELLO["messages"], "temperature": 0}
    assert result.output_text == "hello there world"
    assert body["model"] == "my-gpt"


async def test_azure_stream_embeddings_and_api_version(
    fake_openai: FakeOpenAI, ctx: CallContext
) -> None:
    provider = azure_provider(fake_openai, api_version="2025-01-01-preview")
    stream = await provider.stream_chat({**HELLO, "model": "dep", "stream": True}, ctx)
    await read_all(stream)
    assert stream.usage is not None and stream.usage.input_tokens == 3
    await provider.embeddings({"model": "emb", "input": "a b"}, ctx)

    chat, embed = fake_openai.requests[-2:]
    assert chat.path == "/openai/deployments/dep/chat/completions"
    assert embed.path == "/openai/deployments/emb/embeddings"
    assert embed.query == {"api-version": "2025-01-01-preview"}
    assert embed.json == {"input": "a b"}


FAULT_STATUSES = [
    ("http_400", 400, "temperature"),
    ("http_401", 502, "api_key"),
    ("http_404", 404, "does not exist"),
    ("http_429", 429, "Rate limit"),
    ("http_500", 502, "server had an error"),
    ("html_502", 502, "HTML"),
    ("invalid_json", 502, "invalid JSON"),
    ("error_200", 502, "overloaded"),
    ("reset", 502, "could not reach"),
]


@pytest.mark.parametrize(("fault", "status", "says"), FAULT_STATUSES)
@pytest.mark.parametrize("streaming", [False, True], ids=["chat", "stream"])
async def test_upstream_faults_become_upstream_errors(
    fake_openai: FakeOpenAI,
    provider: Provider,
    ctx: CallContext,
    fault: str,
    status: int,
    says: str,
    streaming: bool,
) -> None:
    fake_openai.fail_next(fault)
    with pytest.raises(UpstreamError) as caught:
        if streaming:  # stream_chat itself raises: the gateway can still answer an HTTP error
            await provider.stream_chat({**HELLO, "stream": True}, ctx)
        else:
            await provider.chat(dict(HELLO), ctx)
    error = caught.value
    assert (error.status, says in error.message) == (status, True), error.message
    assert error.retry_after == (2.0 if fault == "http_429" else None)
    assert FAKE_API_KEY not in error.message and FAKE_API_KEY not in str(error)


async def test_embeddings_fault(
    fake_openai: FakeOpenAI, provider: Provider, ctx: CallContext
) -> None:
    fake_openai.fail_next("http_429")
    with pytest.raises(UpstreamError) as caught:
        await provider.embeddings({"model": "text-embedding-3-small", "input": "x"}, ctx)
    assert (caught.value.status, caught.value.retry_after) == (429, 2.0)


async def test_wrong_key_is_a_gateway_problem(fake_openai: FakeOpenAI, ctx: CallContext) -> None:
    provider = openai_provider(fake_openai.base_url, api_key="sk-wrong-key-0000000000")
    with pytest.raises(UpstreamError) as caught:
        await provider.chat(dict(HELLO), ctx)
    assert caught.value.status == 502
    assert caught.value.upstream_status == 401
    assert "sk-wrong-key-0000000000" not in caught.value.message


@pytest.mark.parametrize("streaming", [False, True], ids=["chat", "stream"])
async def test_a_hanging_upstream_times_out(
    fake_openai: FakeOpenAI, client_session: UpstreamClient, streaming: bool
) -> None:
    provider = openai_provider(fake_openai.base_url)
    ctx = make_ctx(client_session, total=0.3)
    fake_openai.fail_next("hang")
    with pytest.raises(UpstreamError) as caught:
        if streaming:
            await provider.stream_chat({**HELLO, "stream": True}, ctx)
        else:
            await provider.chat(dict(HELLO), ctx)
    assert caught.value.status == 504


async def test_connection_refused(client_session: UpstreamClient) -> None:
    fake = FakeOpenAI()
    base_url = await fake.start()
    await fake.stop()  # nothing listens on that port any more
    with pytest.raises(UpstreamError) as caught:
        await openai_provider(base_url).chat(dict(HELLO), make_ctx(client_session))
    assert caught.value.status == 502
    assert "could not reach" in caught.value.message


async def test_stream_error_as_first_event_is_raised_before_returning(
    fake_openai: FakeOpenAI, provider: Provider, ctx: CallContext
) -> None:
    fake_openai.fail_next("stream_error_first")
    with pytest.raises(UpstreamError) as caught:
        await provider.stream_chat({**HELLO, "stream": True}, ctx)
    assert caught.value.status == 502
    assert "overloaded" in caught.value.message


@pytest.mark.parametrize(
    ("fault", "says"), [("stream_break", "broke"), ("stream_error_mid", "while streaming")]
)
async def test_stream_failing_midway_raises_while_iterating(
    fake_openai: FakeOpenAI, provider: Provider, ctx: CallContext, fault: str, says: str
) -> None:
    fake_openai.fail_next(fault)
    stream = await provider.stream_chat({**HELLO, "stream": True}, ctx)
    received = []
    with pytest.raises(UpstreamError) as caught:
        async for frame in stream:
            received.append(frame)
    assert caught.value.status == 502
    assert says in caught.value.message
    assert len(received) == 2
    assert stream.output_text == "hello "
    assert await read_all(stream) == []  # a failed stream stays finished


async def test_a_stalled_stream_times_out(
    fake_openai: FakeOpenAI, client_session: UpstreamClient
) -> None:
    provider = openai_provider(fake_openai.base_url)
    fake_openai.fail_next("slow_drip")
    stream = await provider.stream_chat(
        {**HELLO, "stream": True}, make_ctx(client_session, read=0.3)
    )
    with pytest.raises(UpstreamError) as caught:
        await read_all(stream)
    assert caught.value.status == 504


CHUNK = b'data: {"model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (CHUNK, "ended early"),
        (CHUNK + b"data: {not json\n\n", "invalid JSON"),
        (CHUNK + b'data: {"error": "boom"}\n\n', "boom"),
    ],
    ids=["no-done", "invalid-json", "error-string"],
)
async def test_malformed_streams_raise_while_iterating(
    raw_upstream: RawUpstream, ctx: CallContext, body: bytes, says: str
) -> None:
    raw_upstream.body = body
    stream = await openai_provider(raw_upstream.base_url).stream_chat(dict(HELLO), ctx)
    with pytest.raises(UpstreamError) as caught:
        await read_all(stream)
    assert (caught.value.status, says in caught.value.message) == (502, True)


@pytest.mark.parametrize("body", [b"", b": keep-alive\n\n", b"data: [1, 2]\n\n"])
async def test_streams_that_fail_at_once_fail_before_returning(
    raw_upstream: RawUpstream, ctx: CallContext, body: bytes
) -> None:
    raw_upstream.body = body
    with pytest.raises(UpstreamError) as caught:
        await openai_provider(raw_upstream.base_url).stream_chat(dict(HELLO), ctx)
    assert caught.value.status == 502


async def test_a_key_quoted_back_by_the_upstream_is_scrubbed(
    raw_upstream: RawUpstream, ctx: CallContext
) -> None:
    raw_upstream.status, raw_upstream.content_type = 400, "application/json"
    raw_upstream.body = orjson.dumps({"error": {"message": f"bad key {FAKE_API_KEY} here"}})
    provider = openai_provider(raw_upstream.base_url)
    for call in (provider.chat, provider.stream_chat):
        with pytest.raises(UpstreamError) as caught:
            await call(dict(HELLO), ctx)
        assert FAKE_API_KEY not in str(caught.value)
        assert "bad key *** here" in caught.value.message
