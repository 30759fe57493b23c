"""The provider protocol: what every adapter (built-in or plugin) implements.

Keel speaks OpenAI's chat-completions format inside. An adapter receives the client's request
body as a dict in that format (with `model` already set to the provider's model name), calls its
upstream, and answers in that format: whole JSON bytes for a plain call, ready-to-send SSE frames
for a stream. Usage comes back separately so the gateway can price and record it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from keel.config import ProviderConfig
from keel.providers.client import Timeouts, UpstreamClient

__all__ = [
    "CallContext",
    "ChatResult",
    "ChatStream",
    "EmbeddingResult",
    "Provider",
    "ProviderFactory",
    "UpstreamError",
    "Usage",
]


@dataclass(slots=True)
class Usage:
    """Token counts as the provider reported them (None where it did not)."""

    input_tokens: int | None = None  # all prompt tokens, cached ones included
    output_tokens: int | None = None  # all completion tokens, reasoning ones included
    cached_tokens: int | None = None  # prompt tokens read from the provider's cache
    cache_write_tokens: int | None = None  # prompt tokens written to the provider's cache
    reasoning_tokens: int | None = None  # completion tokens spent on reasoning
    estimated: bool = False  # True when Keel counted the tokens itself


class UpstreamError(Exception):
    """A provider call that failed; `status` is what Keel answers the client with.

    400-class statuses from the upstream that are the client's fault (400, 401 from a bad
    provider key is NOT the client's fault: the adapter maps it to 502) pass through;
    unreachable or broken upstreams become 502, timeouts 504, upstream rate limits 429.
    `message` is for a person and must never contain a credential.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "upstream_error",
        code: str | None = None,
        upstream_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.upstream_status = upstream_status
        self.retry_after = retry_after


@dataclass(slots=True)
class CallContext:
    """What an adapter needs for one call besides the body."""

    session: UpstreamClient
    timeout: Timeouts
    request_id: str
    # headers to forward upstream (for example `traceparent`); never the client's credentials
    forward_headers: Mapping[str, str] = field(default_factory=dict)
    # headers of the client's request, lower-cased; the mock provider reads its knobs here
    client_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ChatResult:
    body: bytes  # OpenAI chat.completion JSON, ready to send to the client
    usage: Usage | None  # None when the provider reported none
    served_model: str | None  # the model the provider says answered
    output_text: str = ""  # concatenated message text, for offline token estimates


@runtime_checkable
class ChatStream(Protocol):
    """An open upstream stream. Created only once the upstream answered successfully.

    Iterating yields OpenAI `chat.completion.chunk` SSE frames (`data: {...}\\n\\n`), ending with
    `data: [DONE]\\n\\n`. A failure while iterating raises UpstreamError. After iteration (or
    `aclose`) `usage`, `served_model` and `output_text` hold what was seen.
    """

    usage: Usage | None
    served_model: str | None
    output_text: str

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None:
        """Release the upstream connection (called on completion and on client disconnect)."""


@dataclass(slots=True)
class EmbeddingResult:
    body: bytes  # OpenAI embedding list JSON
    usage: Usage | None
    served_model: str | None


@runtime_checkable
class Provider(Protocol):
    """One configured provider instance."""

    config: ProviderConfig

    async def chat(self, body: dict[str, Any], ctx: CallContext) -> ChatResult: ...

    async def stream_chat(self, body: dict[str, Any], ctx: CallContext) -> ChatStream:
        """Open the stream; raise UpstreamError if the upstream fails before its first event."""
        ...

    async def embeddings(self, body: dict[str, Any], ctx: CallContext) -> EmbeddingResult: ...

    def price_provider_id(self) -> str | None:
        """The provider id for price look-ups (`openai`, `anthropic`, `google`), None if unknown."""
        ...


class ProviderFactory(Protocol):
    def __call__(self, config: ProviderConfig) -> Provider: ...
