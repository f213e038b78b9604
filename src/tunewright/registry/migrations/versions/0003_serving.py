"""Serving: deployment aliases with their change history, verified exports, and user feedback.

Revision ID: 0003_serving
Revises: 0002_review
Create Date: 2026-11-29
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003_serving"
down_revision: Union[str, Sequence[str], None] = "0002_review"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

AUTOINC = {"sqlite_autoincrement": True}
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alias_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=True),
        sa.Column("split_adapter_id", sa.Integer(), nullable=True),
        sa.Column("split_percent", sa.Integer(), nullable=False),
        sa.Column("previous_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alias_changes"),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"], name="fk_alias_changes_adapter_id_adapters"),
        sa.ForeignKeyConstraint(["split_adapter_id"], ["adapters.id"],
                                name="fk_alias_changes_split_adapter_id_adapters"),
        sa.ForeignKeyConstraint(["previous_id"], ["alias_changes.id"],
                                name="fk_alias_changes_previous_id_alias_changes"),
        **AUTOINC,
    )
    op.create_index("ix_alias_changes_alias", "alias_changes", ["alias"])
    op.create_table(
        "exports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_ref", sa.String(255), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("formats", sa.JSON(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("check", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_exports"),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"], name="fk_exports_adapter_id_adapters"),
        **AUTOINC,
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("rating", sa.String(8), nullable=False),
        sa.Column("correction", sa.Text(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("candidate_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.ForeignKeyConstraint(["candidate_id"], ["candidates.id"], name="fk_feedback_candidate_id_candidates"),
        **AUTOINC,
    )


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("exports")
    op.drop_index("ix_alias_changes_alias", table_name="alias_changes")
    op.drop_table("alias_changes")
