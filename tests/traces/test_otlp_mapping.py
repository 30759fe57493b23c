"""Attribute mapping: GenAI (new and old names), OpenInference, keel.*, cost, errors, caps."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from keel.costs.pricing import Pricer
from keel.providers.base import Usage
from keel.records.span import SpanRecord
from keel.storage.spans_repo import row_dict, span_row
from keel.traces.mapping import MappingOptions, to_record, to_row
from keel.traces.otlp import TRUNCATED_MARKER, Limits, OtlpEvent, OtlpSpan, decode_protobuf
from tests.traces.otlp_helpers import CHILD, ROOT, T0, TRACE, pb_export, pb_span

PRICER = Pricer()
OPTS = MappingOptions(pricer=PRICER)
START = T0 / 1e9


def span(attributes: dict[str, Any], **fields: Any) -> OtlpSpan:
    base: dict[str, Any] = {
        "trace_id": TRACE.hex(),
        "span_id": CHILD.hex(),
        "parent_span_id": ROOT.hex(),
        "name": "chat",
        "kind": 3,
        "start_ns": T0,
        "end_ns": T0 + 1_500_000_000,
        "status_code": 1,
        "status_message": "",
        "attributes": dict(attributes),
        "scope": ("lib", "2.0"),
    }
    return OtlpSpan(**{**base, **fields})


def price(model: str, provider: str | None, **usage: int) -> float | None:
    at = datetime.fromtimestamp(START, UTC)
    return PRICER.cost(Usage(**usage), model=model, provider_id=provider, at=at).usd


def record(**fields: Any) -> SpanRecord:
    base: dict[str, Any] = {
        "trace_id": TRACE.hex(),
        "span_id": CHILD.hex(),
        "parent_span_id": ROOT.hex(),
        "name": "chat",
        "start_time": START,
        "end_time": START + 1.5,
        "status": "ok",
    }
    return SpanRecord(**{**base, **fields})


def test_genai_new_names() -> None:
    attributes = {
        "service.name": "support-bot",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 1024,
        "gen_ai.usage.reasoning.output_tokens": 100,
        "gen_ai.server.time_to_first_token": 0.25,
        "gen_ai.conversation.id": "conv-1",
        "enduser.id": "acme",
        "gen_ai.input.messages": [{"role": "user", "content": "hi"}],
        "gen_ai.output.messages": '[{"role":"assistant","content":"hello"}]',
        "gen_ai.request.temperature": 0.2,
    }
    cost = price(
        "gpt-4o-mini-2024-07-18",
        "openai",
        input_tokens=1200,
        output_tokens=300,
        cached_tokens=1024,
        reasoning_tokens=100,
    )
    assert cost is not None and cost > 0
    assert to_record(span(attributes), OPTS) == record(
        kind="llm",
        service="support-bot",
        provider="openai",
        model="gpt-4o-mini",
        response_model="gpt-4o-mini-2024-07-18",
        input_tokens=1200,
        output_tokens=300,
        cached_tokens=1024,
        reasoning_tokens=100,
        cost_usd=cost,
        cost_estimated=False,
        ttft_ms=250.0,
        customer="acme",
        session_id="conv-1",
        input='[{"role":"user","content":"hi"}]',
        output='[{"role":"assistant","content":"hello"}]',
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.temperature": 0.2,
            "otel.scope.name": "lib",
            "otel.scope.version": "2.0",
            "otel.span.kind": "client",
        },
    )


def test_genai_old_names_and_event_payloads() -> None:
    attributes = {
        "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-3-5-haiku-20241022",
        "gen_ai.usage.prompt_tokens": 500,
        "gen_ai.usage.completion_tokens": 50,
        "user.id": "u-7",
        "session.id": "s-1",
    }
    events = [
        OtlpEvent("gen_ai.content.prompt", T0 + 1000, {"gen_ai.prompt": "question"}),
        OtlpEvent("gen_ai.content.completion", T0 + 2000, {"gen_ai.completion": "answer"}),
    ]
    out = to_record(span(attributes, kind=1, events=events), OPTS)
    assert out == record(
        kind="llm",  # a model and no kind: an LLM call
        provider="anthropic",
        model="claude-3-5-haiku-20241022",
        input_tokens=500,
        output_tokens=50,
        cost_usd=price(
            "claude-3-5-haiku-20241022", "anthropic", input_tokens=500, output_tokens=50
        ),
        customer="u-7",
        session_id="s-1",
        input="question",
        output="answer",
        attributes={"otel.scope.name": "lib", "otel.scope.version": "2.0"},
        events=[
            {"name": e.name, "time": e.time_ns / 1e9, "attributes": e.attributes} for e in events
        ],
    )
    assert out.cost_usd is not None and out.cost_usd > 0


def test_openinference() -> None:
    attributes = {
        "openinference.span.kind": "LLM",
        "llm.provider": "openai",
        "llm.model_name": "gpt-4o",
        "llm.token_count.prompt": 100,
        "llm.token_count.completion": 20,
        "llm.token_count.prompt_details.cache_read": 0,
        "llm.token_count.completion_details.reasoning": 0,
        "llm.cost.total": 0.125,
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "second",
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "first",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "reply",
        "llm.invocation_parameters": '{"temperature": 0}',
    }
    assert to_record(span(attributes, kind=0, scope=("", "")), OPTS) == record(
        kind="llm",
        provider="openai",
        model="gpt-4o",
        input_tokens=100,
        output_tokens=20,
        cached_tokens=0,
        reasoning_tokens=0,
        cost_usd=0.125,  # the span's own cost wins
        input='[{"role":"system","content":"first"},{"role":"user","content":"second"}]',
        output='[{"role":"assistant","content":"reply"}]',
        attributes={"llm.invocation_parameters": '{"temperature": 0}'},
    )


@pytest.mark.parametrize(
    ("attributes", "kind"),
    [
        ({"openinference.span.kind": "retriever"}, "retrieval"),
        ({"openinference.span.kind": "CHAIN"}, "chain"),
        ({"openinference.span.kind": "NOT_A_KIND"}, "span"),
        ({"keel.span.kind": "guardrail", "openinference.span.kind": "LLM"}, "guardrail"),
        ({"gen_ai.operation.name": "embeddings"}, "embedding"),
        ({"gen_ai.operation.name": "execute_tool"}, "tool"),
        ({"gen_ai.operation.name": "invoke_agent"}, "agent"),
        ({"gen_ai.operation.name": "generate_content"}, "llm"),
        ({"llm.model_name": "m"}, "llm"),
        ({}, "span"),
    ],
)
def test_kinds(attributes: dict[str, Any], kind: str) -> None:
    assert to_record(span(attributes), OPTS).kind == kind


def test_keel_attributes_errors_and_uncounted() -> None:
    attributes = {
        "keel.span.kind": "llm",
        "gen_ai.request.model": "gpt-4o",
        "keel.cost_usd": 0.5,
        "keel.ttft_ms": 120,
        "keel.customer": "cust",
        "user.id": "other",
        "keel.pipeline": "rag",
        "keel.tags": "a, b,,c",
        "keel.prompt.name": "summarize",
        "keel.prompt.version": "3",
        "keel.via_gateway": True,
    }
    events = [
        OtlpEvent(
            "exception",
            T0,
            {"exception.type": "RateLimitError", "exception.message": "slow down"},
        )
    ]
    out = to_record(span(attributes, status_code=2, events=events), OPTS)
    assert (out.status, out.error, out.counted) == ("error", "RateLimitError: slow down", False)
    assert (out.cost_usd, out.ttft_ms, out.customer, out.pipeline, out.tags) == (
        0.5,
        120.0,
        "cust",
        "rag",
        ["a", "b", "c"],
    )
    assert (out.prompt_name, out.prompt_version) == ("summarize", 3)
    assert out.attributes["user.id"] == "other"  # a second customer value disagrees: kept
    message = to_record(span({}, status_code=2, status_message="bad", events=events), OPTS)
    assert message.error == "bad"  # the status message wins over the exception


def test_the_keys_customer_fills_spans_without_one() -> None:
    opts = MappingOptions(pricer=PRICER, customer="key-customer")
    assert to_record(span({}), opts).customer == "key-customer"
    assert to_record(span({"user.id": "own"}), opts).customer == "own"


def test_wrong_types_stay_attributes_and_values_fit_columns() -> None:
    attributes = {
        "gen_ai.usage.input_tokens": -5,
        "gen_ai.usage.output_tokens": 2**40,  # past the column: not mapped
        "gen_ai.request.model": "m" * 1000,
        "gen_ai.provider.name": ["not", "text"],
        "session.id": "nul\0inside",
        "keel.via_gateway": "maybe",
    }
    out = to_record(span(attributes, name="n" * 2000), OPTS)
    assert (out.input_tokens, out.output_tokens, out.provider) == (None, None, None)
    assert out.model == "m" * 256 and out.name == "n" * 512
    assert out.session_id == "nul\ufffdinside"
    assert out.counted is True and out.cost_usd is None
    assert {
        "gen_ai.usage.input_tokens": -5,
        "gen_ai.usage.output_tokens": 2**40,
        "gen_ai.provider.name": ["not", "text"],
        "keel.via_gateway": "maybe",
    }.items() <= out.attributes.items()


def test_odd_values_stay_attributes_and_never_fail() -> None:
    # "²" is a digit to str.isdigit but not to int(); a list is not hashable: both once failed
    # the whole export with a 500.
    attributes = {
        "gen_ai.usage.input_tokens": "²",
        "keel.span.kind": ["llm"],
        "llm.input_messages.².message.role": "user",
        "llm.input_messages.0.message.role": "system",
    }
    out = to_record(span(attributes), OPTS)
    assert (out.input_tokens, out.kind, out.input) == (None, "span", '[{"role":"system"}]')
    assert out.attributes == {
        "gen_ai.usage.input_tokens": "²",
        "keel.span.kind": ["llm"],
        "llm.input_messages.².message.role": "user",
        "otel.scope.name": "lib",
        "otel.scope.version": "2.0",
        "otel.span.kind": "client",
    }


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0), (2, 0, 1)])
def test_the_best_name_wins_whatever_the_order(order: tuple[int, ...]) -> None:
    # provider: gen_ai.provider.name (rank 0) beats gen_ai.system (1) and llm.provider (2);
    # a name repeating the winner's value goes, one that disagrees stays.
    names = [
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.system", "azure"),
        ("llm.provider", "openai"),
    ]
    out = to_record(span(dict(names[i] for i in order)), OPTS)
    assert out.provider == "openai"
    assert {k: v for k, v in out.attributes.items() if not k.startswith("otel.")} == {
        "gen_ai.system": "azure"
    }


def test_no_price_for_unknown_models_or_non_llm_spans() -> None:
    unknown = {"gen_ai.request.model": "made-up-model-xyz", "gen_ai.usage.input_tokens": 10}
    assert to_record(span(unknown), OPTS).cost_usd is None
    chain = {"openinference.span.kind": "CHAIN", "gen_ai.usage.input_tokens": 10}
    assert to_record(span(chain), OPTS).cost_usd is None
    free = {"gen_ai.provider.name": "mock", "gen_ai.request.model": "echo"}
    assert to_record(span({**free, "gen_ai.usage.output_tokens": 3}), OPTS).cost_usd == 0.0


def test_payload_caps_and_payloads_off() -> None:
    attributes = {"input.value": "q" * 100, "output.value": "a" * 10}
    capped = to_record(span(attributes), MappingOptions(pricer=PRICER, payload_max=50))
    assert (capped.input, capped.output) == ("q" * 50 + TRUNCATED_MARKER, "a" * 10)
    events = [OtlpEvent("gen_ai.content.prompt", T0, {"gen_ai.prompt": "secret"})]
    off = MappingOptions(pricer=PRICER, store_payloads=False)
    out = to_record(
        span({**attributes, "llm.input_messages.0.message.content": "x"}, events=events), off
    )
    assert (out.input, out.output) == (None, None)
    assert "input.value" not in out.attributes
    assert not any(k.startswith("llm.input_messages") for k in out.attributes)
    assert out.events == [{"name": "gen_ai.content.prompt", "time": START, "attributes": {}}]


def test_protobuf_to_record_end_to_end() -> None:
    request = pb_export(
        [pb_span("root", attributes={"keel.span.kind": "agent"}, kind=2)],
        resource={"service.name": "svc", "deployment.environment": "prod"},
    )
    decoded = decode_protobuf(request.SerializeToString(), Limits())
    (out,) = [to_record(s, OPTS) for s in decoded.spans]
    assert out == SpanRecord(
        trace_id=TRACE.hex(),
        span_id=ROOT.hex(),
        name="root",
        start_time=START,
        end_time=(T0 + 250_000_000) / 1e9,
        kind="agent",
        service="svc",
        attributes={
            "deployment.environment": "prod",
            "otel.scope.name": "tests",
            "otel.scope.version": "1.0",
            "otel.span.kind": "server",
        },
    )


# The ingest maps straight to rows (to_row); the row must be the record's (to_record, span_row).
_ROW_CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": 412,
            "gen_ai.usage.output_tokens": 57,
            "gen_ai.usage.cache_read.input_tokens": 128,
            "gen_ai.server.time_to_first_token": 0.25,
            "session.id": "s-1",
            "keel.tags": ["a", "b"],
            "input.value": "hi",
            "output.value": "hello",
            "server.port": 443,
        },
        {},
    ),
    (
        {
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude-3-5-haiku-20241022",
            "gen_ai.usage.prompt_tokens": 380,
            "gen_ai.usage.completion_tokens": 64,
            "keel.via_gateway": True,
            "keel.prompt.name": "support",
            "keel.prompt.version": 3,
        },
        {"kind": 3, "events": [OtlpEvent("gen_ai.content.prompt", T0, {"gen_ai.prompt": "p"})]},
    ),
    (
        {
            "openinference.span.kind": "LLM",
            "llm.provider": "openai",
            "llm.model_name": "gpt-4o",
            "llm.token_count.prompt": 520,
            "llm.token_count.completion": 48,
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": "hi",
            "llm.output_messages.0.message.content": "hello",
            "keel.cost_usd": 0.5,
        },
        {"status_code": 2, "status_message": "boom", "links": [{"trace_id": None}]},
    ),
    ({"openinference.span.kind": "RETRIEVER", "retrieval.top_k": 4}, {"name": "n\0" * 300}),
    ({}, {"kind": 0, "scope": ("", ""), "parent_span_id": None, "end_ns": T0 - 1}),
]


@pytest.mark.parametrize(("attributes", "fields"), _ROW_CASES)
@pytest.mark.parametrize("store_payloads", [True, False])
def test_the_ingest_row_is_the_records_row(
    attributes: dict[str, Any], fields: dict[str, Any], store_payloads: bool
) -> None:
    opts = MappingOptions(pricer=PRICER, store_payloads=store_payloads, customer="key-customer")
    row = to_row(span(attributes, **copy.deepcopy(fields)), opts)
    record = to_record(span(attributes, **copy.deepcopy(fields)), opts)
    assert row == span_row(record)
    assert row_dict(row) == {**record.to_dict(), "duration_ms": record.duration_ms}
