"""Observability: spans, scores, alert rules and their history, and analytics rollups (as in
keel.storage.tables at this revision).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_HISTOGRAM_BUCKETS = 40  # frozen here: a change to the buckets needs its own migration


def upgrade() -> None:
    _create_spans()
    _create_scores()
    _create_alerts()
    _create_rollups()


def downgrade() -> None:
    for table in ("rollups", "alert_events", "alert_rules", "scores", "spans"):
        op.drop_table(table)


def _create_spans() -> None:
    op.create_table(
        "spans",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("span_id", sa.String(16), primary_key=True),
        sa.Column("parent_span_id", sa.String(16)),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("service", sa.String(256)),
        sa.Column("start_time", sa.Double, nullable=False),
        sa.Column("end_time", sa.Double, nullable=False),
        sa.Column("duration_ms", sa.Double, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("provider", sa.String(128)),
        sa.Column("model", sa.String(256)),
        sa.Column("response_model", sa.String(256)),
        sa.Column("input_tokens", sa.Integer),
        sa.Column("output_tokens", sa.Integer),
        sa.Column("cached_tokens", sa.Integer),
        sa.Column("reasoning_tokens", sa.Integer),
        sa.Column("cost_usd", sa.Double),
        sa.Column("cost_estimated", sa.Boolean, nullable=False),
        sa.Column("ttft_ms", sa.Double),
        sa.Column("customer", sa.String(256)),
        sa.Column("session_id", sa.String(256)),
        sa.Column("pipeline", sa.String(256)),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("prompt_name", sa.String(256)),
        sa.Column("prompt_version", sa.Integer),
        sa.Column("counted", sa.Boolean, nullable=False),
        sa.Column("input", sa.Text),
        sa.Column("output", sa.Text),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
    )
    op.create_index("ix_spans_start_time", "spans", ["start_time"])
    op.create_index("ix_spans_session_start", "spans", ["session_id", "start_time"])


def _create_scores() -> None:
    op.create_table(
        "scores",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("span_id", sa.String(16)),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("data_type", sa.String(16), nullable=False),
        sa.Column("value", sa.Double),
        sa.Column("label", sa.String(256)),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("author", sa.String(256)),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_scores_trace", "scores", ["trace_id"])
    op.create_index("ix_scores_name_created", "scores", ["name", "created_at"])


def _create_alerts() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("filters", sa.JSON, nullable=False),
        sa.Column("window_s", sa.Integer, nullable=False),
        sa.Column("comparator", sa.String(4), nullable=False),
        sa.Column("threshold", sa.Double, nullable=False),
        sa.Column("for_s", sa.Integer, nullable=False),
        sa.Column("channels", sa.JSON, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_since", sa.Double),
        sa.Column("last_value", sa.Double),
        sa.Column("last_evaluated_at", sa.Double),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.UniqueConstraint("name", name="uq_alert_rules_name"),
    )
    op.create_table(
        "alert_events",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("rule_id", sa.String(32)),
        sa.Column("rule_name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("value", sa.Double),
        sa.Column("threshold", sa.Double),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("deliveries", sa.JSON, nullable=False),
    )
    op.create_index("ix_alert_events_at", "alert_events", ["at"])
    op.create_index("ix_alert_events_rule_at", "alert_events", ["rule_id", "at"])


def _create_rollups() -> None:
    histograms = [
        sa.Column(f"{prefix}{i:02d}", sa.BigInteger, nullable=False)
        for prefix in ("lat_", "ttft_")
        for i in range(_HISTOGRAM_BUCKETS)
    ]
    op.create_table(
        "rollups",
        sa.Column("grain", sa.String(1), primary_key=True),
        sa.Column("bucket", sa.BigInteger, primary_key=True),
        sa.Column("dimension", sa.String(16), primary_key=True),
        sa.Column("value", sa.String(256), primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_tokens", sa.BigInteger, nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Double, nullable=False),
        sa.Column("cost_saved_usd", sa.Double, nullable=False),
        sa.Column("cache_hits", sa.BigInteger, nullable=False),
        sa.Column("latency_count", sa.BigInteger, nullable=False),
        sa.Column("latency_sum_ms", sa.Double, nullable=False),
        sa.Column("ttft_count", sa.BigInteger, nullable=False),
        sa.Column("ttft_sum_ms", sa.Double, nullable=False),
        *histograms,
    )
    op.create_index("ix_rollups_dimension", "rollups", ["grain", "dimension", "bucket"])
