"""The tables. Alembic migrations under storage/migrations create exactly these."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = ["keys", "metadata", "request_payloads", "requests"]

metadata = MetaData()

requests = Table(
    "requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("trace_id", String(32), nullable=False),
    Column("span_id", String(16), nullable=False),
    Column("parent_span_id", String(16)),
    Column("created_at", Double, nullable=False),  # unix seconds
    Column("endpoint", String(32), nullable=False),
    Column("model", String(256)),
    Column("provider", String(128)),
    Column("provider_model", String(256)),
    Column("status_code", Integer, nullable=False),
    Column("error", Text),
    Column("error_type", String(64)),
    Column("latency_ms", Double),
    Column("ttft_ms", Double),
    Column("input_tokens", Integer),
    Column("output_tokens", Integer),
    Column("cached_tokens", Integer),
    Column("cache_write_tokens", Integer),
    Column("reasoning_tokens", Integer),
    Column("tokens_estimated", Boolean, nullable=False),
    Column("cost_usd", Double),
    Column("cost_estimated", Boolean, nullable=False),
    Column("customer", String(256)),
    Column("pipeline", String(256)),
    Column("tags", JSON, nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("key_id", String(32)),
    Column("final", Boolean, nullable=False),
    Index("ix_requests_created_at", "created_at"),
    Index("ix_requests_model_created", "model", "created_at"),
    Index("ix_requests_customer_created", "customer", "created_at"),
    Index("ix_requests_pipeline_created", "pipeline", "created_at"),
    Index("ix_requests_trace_id", "trace_id"),
)

request_payloads = Table(
    "request_payloads",
    metadata,
    Column("request_id", String(32), primary_key=True),
    Column("request_body", Text),
    Column("response_body", Text),
    Column("truncated", Boolean, nullable=False),
)

keys = Table(
    "keys",
    metadata,
    Column("id", String(32), primary_key=True),  # public key id, part of the key string
    Column("name", String(256), nullable=False),
    Column("salt", String(64), nullable=False),
    Column("hash", String(128), nullable=False),  # sha256(salt + secret), hex
    Column("customer", String(256)),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double),
    Column("revoked_at", Double),
    Column("allowed_models", JSON),
    Column("metadata", JSON),
)
