"""Analytics and trace-list indexes: partial indexes on the spans that count as calls and on
root spans, scores by time, and rollups by value (as in keel.storage.tables at this revision).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COUNTED_SQLITE = "counted = 1 AND kind IN ('llm', 'embedding')"
_COUNTED_POSTGRESQL = "counted AND kind IN ('llm', 'embedding')"


def upgrade() -> None:
    op.create_index(
        "ix_spans_counted_start",
        "spans",
        ["start_time"],
        sqlite_where=sa.text(_COUNTED_SQLITE),
        postgresql_where=sa.text(_COUNTED_POSTGRESQL),
    )
    op.create_index(
        "ix_spans_root_start",
        "spans",
        ["start_time"],
        sqlite_where=sa.text("parent_span_id IS NULL"),
        postgresql_where=sa.text("parent_span_id IS NULL"),
    )
    op.create_index("ix_scores_created", "scores", ["created_at"])
    # A breakdown reads the hourly rows of its top values only, value by value.
    op.create_index("ix_rollups_value", "rollups", ["grain", "dimension", "value", "bucket"])


def downgrade() -> None:
    op.drop_index("ix_rollups_value", "rollups")
    op.drop_index("ix_scores_created", "scores")
    op.drop_index("ix_spans_root_start", "spans")
    op.drop_index("ix_spans_counted_start", "spans")
