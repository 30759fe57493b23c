"""One trace across an application and Keel's gateway, end to end with a real `keel serve`.

The app (this test process) uses keel.sdk.init(url=keel), @observe, context() and the official
openai SDK pointed at Keel's gateway (model mock/echo). After flush(), Keel's trace API shows
the app's spans (exported over OTLP/HTTP) and the gateway's own spans in one tree: each gateway
span is the child of the app's LLM span that made the call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from opentelemetry import trace

import keel.sdk
from keel.sdk import context, observe
from tests.servers import KeelProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ADMIN_KEY = "keel-admin-sdk-e2e-0123456789"


@pytest.fixture(scope="module")
def keel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    proc = KeelProcess(tmp_path_factory.mktemp("keel"), {}, env={"KEEL_ADMIN_KEY": ADMIN_KEY})
    proc.start(timeout=60)  # a loaded 2-core CI machine can take a while to import the server
    try:
        yield proc
    finally:
        proc.stop()


def get_trace(keel: KeelProcess, trace_id: str, spans: int, timeout: float = 20) -> dict[str, Any]:
    """The trace once `spans` spans are in it (the writer batches; exports land in moments)."""
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        resp = httpx.get(f"{keel.url}/api/v1/traces/{trace_id}", headers=headers, timeout=5)
        last = resp.json()
        if resp.status_code == 200 and len(last["spans"]) >= spans:
            return dict(last)
        time.sleep(0.1)
    raise AssertionError(f"trace {trace_id} never had {spans} spans; last answer: {last}")


@observe(kind="retrieval")
def retrieve(question: str) -> list[str]:
    return [f"doc about {question}"]


@observe(name="answer_ticket", kind="agent")
def answer_ticket(client: openai.OpenAI, question: str) -> dict[str, Any]:
    trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
    docs = retrieve(question)
    reply = client.chat.completions.create(
        model="mock/echo", messages=[{"role": "user", "content": f"{docs[0]} please"}]
    )
    stream = client.chat.completions.create(
        model="mock/echo", messages=[{"role": "user", "content": "stream it back"}], stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    return {"trace_id": trace_id, "reply": reply.choices[0].message.content, "streamed": streamed}


def test_one_trace_across_app_and_gateway(keel_server: KeelProcess) -> None:
    keel.sdk.init(keel_server.url, ADMIN_KEY, service_name="support-bot", set_global=False)
    try:
        client = openai.OpenAI(
            base_url=f"{keel_server.url}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=10
        )
        with client, context(session_id="sess-1", user_id="acme", pipeline="support", tags=["e2e"]):
            result = answer_ticket(client, "refunds")
        assert keel.sdk.flush(10)
    finally:
        keel.sdk.shutdown()
    assert result["reply"] == "doc about refunds please"
    assert result["streamed"] == "stream it back"

    found = get_trace(keel_server, result["trace_id"], spans=6)
    spans = found["spans"]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    root = by_name["answer_ticket"][0]
    (retrieval,) = by_name["retrieve"]
    app_llm = by_name["chat mock/echo"]
    gateway = [s for s in spans if s["source"] == "gateway"]
    assert len(spans) == 6 and len(app_llm) == 2 and len(gateway) == 2

    # the app's tree
    assert root["parent_span_id"] is None
    assert retrieval["parent_span_id"] == root["span_id"]
    assert [s["parent_span_id"] for s in app_llm] == [root["span_id"]] * 2
    # the gateway's spans hang under the app's LLM spans that made the calls, one each
    assert sorted(g["parent_span_id"] for g in gateway) == sorted(s["span_id"] for s in app_llm)
    assert {s["trace_id"] for s in spans} == {result["trace_id"]}

    app = [root, retrieval, *app_llm]
    assert [(s["source"], s["kind"], s["service"]) for s in app] == [
        ("otlp", "agent", "support-bot"),
        ("otlp", "retrieval", "support-bot"),
        ("otlp", "llm", "support-bot"),
        ("otlp", "llm", "support-bot"),
    ]
    who = {(s["session_id"], s["customer"], s["pipeline"], tuple(s["tags"])) for s in app}
    assert who == {("sess-1", "acme", "support", ("e2e",))}
    for llm in app_llm:  # keel.via_gateway: the gateway's record counts the call, not this span
        assert (llm["model"], llm["provider"], llm["counted"]) == ("mock/echo", "openai", False)
        assert llm["attributes"]["gen_ai.operation.name"] == "chat"
    # the gateway got the customer, pipeline and tags from the SDK's headers
    for g in gateway:
        assert (g["customer"], g["pipeline"], g["tags"], g["model"]) == (
            "acme",
            "support",
            ["e2e"],
            "mock/echo",
        )
    plain, streamed = sorted(app_llm, key=lambda s: s["ttft_ms"] is not None)
    assert (plain["input_tokens"], plain["output_tokens"], plain["ttft_ms"]) == (4, 4, None)
    assert streamed["ttft_ms"] > 0  # no usage asked for in the stream: tokens unknown here
    assert streamed["input_tokens"] is None
