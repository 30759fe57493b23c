"""The mock provider's price-book stand-ins (`mock/gpt-4o-mini`, …) against a real `keel serve`
with no config: they answer exactly like `mock/echo` and `mock/embed`, cost the model's list
price on the mock's token counts (budgets see that price too), and unknown names stay a 404."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from keel.providers.mock import LISTED_MODELS
from tests.gateway.conftest import ADMIN_KEY, fetch_record
from tests.servers import KeelProcess

pytestmark = pytest.mark.timeout(60)

QUESTION = [
    {"role": "system", "content": "answer in one line"},
    {"role": "user", "content": "where is my order 4417 please"},
]


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    proc = KeelProcess(tmp_path_factory.mktemp("keel"), env={"KEEL_ADMIN_KEY": ADMIN_KEY})
    proc.start(timeout=60)
    yield proc
    proc.stop()


@pytest.fixture
def http(keel: KeelProcess) -> Iterator[httpx.Client]:
    auth = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=keel.url, headers=auth, timeout=10) as client:
        yield client


def list_price(usage: dict[str, Any], model: str, provider_id: str | None = None) -> float:
    """genai-prices' own calculator, on its bundled data, for the usage the client got."""
    price_usage = PriceUsage(
        input_tokens=usage["prompt_tokens"], output_tokens=usage.get("completion_tokens", 0)
    )
    return float(calc_price(price_usage, model, provider_id=provider_id).total_price)


