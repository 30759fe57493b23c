"""The demo's application: a support agent, traced with keel.sdk, that calls Keel's gateway.

Each `Turn` becomes one trace:

```
support-agent (agent)
├── retrieve (retrieval)
│   └── embed-query (embedding) ── gateway span (Keel's record of the call)
├── lookup_order (tool)                                  some turns; a few fail
└── generate-answer (llm) ──────── gateway span          a few fail midstream, then a retry
```

The agent and retrieval spans come from `@observe`; the LLM and embedding spans are the client
spans of gateway calls, sent with `traceparent` (so Keel's span of the call joins the trace) and
`keel.via_gateway` (so the call is counted once, by the gateway's record). The session, customer,
pipeline and tags come from `keel.sdk.context` and go to the gateway as Keel's headers too.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from keel.demo.client import Answer, DemoClient
from keel.demo.scenario import (
    AGENT_CHAT_MODEL,
    AGENT_EMBED_MODEL,
    AGENT_PIPELINE,
    DOCS,
    TOOLS,
    Turn,
    knob_headers,
)
from keel.sdk import tracing
from keel.sdk.observing import observe
from keel.sdk.scope import context, current_scope

__all__ = ["SupportAgent", "TurnResult"]

_PROPAGATOR = TraceContextTextMapPropagator()
_SYSTEM = "You are the support assistant of Keel Cloud. Answer from the sources and cite them."
_DOC_TEXT = dict(DOCS)


class TurnFailed(Exception):
    """The turn ended in an error (recorded on the agent span)."""


@dataclass(slots=True)
class TurnResult:
    """What one turn did: its trace and spans (for scores), its gateway calls and its answer."""

    trace_id: str = ""
    span_ids: dict[str, str] = field(default_factory=dict)  # "llm", "retrieval"
    calls: list[tuple[Answer, bool]] = field(default_factory=list)  # (answer, failure planned)
    answer: str | None = None
    error: str | None = None


def _span_id(span: Span) -> str:
    return f"{span.get_span_context().span_id:016x}"


class _Run:
    """One turn's work; its methods are the spans."""

    def __init__(self, client: DemoClient, turn: Turn, result: TurnResult) -> None:
        self.client = client
        self.turn = turn
        self.result = result

    @observe(name="support-agent", kind="agent")
    async def answer(self, question: str) -> str:
        context = trace.get_current_span().get_span_context()
        self.result.trace_id = f"{context.trace_id:032x}"
        sources = await self.retrieve(question)
        facts = await self.use_tool() if self.turn.tool is not None else None
        return await self.generate(question, sources, facts)

    @observe(name="retrieve", kind="retrieval")
    async def retrieve(self, query: str) -> list[dict[str, str]]:
        self.result.span_ids["retrieval"] = _span_id(trace.get_current_span())
        body = {"model": AGENT_EMBED_MODEL, "input": query}
        knobs = knob_headers(self.turn.embed_latency_ms, 0, None)
        await self._gateway("embedding", "embed-query", "embeddings", body, knobs)
        return [{"id": doc, "text": _DOC_TEXT[doc]} for doc in self.turn.docs]

    async def use_tool(self) -> dict[str, Any]:
        name, arguments, output = TOOLS[self.turn.tool or 0]
        with tracing.get_tracer().start_as_current_span(name) as span:
            span.set_attributes(
                {
                    "keel.span.kind": "tool",
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": name,
                    "input.value": json.dumps(arguments),
                }
            )
            await asyncio.sleep(0.02 + 0.01 * (len(self.turn.question) % 7))
            if self.turn.tool_fails:  # the span records it: an exception event, status ERROR
                raise TurnFailed(f"{name}: the backend answered 503 Service Unavailable")
            span.set_attribute("output.value", json.dumps(output))
            return output

    async def generate(
        self, question: str, sources: list[dict[str, str]], facts: dict[str, Any] | None
    ) -> str:
        messages: list[dict[str, str]] = [{"role": "system", "content": _SYSTEM}]
        for earlier in self.turn.history:
            messages += [
                {"role": "user", "content": earlier},
                {"role": "assistant", "content": earlier},  # what the mock answered: an echo
            ]
        cited = " ".join(f"[{s['id']}] {s['text']}" for s in sources)
        prompt = question + (f"\n\nSources: {cited}" if cited else "\n\nSources: none found.")
        if facts is not None:
            prompt += f"\nFacts: {json.dumps(facts)}"
        messages.append({"role": "user", "content": prompt})
        body: dict[str, Any] = {"model": AGENT_CHAT_MODEL, "messages": messages, "temperature": 0.2}
        if self.turn.llm_fails:  # the stream breaks midstream; the agent tries once more
            failed = {**body, "stream": True, "stream_options": {"include_usage": True}}
            knobs = knob_headers(0, 20, "midstream")
            await self._gateway("llm", "generate-answer", "chat", failed, knobs, planned=True)
        elif self.turn.stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        delay = self.turn.chunk_delay_ms if body.get("stream") else 0
        knobs = knob_headers(self.turn.llm_latency_ms, delay, None)
        answer = await self._gateway("llm", "generate-answer", "chat", body, knobs)
        if not answer.ok:
            raise TurnFailed(f"the model call failed: {answer.error}")
        return answer.text

    async def _gateway(
        self,
        kind: str,
        name: str,
        endpoint: str,
        body: dict[str, Any],
        knobs: dict[str, str] | None = None,
        *,
        planned: bool = False,
    ) -> Answer:
        """A gateway call inside its client span; a failure sets the span's status."""
        with tracing.get_tracer().start_as_current_span(name) as span:
            if kind == "llm":
                self.result.span_ids["llm"] = _span_id(span)
            span.set_attributes(_request_attributes(kind, body))
            scope = current_scope()
            headers = {**(scope.gateway_headers() if scope else {}), **(knobs or {})}
            _PROPAGATOR.inject(headers)
            answer = await self.client.call(endpoint, body, headers)
            self.result.calls.append((answer, planned))
            span.set_attributes(_answer_attributes(answer))
            if not answer.ok:
                span.set_status(Status(StatusCode.ERROR, answer.error or f"HTTP {answer.status}"))
                if not planned and kind == "embedding":
                    raise TurnFailed(f"the embedding call failed: {answer.error}")
            return answer


