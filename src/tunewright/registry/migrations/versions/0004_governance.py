"""Governance: registered reports (bias, explanations, PII and data scans), dated sign-offs, and the
reason and evidence behind every alias move.

Revision ID: 0004_governance
Revises: 0003_serving
Create Date: 2026-11-29
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004_governance"
down_revision: Union[str, Sequence[str], None] = "0003_serving"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

AUTOINC = {"sqlite_autoincrement": True}
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=True),
        sa.Column("dataset_id", sa.Integer(), nullable=True),
        sa.Column("evaluation_id", sa.Integer(), nullable=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"], name="fk_reports_adapter_id_adapters"),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name="fk_reports_dataset_id_datasets"),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluations.id"], name="fk_reports_evaluation_id_evaluations"),
        **AUTOINC,
    )
    op.create_index("ix_reports_kind", "reports", ["kind"])
    op.create_table(
        "signoffs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_kind", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("subject_sha256", sa.String(64), nullable=False),
        sa.Column("person", sa.String(255), nullable=False),
        sa.Column("role", sa.String(255), nullable=True),
        sa.Column("signed_on", sa.String(10), nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_signoffs"),
        **AUTOINC,
    )
    op.create_index("ix_signoffs_subject_kind_subject_id", "signoffs", ["subject_kind", "subject_id"])
    with op.batch_alter_table("alias_changes") as batch:
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("evidence", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alias_changes") as batch:
        batch.drop_column("evidence")
        batch.drop_column("reason")
    op.drop_index("ix_signoffs_subject_kind_subject_id", table_name="signoffs")
    op.drop_table("signoffs")
    op.drop_index("ix_reports_kind", table_name="reports")
    op.drop_table("reports")
