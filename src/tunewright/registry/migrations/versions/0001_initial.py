"""Initial registry schema: datasets, runs, adapters, evaluations, lineage and the event log.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01

Migrations are append-only: never edit a released revision, add a new one. Types are spelled out
here rather than imported from tables.py so this revision stays frozen when the models move on.
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# SQLite reuses the highest rowid after a delete; AUTOINCREMENT keeps lineage ids unambiguous.
AUTOINC = {"sqlite_autoincrement": True}
TS = sa.DateTime(timezone=True)

# A later batch migration of `events` on SQLite rebuilds the table and silently loses these
# triggers, so any such revision must create them again.
SQLITE_TRIGGERS = {
    "events_no_update": "BEFORE UPDATE ON events",
    "events_no_delete": "BEFORE DELETE ON events",
}


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("n_train", sa.Integer(), nullable=False),
        sa.Column("n_eval", sa.Integer(), nullable=False),
        sa.Column("n_duplicates", sa.Integer(), nullable=False),
        sa.Column("source_files", sa.JSON(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.UniqueConstraint("name", "version", name="uq_datasets_name_version"),
        **AUTOINC,
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("hardware", sa.JSON(), nullable=False),
        sa.Column("library_versions", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=True),
        sa.Column("base_model_ref", sa.Text(), nullable=False),
        sa.Column("base_model_sha256", sa.String(64), nullable=True),
        sa.Column("output_path", sa.Text(), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name="fk_runs_dataset_id_datasets"),
        **AUTOINC,
    )
    op.create_table(
        "adapters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=False),
        sa.Column("peft_type", sa.String(32), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("base_model_ref", sa.Text(), nullable=False),
        sa.Column("base_model_sha256", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_adapters"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_adapters_run_id_runs"),
        sa.UniqueConstraint("name", "version", name="uq_adapters_name_version"),
        **AUTOINC,
    )
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_ref", sa.String(255), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=True),
        sa.Column("dataset_id", sa.Integer(), nullable=True),
        sa.Column("split", sa.String(32), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("n_examples", sa.Integer(), nullable=False),
        sa.Column("results_path", sa.Text(), nullable=False),
        sa.Column("report_path", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_evaluations"),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapters.id"], name="fk_evaluations_adapter_id_adapters"),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name="fk_evaluations_dataset_id_datasets"),
        **AUTOINC,
    )
    op.create_table(
        "lineage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("parent_kind", sa.String(32), nullable=False),
        sa.Column("parent_id", sa.String(255), nullable=False),
        sa.Column("child_kind", sa.String(32), nullable=False),
        sa.Column("child_id", sa.String(255), nullable=False),
        sa.Column("relation", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lineage"),
        sa.UniqueConstraint("parent_kind", "parent_id", "child_kind", "child_id", "relation",
                            name="uq_lineage_parent_kind_parent_id_child_kind_child_id_relation"),
        **AUTOINC,
    )
    op.create_index("ix_lineage_parent_kind_parent_id", "lineage", ["parent_kind", "parent_id"])
    op.create_index("ix_lineage_child_kind_child_id", "lineage", ["child_kind", "child_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject_kind", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(255), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        # One successor per hash: racing writers cannot fork the chain.
        sa.UniqueConstraint("prev_hash", name="uq_events_prev_hash"),
        sa.UniqueConstraint("hash", name="uq_events_hash"),
        **AUTOINC,
    )
    op.create_index("ix_events_subject_kind_subject_id", "events", ["subject_kind", "subject_id"])

    if op.get_bind().dialect.name == "sqlite":
        for name, when in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {when} BEGIN SELECT RAISE(ABORT, 'events are append-only'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_index("ix_events_subject_kind_subject_id", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_lineage_child_kind_child_id", table_name="lineage")
    op.drop_index("ix_lineage_parent_kind_parent_id", table_name="lineage")
    op.drop_table("lineage")
    op.drop_table("evaluations")
    op.drop_table("adapters")
    op.drop_table("runs")
    op.drop_table("datasets")