def _request_attributes(kind: str, body: dict[str, Any]) -> dict[str, AttributeValue]:
    chat = kind == "llm"
    attrs: dict[str, AttributeValue] = {
        "keel.span.kind": kind,
        "gen_ai.operation.name": "chat" if chat else "embeddings",
        "gen_ai.provider.name": "mock",
        "gen_ai.request.model": str(body["model"]),
        "keel.via_gateway": True,
        "input.value": json.dumps(body["messages"] if chat else body["input"]),
    }
    if "temperature" in body:
        attrs["gen_ai.request.temperature"] = float(body["temperature"])
    return attrs


def _answer_attributes(answer: Answer) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {"http.response.status_code": answer.status}
    if answer.model:
        attrs["gen_ai.response.model"] = answer.model
    if answer.text:
        attrs["output.value"] = answer.text
    if answer.ttft_ms is not None:
        attrs["keel.ttft_ms"] = round(answer.ttft_ms, 3)
    usage = answer.usage
    if isinstance(usage.get("prompt_tokens"), int):
        attrs["gen_ai.usage.input_tokens"] = usage["prompt_tokens"]
    if isinstance(usage.get("completion_tokens"), int):
        attrs["gen_ai.usage.output_tokens"] = usage["completion_tokens"]
    return attrs


class SupportAgent:
    """Runs turns; each turn is one trace in its session."""

    def __init__(self, client: DemoClient) -> None:
        self.client = client

    async def handle(self, turn: Turn, session_id: str) -> TurnResult:
        result = TurnResult()
        with context(
            session_id=session_id,
            user_id=turn.customer,
            pipeline=AGENT_PIPELINE,
            tags=turn.tags,
            metadata={"turn": turn.turn},
        ):
            try:
                result.answer = await _Run(self.client, turn, result).answer(turn.question)
            except TurnFailed as exc:
                result.error = str(exc)
        return result
