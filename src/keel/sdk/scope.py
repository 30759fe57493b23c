"""Who and what the work is for: session, user, pipeline, tags and metadata around a block.

`context(...)` puts a `Scope` into the OpenTelemetry context (a private key, not baggage: baggage
is sent to every service the app calls, and user ids must not leak to third parties). A
`ScopeProcessor` on Keel's tracer provider stamps it on every span started inside the block, and
the OpenAI instrumentation forwards it as Keel's request headers when the call goes to Keel.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.util.types import AttributeValue

__all__ = ["Scope", "ScopeProcessor", "context", "current_scope"]

MetadataValue = str | int | float | bool

_KEY = otel_context.create_key("keel.scope")
_MAX_LABEL = 256  # the gateway keeps this much of a customer, pipeline or tag
_MAX_TAGS = 32


def _label(value: object) -> str:
    """One header-safe line: no CR/LF or commas (tags travel comma-separated), at most 256."""
    text = str(value).replace("\r", " ").replace("\n", " ").replace(",", " ").strip()
    return text[:_MAX_LABEL]


@dataclass(frozen=True, slots=True)
class Scope:
    session_id: str | None = None
    user_id: str | None = None
    pipeline: str | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, MetadataValue] = field(default_factory=lambda: MappingProxyType({}))

    def inside(self, outer: Scope | None) -> Scope:
        """This scope nested in `outer`: inner values win, tags and metadata add up."""
        if outer is None:
            return self
        tags = outer.tags + tuple(t for t in self.tags if t not in outer.tags)
        return Scope(
            session_id=self.session_id or outer.session_id,
            user_id=self.user_id or outer.user_id,
            pipeline=self.pipeline or outer.pipeline,
            tags=tags[:_MAX_TAGS],
            metadata=MappingProxyType({**outer.metadata, **self.metadata}),
        )

    def attributes(self) -> dict[str, AttributeValue]:
        """The span attributes of Keel's attribute contract (docs/sdk.md)."""
        attrs: dict[str, AttributeValue] = {}
        if self.session_id:
            attrs["session.id"] = self.session_id
        if self.user_id:
            attrs["user.id"] = self.user_id
        if self.pipeline:
            attrs["keel.pipeline"] = self.pipeline
        if self.tags:
            attrs["keel.tags"] = list(self.tags)
        for key, value in self.metadata.items():
            attrs[f"keel.metadata.{key}"] = value
        return attrs

    def gateway_headers(self) -> dict[str, str]:
        """Keel's request metadata headers, for calls that go through Keel's gateway."""
        headers = {}
        if self.user_id:
            headers["x-keel-customer"] = _label(self.user_id)
        if self.pipeline:
            headers["x-keel-pipeline"] = _label(self.pipeline)
        if self.tags:
            headers["x-keel-tags"] = ",".join(self.tags)
        return headers


def current_scope(ctx: otel_context.Context | None = None) -> Scope | None:
    value = otel_context.get_value(_KEY, ctx)
    return value if isinstance(value, Scope) else None


@contextmanager
def context(
    *,
    session_id: str | None = None,
    user_id: str | None = None,
    pipeline: str | None = None,
    tags: Iterable[str] = (),
    metadata: Mapping[str, MetadataValue] | None = None,
) -> Iterator[Scope]:
    """Stamp session, user (Keel's customer), pipeline, tags and metadata on the spans inside.

    Nested blocks inherit: inner values override, tags and metadata accumulate. Works in
    threads and asyncio tasks the way OpenTelemetry's context does (contextvars).
    """
    clean_tags = tuple(dict.fromkeys(t for t in (_label(t) for t in tags) if t))
    scope = Scope(
        session_id=session_id,
        user_id=user_id,
        pipeline=pipeline,
        tags=clean_tags[:_MAX_TAGS],
        metadata=MappingProxyType(dict(metadata or {})),
    ).inside(current_scope())
    token = otel_context.attach(otel_context.set_value(_KEY, scope))
    try:
        yield scope
    finally:
        otel_context.detach(token)


class ScopeProcessor(SpanProcessor):
    """Copies the current Scope onto each span as it starts."""

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        # An explicit parent context (say, extracted from an incoming request) may lack the
        # scope the code around the call set: fall back to the current one.
        scope = current_scope(parent_context) or current_scope()
        if scope is not None:
            span.set_attributes(scope.attributes())

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
