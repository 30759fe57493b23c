"""Prompt registry and events: prompts, prompt_versions, prompt_labels, prompt_label_moves,
events, and the prompt columns of requests (as in keel.storage.tables).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _create_prompts()
    _create_labels()
    _create_events()
    # batch_alter_table: SQLite can add a column in place but not drop one (downgrade); batch
    # mode copies the table there when it must and is plain ALTER TABLE on PostgreSQL.
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("prompt_name", sa.String(256)))
        batch.add_column(sa.Column("prompt_version", sa.Integer))
        batch.create_index(
            "ix_requests_prompt_created", ["prompt_name", "prompt_version", "created_at"]
        )


def _create_prompts() -> None:
    op.create_table(
        "prompts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.UniqueConstraint("name", name="uq_prompts_name"),
    )
    op.create_table(
        "prompt_versions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "prompt_id",
            sa.String(32),
            sa.ForeignKey("prompts.id", name="fk_prompt_versions_prompt"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("template", sa.Text),
        sa.Column("messages", sa.JSON),
        sa.Column("variables", sa.JSON),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("message", sa.Text),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.UniqueConstraint("prompt_id", "version", name="uq_prompt_versions_version"),
        sa.UniqueConstraint("prompt_id", "content_hash", name="uq_prompt_versions_hash"),
    )


def _create_labels() -> None:
    op.create_table(
        "prompt_labels",
        sa.Column(
            "prompt_id",
            sa.String(32),
            sa.ForeignKey("prompts.id", name="fk_prompt_labels_prompt"),
            primary_key=True,
        ),
        sa.Column("label", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("protected", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
    )
    op.create_table(
        "prompt_label_moves",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "prompt_id",
            sa.String(32),
            sa.ForeignKey("prompts.id", name="fk_prompt_label_moves_prompt"),
            nullable=False,
        ),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("from_version", sa.Integer),
        sa.Column("to_version", sa.Integer, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
    )
    op.create_index(
        "ix_prompt_label_moves_label", "prompt_label_moves", ["prompt_id", "label", "id"]
    )


def _create_events() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("prev_hash", sa.String(64)),
        sa.Column("hash", sa.String(64)),
    )
    op.create_index("ix_events_at", "events", ["at", "id"])


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_index("ix_requests_prompt_created")
        batch.drop_column("prompt_version")
        batch.drop_column("prompt_name")
    op.drop_table("events")
    op.drop_table("prompt_label_moves")
    op.drop_table("prompt_labels")
    op.drop_table("prompt_versions")
    op.drop_table("prompts")
