"""The request record: what Keel keeps about every gateway call, successful or not."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["RequestRecord", "new_id"]

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
# Two base32 digits per lookup: an id is made on every request, and 26 single-digit steps in
# Python cost more than the rest of it.
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)


def new_id() -> str:
    """A 26-character time-ordered id (ULID layout, lower-case Crockford base32).

    Keel makes its own ids: a record never depends on an upstream id that may be missing.
    """
    # 80 random bits per millisecond: collisions are out of reach; no secrecy is needed.
    value = (time.time_ns() // 1_000_000) << 80 | random.getrandbits(80)
    # 128 bits: a top digit of 3 bits, twelve pairs of 10 bits, a last digit of 5 bits.
    pairs = _PAIRS
    middle = [pairs[(value >> shift) & 1023] for shift in range(115, 4, -10)]
    return _CROCKFORD[value >> 125] + "".join(middle) + _CROCKFORD[value & 31]


@dataclass(slots=True)
class RequestRecord:
    id: str
    trace_id: str
    span_id: str
    created_at: float  # unix seconds when Keel received the request
    endpoint: str  # "chat.completions" | "embeddings"
    model: str | None  # the model name the client asked for
    parent_span_id: str | None = None
    provider: str | None = None  # the configured provider instance that served it
    provider_model: str | None = None  # the model the provider says answered
    status_code: int = 0
    error: str | None = None  # a person-readable message; never a credential
    error_type: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    tokens_estimated: bool = False
    cost_usd: float | None = None  # None when the price is unknown, never a made-up 0
    cost_estimated: bool = False
    customer: str | None = None
    pipeline: str | None = None
    tags: list[str] = field(default_factory=list)
    stream: bool = False
    key_id: str | None = None
    prompt_name: str | None = None  # the registry prompt the request referenced, if any
    prompt_version: int | None = None
    # the attempts along the routing plan, when anything but the first target answered
    fallbacks: list[dict[str, Any]] | None = None
    cache_status: str | None = None  # hit | semantic-hit | miss | bypass (None: no cache)
    cost_saved_usd: float | None = None  # what a cache hit saved
    trimmed_messages: int | None = None  # messages dropped by context trimming
    deprecated_model: str | None = None  # the deprecated model the client asked for
    # False for the stub written when a stream starts; the final record replaces it. A stub that
    # is never replaced (Keel was killed mid-stream) stays as the record of an interrupted call.
    final: bool = True
    request_body: str | None = None
    response_body: str | None = None
    payload_truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        try:
            return cls(**data)  # what this version of Keel logged: exactly its fields
        except TypeError:  # logged by another version: keep the fields this one knows
            names = _FIELD_NAMES
            return cls(**{k: v for k, v in data.items() if k in names})


_FIELD_NAMES = frozenset(f.name for f in fields(RequestRecord))