def without_ids(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without what differs between two calls of different models."""
    return {k: v for k, v in answer.items() if k not in ("id", "created", "model")}


def sse(raw: bytes) -> list[dict[str, Any]]:
    frames = [line.removeprefix(b"data: ") for line in raw.split(b"\n\n") if line]
    assert frames[-1] == b"[DONE]"
    return [orjson.loads(frame) for frame in frames[:-1]]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash"])
def test_plain_chat_answers_like_echo_at_list_price(
    http: httpx.Client, keel: KeelProcess, model: str
) -> None:
    echo = http.post("/v1/chat/completions", json={"model": "mock/echo", "messages": QUESTION})
    priced = http.post(
        "/v1/chat/completions", json={"model": f"mock/{model}", "messages": QUESTION}
    )
    assert (echo.status_code, priced.status_code) == (200, 200)
    answer = priced.json()
    assert without_ids(answer) == without_ids(echo.json())
    assert answer["model"] == model
    assert answer["usage"]["prompt_tokens"] == 10 and answer["usage"]["completion_tokens"] == 6

    expected = list_price(answer["usage"], model)
    assert expected > 0
    assert float(priced.headers["x-keel-cost-usd"]) == pytest.approx(expected, rel=1e-6)
    record = fetch_record(keel, priced.headers["x-keel-request-id"])
    subset = {
        k: record[k]
        for k in ("model", "provider", "provider_model", "input_tokens", "output_tokens")
    }
    assert subset == {
        "model": f"mock/{model}",
        "provider": "mock",
        "provider_model": model,
        "input_tokens": 10,
        "output_tokens": 6,
    }
    assert record["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert record["cost_estimated"] is False

    free = fetch_record(keel, echo.headers["x-keel-request-id"])
    assert free["cost_usd"] == 0.0 and echo.headers["x-keel-cost-usd"] == "0"


def test_streamed_chat_answers_like_echo_at_list_price(
    http: httpx.Client, keel: KeelProcess
) -> None:
    body = {"messages": QUESTION, "stream": True, "stream_options": {"include_usage": True}}
    echo = http.post("/v1/chat/completions", json={**body, "model": "mock/echo"})
    priced = http.post("/v1/chat/completions", json={**body, "model": "mock/gpt-4o"})
    assert (echo.status_code, priced.status_code) == (200, 200)
    chunks = sse(priced.content)
    assert [without_ids(c) for c in chunks] == [without_ids(c) for c in sse(echo.content)]
    assert {c["model"] for c in chunks} == {"gpt-4o"}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "where is my order 4417 please"
    usage = chunks[-1]["usage"]

    record = fetch_record(keel, priced.headers["x-keel-request-id"])
    assert (record["stream"], record["provider_model"]) == (True, "gpt-4o")
    assert (record["input_tokens"], record["output_tokens"]) == (10, 6)
    assert record["cost_usd"] == pytest.approx(list_price(usage, "gpt-4o"), rel=1e-9)
    assert fetch_record(keel, echo.headers["x-keel-request-id"])["cost_usd"] == 0.0


def test_embeddings_answer_like_embed_at_list_price(http: httpx.Client, keel: KeelProcess) -> None:
    body = {"input": ["reset my password", "ship to Norway"]}
    embed = http.post("/v1/embeddings", json={**body, "model": "mock/embed"})
    priced = http.post(
        "/v1/embeddings", json={**body, "model": "mock/openai/text-embedding-3-small"}
    )
    assert (embed.status_code, priced.status_code) == (200, 200)
    answer = priced.json()
    assert without_ids(answer) == without_ids(embed.json())
    assert answer["model"] == "openai/text-embedding-3-small"
    assert answer["usage"] == {"prompt_tokens": 6, "total_tokens": 6}

    expected = list_price(answer["usage"], "text-embedding-3-small", "openai")
    assert expected > 0
    record = fetch_record(keel, priced.headers["x-keel-request-id"])
    assert record["provider_model"] == "openai/text-embedding-3-small"
    assert record["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert fetch_record(keel, embed.headers["x-keel-request-id"])["cost_usd"] == 0.0


@pytest.mark.parametrize(
    ("endpoint", "model"),
    [
        ("chat/completions", "mock/gpt-4o-minii"),  # a typo
        ("chat/completions", "mock/gpt-7"),  # a name no book model matches
        ("chat/completions", "mock/tts-1"),  # in the book, but neither chat nor embeddings
        ("chat/completions", "mock/openai/text-embedding-3-small"),  # an embedding model
        ("embeddings", "mock/gpt-4o-mini"),  # a chat model
        ("embeddings", "mock/nobody/text-embedding-3-small"),  # a provider the book lacks
    ],
)
def test_unknown_names_are_404(http: httpx.Client, endpoint: str, model: str) -> None:
    body: dict[str, Any] = {"model": model}
    body |= {"messages": QUESTION} if endpoint == "chat/completions" else {"input": "hello"}
    response = http.post(f"/v1/{endpoint}", json=body)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "not_found_error"
    assert repr(model.removeprefix("mock/")) in error["message"]
    assert "echo" in error["message"] or "embed" in error["message"]


def test_knobs_work_on_priced_models(http: httpx.Client, keel: KeelProcess) -> None:
    url, body = "/v1/chat/completions", {"model": "mock/claude-haiku-4-5", "messages": QUESTION}
    limited = http.post(url, json=body, headers={"x-mock-fail": "429"})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    broken = http.post(
        url,
        json={**body, "stream": True},
        headers={"x-mock-fail": "midstream", "x-mock-chunk-delay-ms": "1"},
    )
    assert broken.status_code == 200
    words = [c for c in broken.text.split("\n\n") if '"content":"' in c]
    assert b'"error"' in broken.content and len(words) < 6  # it broke after half the words
    record = fetch_record(keel, broken.headers["x-keel-request-id"])
    # what was sent before the break is priced too: the words it got
    sent = {"prompt_tokens": record["input_tokens"], "completion_tokens": record["output_tokens"]}
    assert 0 < record["output_tokens"] < 6
    assert record["cost_usd"] == pytest.approx(list_price(sent, "claude-haiku-4-5"), rel=1e-9)


def test_budget_reserves_the_list_price(http: httpx.Client) -> None:
    """A key's budget sees the stand-in's price in its worst case: below it, refused."""
    created = http.post(
        "/api/v1/keys", json={"name": "tight", "budget_usd": 0.001, "budget_period": "total"}
    )
    assert created.status_code == 201, created.text
    key = {"authorization": f"Bearer {created.json()['key']}"}
    body = {"messages": QUESTION, "max_tokens": 1000}
    # gpt-4o: 1,000 output tokens at $10 per 1M is $0.01, ten times the budget
    refused = http.post("/v1/chat/completions", json={**body, "model": "mock/gpt-4o"}, headers=key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"
    # mock/echo is free, and gpt-4o-mini's worst case ($0.0006) fits
    for model in ("mock/echo", "mock/gpt-4o-mini"):
        admitted = http.post("/v1/chat/completions", json={**body, "model": model}, headers=key)
        assert admitted.status_code == 200, (model, admitted.text)


def test_models_list_the_mocks_own_and_the_demos_stand_ins(http: httpx.Client) -> None:
    ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert [i for i in ids if i.startswith("mock/")] == [f"mock/{m}" for m in LISTED_MODELS]
