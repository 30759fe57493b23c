"""The span record: one unit of work in a trace, ingested over OTLP or made by the Keel SDK.

Gateway calls have their own record (`RequestRecord`, which carries trace_id/span_id/parent
span id); the trace view shows both as one tree. A span's natural key is (trace_id, span_id):
an exporter that re-sends a batch after a timeout does not duplicate anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["SPAN_KINDS", "SpanRecord"]

# What Keel calls the kinds of work a span stands for (OpenInference's span kinds, lower case,
# plus "span" for anything unrecognised).
SPAN_KINDS = frozenset(
    {
        "llm",
        "embedding",
        "chain",
        "tool",
        "retrieval",
        "reranker",
        "agent",
        "guardrail",
        "evaluator",
        "span",
    }
)


@dataclass(slots=True)
class SpanRecord:
    trace_id: str  # 32 lower-case hex digits
    span_id: str  # 16 lower-case hex digits
    name: str
    start_time: float  # unix seconds
    end_time: float
    parent_span_id: str | None = None
    kind: str = "span"  # one of SPAN_KINDS
    service: str | None = None  # the resource's service.name
    status: str = "unset"  # "ok" | "error" | "unset"
    error: str | None = None  # the status message or exception message of a failed span
    # LLM and embedding spans
    provider: str | None = None
    model: str | None = None  # the requested model
    response_model: str | None = None  # the model that answered
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None  # None when unknown, never a made-up 0
    cost_estimated: bool = False  # Keel computed it from usage and the bundled price book
    ttft_ms: float | None = None
    # who and what it was for
    customer: str | None = None  # user.id / enduser.id
    session_id: str | None = None  # session.id / gen_ai.conversation.id
    pipeline: str | None = None
    tags: list[str] = field(default_factory=list)
    prompt_name: str | None = None
    prompt_version: int | None = None
    # False for an application's span of a call that went through Keel's gateway: the
    # gateway's own record counts it in the analytics, once.
    counted: bool = True
    input: str | None = None  # payloads, capped like request payloads
    output: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)  # everything not mapped above
    events: list[dict[str, Any]] = field(default_factory=list)  # [{name, time, attributes}]

    @property
    def duration_ms(self) -> float:
        return max(0.0, (self.end_time - self.start_time) * 1000.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpanRecord:
        try:
            return cls(**data)
        except TypeError:  # logged by another version of Keel: keep the fields this one knows
            return cls(**{k: v for k, v in data.items() if k in _FIELD_NAMES})


_FIELD_NAMES = frozenset(f.name for f in fields(SpanRecord))
