"""Limits and resilience: the limit columns of keys, the limit_policies table, and the
fallback, cache, trimming and deprecation columns of requests (as in keel.storage.tables).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_KEY_COLUMNS = ("rpm", "tpm", "budget_usd", "budget_period")
_REQUEST_COLUMNS = (
    "fallbacks",
    "cache_status",
    "cost_saved_usd",
    "trimmed_messages",
    "deprecated_model",
)


def upgrade() -> None:
    # batch_alter_table: plain ALTER TABLE on PostgreSQL; on SQLite a copy of the table when
    # an operation needs one (dropping a column on downgrade).
    with op.batch_alter_table("keys") as batch:
        batch.add_column(sa.Column("rpm", sa.Integer))
        batch.add_column(sa.Column("tpm", sa.Integer))
        batch.add_column(sa.Column("budget_usd", sa.Double))
        batch.add_column(sa.Column("budget_period", sa.String(8)))
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("fallbacks", sa.JSON))
        batch.add_column(sa.Column("cache_status", sa.String(16)))
        batch.add_column(sa.Column("cost_saved_usd", sa.Double))
        batch.add_column(sa.Column("trimmed_messages", sa.Integer))
        batch.add_column(sa.Column("deprecated_model", sa.String(256)))
    op.create_table(
        "limit_policies",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("subject", sa.String(256), primary_key=True),
        sa.Column("rpm", sa.Integer),
        sa.Column("tpm", sa.Integer),
        sa.Column("budget_usd", sa.Double),
        sa.Column("budget_period", sa.String(8)),
        sa.Column("updated_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("limit_policies")
    with op.batch_alter_table("requests") as batch:
        for name in reversed(_REQUEST_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("keys") as batch:
        for name in reversed(_KEY_COLUMNS):
            batch.drop_column(name)
