"""Retrieval indexes: one row per content version of a workspace's hybrid index over its sources.

Revision ID: 0005_indexes
Revises: 0004_governance
Create Date: 2026-12-06
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005_indexes"
down_revision: Union[str, Sequence[str], None] = "0004_governance"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

AUTOINC = {"sqlite_autoincrement": True}
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "indexes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("n_chunks", sa.Integer(), nullable=False),
        sa.Column("source_files", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_indexes"),
        sa.UniqueConstraint("name", "version", name="uq_indexes_name_version"),
        **AUTOINC,
    )


def downgrade() -> None:
    op.drop_table("indexes")
