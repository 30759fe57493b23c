"""Initial schema: requests, request_payloads, keys (as in keel.storage.tables).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    _create_requests()
    op.create_table(
        "request_payloads",
        sa.Column("request_id", sa.String(32), primary_key=True),
        sa.Column("request_body", sa.Text),
        sa.Column("response_body", sa.Text),
        sa.Column("truncated", sa.Boolean, nullable=False),
    )
    op.create_table(
        "keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(128), nullable=False),
        sa.Column("customer", sa.String(256)),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double),
        sa.Column("revoked_at", sa.Double),
        sa.Column("allowed_models", sa.JSON),
        sa.Column("metadata", sa.JSON),
    )


def _create_requests() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("span_id", sa.String(16), nullable=False),
        sa.Column("parent_span_id", sa.String(16)),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("endpoint", sa.String(32), nullable=False),
        sa.Column("model", sa.String(256)),
        sa.Column("provider", sa.String(128)),
        sa.Column("provider_model", sa.String(256)),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("error_type", sa.String(64)),
        sa.Column("latency_ms", sa.Double),
        sa.Column("ttft_ms", sa.Double),
        sa.Column("input_tokens", sa.Integer),
        sa.Column("output_tokens", sa.Integer),
        sa.Column("cached_tokens", sa.Integer),
        sa.Column("cache_write_tokens", sa.Integer),
        sa.Column("reasoning_tokens", sa.Integer),
        sa.Column("tokens_estimated", sa.Boolean, nullable=False),
        sa.Column("cost_usd", sa.Double),
        sa.Column("cost_estimated", sa.Boolean, nullable=False),
        sa.Column("customer", sa.String(256)),
        sa.Column("pipeline", sa.String(256)),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("key_id", sa.String(32)),
        sa.Column("final", sa.Boolean, nullable=False),
    )
    op.create_index("ix_requests_created_at", "requests", ["created_at"])
    op.create_index("ix_requests_model_created", "requests", ["model", "created_at"])
    op.create_index("ix_requests_customer_created", "requests", ["customer", "created_at"])
    op.create_index("ix_requests_pipeline_created", "requests", ["pipeline", "created_at"])
    op.create_index("ix_requests_trace_id", "requests", ["trace_id"])


def downgrade() -> None:
    op.drop_table("keys")
    op.drop_table("request_payloads")
    op.drop_table("requests")
