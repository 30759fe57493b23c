"""The official `openai` SDK, unchanged, against Keel fronting a fake OpenAI-compatible upstream."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway.conftest import ADMIN_KEY, UPSTREAM_KEY, fetch_record
from tests.servers import KeelProcess

pytestmark = pytest.mark.timeout(60)


def test_mock_echo_plain_and_streaming(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="mock/echo", messages=[{"role": "user", "content": "hello from the quick start"}]
    )
    assert answer.choices[0].message.content == "hello from the quick start"
    assert answer.usage is not None and answer.usage.completion_tokens == 5

    chunks = list(
        client.chat.completions.create(
            model="mock/echo", messages=[{"role": "user", "content": "one two three"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 3


def test_chat_record_has_tokens_and_price_book_cost(
    client: openai.OpenAI, keel: KeelProcess
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="fast",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "what does keel record"},
        ],
        extra_headers={
            "x-keel-customer": "acme",
            "x-keel-pipeline": "support",
            "x-keel-tags": "beta, eu,beta",
        },
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "what does keel record"
    request_id = raw.headers["x-keel-request-id"]
    assert raw.headers["x-keel-provider"] == "up"
    record = fetch_record(keel, request_id)
    assert answer.usage is not None
    expected = calc_price(
        PriceUsage(
            input_tokens=answer.usage.prompt_tokens, output_tokens=answer.usage.completion_tokens
        ),
        "gpt-4o-mini",
        provider_id="openai",
    ).total_price
    assert record["cost_usd"] == pytest.approx(float(expected), rel=1e-9)
    assert float(raw.headers["x-keel-cost-usd"]) == pytest.approx(float(expected), rel=1e-6)
    subset = {
        k: record[k]
        for k in (
            "id",
            "model",
            "provider",
            "provider_model",
            "status_code",
            "error",
            "input_tokens",
            "output_tokens",
            "tokens_estimated",
            "cost_estimated",
            "customer",
            "pipeline",
            "tags",
            "stream",
            "endpoint",
            "interrupted",
        )
    }
    assert subset == {
        "id": request_id,
        "model": "fast",
        "provider": "up",
        "provider_model": "gpt-4o-mini",
        "status_code": 200,
        "error": None,
        "input_tokens": answer.usage.prompt_tokens,
        "output_tokens": answer.usage.completion_tokens,
        "tokens_estimated": False,
        "cost_estimated": False,
        "customer": "acme",
        "pipeline": "support",
        "tags": ["beta", "eu"],
        "stream": False,
        "endpoint": "chat.completions",
        "interrupted": False,
    }
    assert record["latency_ms"] > 0
    assert record["trace_id"] == raw.headers["x-keel-trace-id"]


def test_reasoning_and_cached_tokens_are_recorded_and_priced(
    client: openai.OpenAI, keel: KeelProcess
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="up/o3-mini-reasoning", messages=[{"role": "user", "content": "think"}]
    )
    record = fetch_record(keel, raw.headers["x-keel-request-id"])
    assert (record["cached_tokens"], record["reasoning_tokens"]) == (3, 5)


def test_streaming_with_usage(client: openai.OpenAI, keel: KeelProcess) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="fast",
        messages=[{"role": "user", "content": "stream these four words"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        request_id = resp.headers["x-keel-request-id"]
        chunks = list(resp.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "stream these four words"
    )
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    record = fetch_record(keel, request_id)
    assert (record["stream"], record["input_tokens"], record["output_tokens"]) == (
        True,
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert record["tokens_estimated"] is False
    assert record["ttft_ms"] is not None and record["ttft_ms"] <= record["latency_ms"]


def test_streaming_without_usage_request_hides_usage_chunk_but_records_it(
    client: openai.OpenAI, keel: KeelProcess
) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="fast",
        messages=[{"role": "user", "content": "no usage please"}],
        stream=True,
    ) as resp:
        request_id = resp.headers["x-keel-request-id"]
        chunks = list(resp.parse())
    assert all(c.usage is None for c in chunks)
    record = fetch_record(keel, request_id)
    assert record["output_tokens"] == 3 and record["tokens_estimated"] is False


def test_tools_and_unknown_fields_pass_through(
    client: openai.OpenAI, fake_upstream: tuple[FakeOpenAI, str]
) -> None:
    fake = fake_upstream[0]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    answer = client.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": 'call get_weather {"city": "Paris"}'}],
        tools=tools,  # type: ignore[arg-type]
        extra_body={"seed": 7, "vendor_knob": {"deep": [1, 2]}},
    )
    call = answer.choices[0].message.tool_calls
    assert call is not None and call[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call[0].function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    sent = fake.requests[-1].json
    assert sent["tools"] == tools
    assert (sent["seed"], sent["vendor_knob"], sent["model"]) == (
        7,
        {"deep": [1, 2]},
        "gpt-4o-mini",
    )
    assert fake.requests[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_embeddings_and_model_list(client: openai.OpenAI) -> None:
    emb = client.embeddings.create(model="up/text-embedding-3-small", input=["a b", "c"])
    assert len(emb.data) == 2 and emb.data[0].embedding
    ids = {m.id for m in client.models.list()}
    assert {"fast", "mock/echo"} <= ids


# `times`: how often the fault must repeat to reach the client. Retryable faults are retried
# once on the same target (settings retry_max_attempts: 2); the client's own mistakes, a refused
# provider key and a hang are not.
@pytest.mark.parametrize(
    ("fault", "times", "exception", "status"),
    [
        ("http_400", 1, openai.BadRequestError, 400),
        ("http_404", 1, openai.NotFoundError, 404),
        ("http_429", 2, openai.RateLimitError, 429),
        ("http_401", 1, openai.InternalServerError, 502),
        ("http_500", 2, openai.InternalServerError, 502),
        ("html_502", 2, openai.InternalServerError, 502),
        ("invalid_json", 2, openai.InternalServerError, 502),
        ("reset", 2, openai.InternalServerError, 502),
        ("hang", 1, openai.InternalServerError, 504),
    ],
)
def test_upstream_faults_raise_the_right_sdk_exception(
    client: openai.OpenAI,
    fake_upstream: tuple[FakeOpenAI, str],
    keel: KeelProcess,
    fault: str,
    times: int,
    exception: type[openai.APIStatusError],
    status: int,
) -> None:
    fake_upstream[0].fail_next(fault, times)
    with pytest.raises(exception) as caught:
        client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == status
    assert UPSTREAM_KEY not in str(caught.value.message)
    if fault == "http_429":
        assert caught.value.response.headers["retry-after"] == "2"
    record = fetch_record(keel, caught.value.response.headers["x-keel-request-id"])
    assert record["status_code"] == status and record["error"]


def test_streaming_fault_before_first_byte_is_a_real_http_error(
    client: openai.OpenAI, fake_upstream: tuple[FakeOpenAI, str]
) -> None:
    fake_upstream[0].fail_next("stream_error_first", 2)  # retried once before the first byte
    with pytest.raises(openai.APIStatusError) as caught:
        list(
            client.chat.completions.create(
                model="fast", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    assert caught.value.status_code == 502


def test_streaming_fault_after_first_byte_ends_with_an_error_event(
    client: openai.OpenAI, fake_upstream: tuple[FakeOpenAI, str], keel: KeelProcess
) -> None:
    fake_upstream[0].fail_next("stream_break")
    with client.chat.completions.with_streaming_response.create(
        model="fast",
        messages=[{"role": "user", "content": "a b c d e f"}],
        stream=True,
    ) as resp:
        request_id = resp.headers["x-keel-request-id"]
        with pytest.raises(openai.APIError):
            list(resp.parse())
    record = fetch_record(keel, request_id)
    assert record["status_code"] == 200 and record["error_type"] == "upstream_stream_error"


@pytest.mark.parametrize(
    ("kwargs", "exception", "status"),
    [
        ({"model": "nope/none"}, openai.NotFoundError, 404),
        ({"model": "fast", "messages": []}, openai.BadRequestError, 400),
    ],
)
def test_client_errors(
    client: openai.OpenAI,
    kwargs: dict[str, object],
    exception: type[openai.APIStatusError],
    status: int,
) -> None:
    args: dict[str, object] = {"messages": [{"role": "user", "content": "hi"}], **kwargs}
    with pytest.raises(exception) as caught:
        client.chat.completions.create(**args)  # type: ignore[call-overload]
    assert caught.value.status_code == status
    assert "error" in caught.value.body or caught.value.message  # type: ignore[operator]


def test_auth_and_body_errors(keel: KeelProcess) -> None:
    bad = openai.OpenAI(base_url=f"{keel.url}/v1", api_key="sk-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="mock/echo", messages=[{"role": "user", "content": "x"}])
    auth = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
    url = f"{keel.url}/v1/chat/completions"
    not_json = httpx.post(url, content=b"{nope", headers=auth)
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["message"]
    too_big = httpx.post(url, content=b"x" * (11 * 1024 * 1024), headers=auth)
    assert too_big.status_code == 413


def test_traceparent_makes_keel_a_child_span(
    client: openai.OpenAI, keel: KeelProcess, fake_upstream: tuple[FakeOpenAI, str]
) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    raw = client.chat.completions.with_raw_response.create(
        model="fast",
        messages=[{"role": "user", "content": "traced"}],
        extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"},
    )
    assert raw.headers["x-keel-trace-id"] == trace_id
    record = fetch_record(keel, raw.headers["x-keel-request-id"])
    assert (record["trace_id"], record["parent_span_id"]) == (trace_id, parent)
    forwarded = fake_upstream[0].requests[-1].headers["traceparent"]
    assert forwarded == f"00-{trace_id}-{record['span_id']}-01"


def test_secrets_stay_out_of_records_logs_and_metrics(
    client: openai.OpenAI, keel: KeelProcess
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "secret check"}]
    )
    request_id = raw.headers["x-keel-request-id"]
    fetch_record(keel, request_id)
    auth = {"authorization": f"Bearer {ADMIN_KEY}"}
    payload = httpx.get(f"{keel.url}/api/v1/requests/{request_id}/payload", headers=auth).text
    metrics = httpx.get(f"{keel.url}/metrics").text
    for text in (payload, metrics, keel.log()):
        assert UPSTREAM_KEY not in text and ADMIN_KEY not in text
    assert "keel_requests_total" in metrics
