"""Observability data for the UI tests, written through Keel's own code paths.

Request records and spans go through `write_batch` (the record pipeline's writer: rows and
rollups in one transaction), scores through `keel.scores.store`, alert rules and events through
`keel.alerts.store`. Every free-text field an attacker could control (model output, span
names, attributes, customers, score comments, alert messages) carries markup that must show as
text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from keel.alerts import store as alert_store
from keel.records.model import RequestRecord, new_id
from keel.records.span import SpanRecord
from keel.scores import store as score_store
from keel.storage.batch import write_batch
from keel.storage.database import Database

XSS = "<script>alert('xss')</script>"
XSS_IMG = "<img src=x onerror=alert(1)>"
WEBHOOK_SECRET = "T000-secret-token-0123456789"

TRACE = "0af7651916cd43dd8448eb211c80319c"  # the nested trace
ROOT = "b7ad6b7169203331"
RETRIEVE = "c1d2e3f405060708"
LLM = "00f067aa0ba902b7"
TOOL = "1122334455667788"
GATEWAY = "a1b2c3d4e5f60718"  # the gateway request under the LLM span
TRACE2 = "4bf92f3577b34da6a3ce929d0e0e4736"  # a second trace of the same session
SESSION = "sess-42"


@dataclass(frozen=True)
class Seeded:
    gateway_request_id: str
    failed_request_id: str
    now: float


def _requests(now: float) -> list[RequestRecord]:
    gateway = RequestRecord(
        id=new_id(),
        trace_id=TRACE,
        span_id=GATEWAY,
        parent_span_id=LLM,
        created_at=now - 120.3,
        endpoint="chat.completions",
        model="mock/echo",
        provider="mock",
        provider_model="mock/echo",
        status_code=200,
        latency_ms=412.0,
        ttft_ms=80.0,
        input_tokens=120,
        output_tokens=48,
        cost_usd=0.0042,
        customer="acme",
        pipeline="support-bot",
        tags=["demo"],
        prompt_name="summarize",
        prompt_version=2,
        fallbacks=[
            {
                "provider": "openai",
                "model": "gpt-4o-mini",
                "outcome": "error",
                "status": 503,
                "error": f"upstream said {XSS}",
                "latency_ms": 31.0,
            },
            {
                "provider": "mock",
                "model": "mock/echo",
                "outcome": "ok",
                "status": 200,
                "error": None,
                "latency_ms": 380.0,
            },
        ],
        cache_status="miss",
        request_body='{"model": "mock/echo", "messages": [{"role": "user", "content": '
        "\"Say <script>alert('xss')</script>\"}]}",
        response_body=f'{{"choices": [{{"message": {{"content": "Sure: {XSS_IMG}"}}}}]}}',
    )
    failed = RequestRecord(
        id=new_id(),
        trace_id="7d1f0e6c2a4b4c3e9a8b7c6d5e4f3a2b",
        span_id="0102030405060708",
        created_at=now - 300.0,
        endpoint="chat.completions",
        model="gpt-4o-mini",
        provider="openai",
        status_code=502,
        error=f"upstream failed: {XSS}",
        error_type="upstream_error",
        latency_ms=95.0,
        customer=XSS,
        pipeline="batch",
    )
    cached = RequestRecord(
        id=new_id(),
        trace_id="9e8d7c6b5a4f4e3d2c1b0a9f8e7d6c5b",
        span_id="0807060504030201",
        created_at=now - 1800.0,
        endpoint="chat.completions",
        model="mock/echo",
        provider="mock",
        status_code=200,
        latency_ms=2.0,
        input_tokens=10,
        output_tokens=5,
        cost_usd=0.0,
        cost_saved_usd=0.001,
        cache_status="hit",
        customer="globex",
        pipeline="support-bot",
    )
    return [gateway, failed, cached]


def _spans(now: float) -> list[SpanRecord]:
    t0 = now - 121.0
    common = {"trace_id": TRACE, "session_id": SESSION, "customer": "acme", "service": "bot"}
    return [
        SpanRecord(
            span_id=ROOT,
            name="agent run",
            start_time=t0,
            end_time=t0 + 2.0,
            kind="agent",
            status="ok",
            pipeline="support-bot",
            input="How do I reset my password?",
            output=f"Answer with {XSS}",
            **common,
        ),
        SpanRecord(
            span_id=RETRIEVE,
            parent_span_id=ROOT,
            name="search docs",
            start_time=t0 + 0.05,
            end_time=t0 + 0.3,
            kind="retrieval",
            status="ok",
            attributes={"retrieval.documents.0.document.content": XSS_IMG},
            **common,
        ),
        SpanRecord(
            span_id=LLM,
            parent_span_id=ROOT,
            name=f"chat {XSS}",
            start_time=t0 + 0.35,
            end_time=t0 + 1.2,
            kind="llm",
            status="ok",
            provider="openai",
            model="mock/echo",
            response_model="mock/echo",
            input_tokens=120,
            output_tokens=48,
            cost_usd=0.0042,
            ttft_ms=80.0,
            counted=False,  # through the gateway: its request record counts the call
            input=f"Say {XSS}",
            output=f"Sure: {XSS_IMG}",
            attributes={"llm.temperature": 0.2, f"note{XSS}": XSS_IMG},
            events=[{"name": f"retry {XSS}", "time": t0 + 0.4, "attributes": {"why": XSS_IMG}}],
            **common,
        ),
        SpanRecord(
            span_id=TOOL,
            parent_span_id=ROOT,
            name="lookup_account",
            start_time=t0 + 1.25,
            end_time=t0 + 1.9,
            kind="tool",
            status="error",
            error=f"account service timed out {XSS}",
            **common,
        ),
        SpanRecord(
            trace_id=TRACE2,
            span_id="2233445566778899",
            name="follow-up",
            start_time=now - 60.0,
            end_time=now - 59.5,
            kind="llm",
            status="ok",
            model="mock/echo",
            input_tokens=30,
            output_tokens=12,
            cost_usd=0.001,
            session_id=SESSION,
            customer="acme",
        ),
    ]


async def seed(database_url: str) -> Seeded:
    """Write the observability fixtures into the database at `database_url`."""
    now = time.time()
    db = await Database.open(database_url)
    try:
        requests = _requests(now)
        await write_batch(db, [*requests, *_spans(now)])
        await score_store.add_score(
            db,
            trace_id=TRACE,
            span_id=LLM,
            name="helpfulness",
            data_type="numeric",
            value=0.75,
            source="human",
            comment=f"fine {XSS}",
        )
        await score_store.add_score(
            db, trace_id=TRACE, name="verdict", data_type="categorical", label=XSS, source="model"
        )
        rule = await alert_store.create_rule(
            db,
            name="error-rate-high",
            metric="error_rate",
            window_s=300,
            comparator=">",
            threshold=0.1,
            channels=[
                {"type": "slack", "url": f"https://hooks.slack.example/services/{WEBHOOK_SECRET}"}
            ],
        )
        await alert_store.add_event(
            db,
            rule_id=rule.id,
            rule_name=rule.name,
            kind="firing",
            at=now - 600,
            value=0.5,
            threshold=0.1,
            message="error_rate 0.5 > 0.1 over 300 s",
            deliveries=[
                {"channel": "slack", "status": "failed", "attempts": 3, "error": "HTTP 500"}
            ],
        )
        await alert_store.add_event(
            db,
            rule_id=None,
            rule_name="budget acme",
            kind="budget_threshold",
            at=now - 30,
            value=0.8,
            threshold=0.8,
            message=f"customer {XSS} used 80% of its budget",
            deliveries=[
                {"channel": "webhook", "status": "delivered", "attempts": 1, "error": None}
            ],
        )
    finally:
        await db.close()
    return Seeded(gateway_request_id=requests[0].id, failed_request_id=requests[1].id, now=now)


async def seed_pages(database_url: str, customer: str, count: int) -> None:
    """`count` one-request traces for `customer`, a second apart: enough to page through."""
    now = time.time()
    db = await Database.open(database_url)
    try:
        records = [
            RequestRecord(
                id=new_id(),
                trace_id=f"{i + 1:032x}",
                span_id=f"{i + 1:016x}",
                created_at=now - 3600 - i,
                endpoint="chat.completions",
                model="mock/echo",
                provider="mock",
                status_code=200,
                latency_ms=5.0,
                customer=customer,
            )
            for i in range(count)
        ]
        await write_batch(db, records)
    finally:
        await db.close()
