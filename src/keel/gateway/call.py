"""One decoded, authenticated gateway request, and the headers every answer carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keel.gateway.errors import GatewayError
from keel.gateway.metadata import TraceContext
from keel.keys.auth import Principal
from keel.records.model import RequestRecord

__all__ = ["Call", "meta_headers", "require_model", "usd_header"]


@dataclass(slots=True)
class Call:
    headers: dict[str, str]
    trace: TraceContext
    principal: Principal
    record: RequestRecord
    raw: bytes
    body: dict[str, Any]
    started: float
    headers_out: list[tuple[bytes, bytes]] = field(default_factory=list)


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "`model` is required and must be a string", param="model")
    return model


def usd_header(value: float) -> bytes:
    """A cost as plain decimal text: `0.00000855`, `0`."""
    return (f"{value:.12f}".rstrip("0").rstrip(".") or "0").encode()


def meta_headers(record: RequestRecord) -> list[tuple[bytes, bytes]]:
    out = [
        (b"x-keel-request-id", record.id.encode()),
        (b"x-keel-trace-id", record.trace_id.encode()),
    ]
    if record.provider:
        out.append((b"x-keel-provider", record.provider.encode()))
    return out
