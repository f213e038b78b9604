"""Synthetic rounds, review candidates, reviewers, blind assignments and review decisions.

Revision ID: 0002_review
Revises: 0001_initial
Create Date: 2026-11-29
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002_review"
down_revision: Union[str, Sequence[str], None] = "0001_initial"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

AUTOINC = {"sqlite_autoincrement": True}
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "synth_rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("spec_sha256", sa.String(64), nullable=False),
        sa.Column("teacher_model", sa.String(255), nullable=False),
        sa.Column("guidance", sa.JSON(), nullable=False),
        sa.Column("usage", sa.JSON(), nullable=False),
        sa.Column("filter_counts", sa.JSON(), nullable=False),
        sa.Column("failures", sa.JSON(), nullable=False),
        sa.Column("n_generated", sa.Integer(), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_synth_rounds"),
        sa.UniqueConstraint("queue", "number", name="uq_synth_rounds_queue_number"),
        **AUTOINC,
    )
    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=True),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("messages", sa.JSON(), nullable=False),
        sa.Column("original", sa.JSON(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("judge_score", sa.Integer(), nullable=True),
        sa.Column("topic", sa.String(255), nullable=True),
        sa.Column("generator", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_candidates"),
        sa.ForeignKeyConstraint(["round_id"], ["synth_rounds.id"], name="fk_candidates_round_id_synth_rounds"),
        sa.UniqueConstraint("queue", "content_sha256", name="uq_candidates_queue_content_sha256"),
        **AUTOINC,
    )
    op.create_index("ix_candidates_queue_status", "candidates", ["queue", "status"])
    op.create_table(
        "reviewers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reviewers"),
        sa.UniqueConstraint("name", name="uq_reviewers_name"),
        **AUTOINC,
    )
    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_assignments"),
        sa.ForeignKeyConstraint(["candidate_id"], ["candidates.id"], name="fk_assignments_candidate_id_candidates"),
        sa.UniqueConstraint("candidate_id", "reviewer", name="uq_assignments_candidate_id_reviewer"),
        **AUTOINC,
    )
    op.create_index("ix_assignments_reviewer", "assignments", ["reviewer"])
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(255), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("before", sa.JSON(), nullable=False),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reviews"),
        sa.ForeignKeyConstraint(["candidate_id"], ["candidates.id"], name="fk_reviews_candidate_id_candidates"),
        **AUTOINC,
    )
    op.create_index("ix_reviews_candidate_id", "reviews", ["candidate_id"])


def downgrade() -> None:
    op.drop_index("ix_reviews_candidate_id", table_name="reviews")
    op.drop_table("reviews")
    op.drop_index("ix_assignments_reviewer", table_name="assignments")
    op.drop_table("assignments")
    op.drop_table("reviewers")
    op.drop_index("ix_candidates_queue_status", table_name="candidates")
    op.drop_table("candidates")
    op.drop_table("synth_rounds")
