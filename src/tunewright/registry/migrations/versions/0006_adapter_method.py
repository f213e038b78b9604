"""Adapters record the Tunewright method that trained them ('lora', 'dora', 'bottleneck') in a
column named for it: ``peft_type`` held the method name while peft's own ``peft_type`` ('LORA')
lives in adapter_config.json. On SQLite, the deployment history (``alias_changes``) becomes
append-only like the event log, and an adapter row's hashes can no longer be changed in place.

Revision ID: 0006_adapter_method
Revises: 0005_indexes
Create Date: 2026-12-06
"""
from __future__ import annotations

from typing import Sequence, Union

from alembic import op

revision: str = "0006_adapter_method"
down_revision: Union[str, Sequence[str], None] = "0005_indexes"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# The deployment history is what `history` and the model card read as "what served when"; a row
# changed in place would rewrite it. An adapter's name, version and hashes are what its events and
# the weight check at every load rely on; its folder may still move (the path is not guarded).
SQLITE_TRIGGERS = {
    "alias_changes_no_update": ("BEFORE UPDATE ON alias_changes", "the deployment history is append-only"),
    "alias_changes_no_delete": ("BEFORE DELETE ON alias_changes", "the deployment history is append-only"),
    "adapters_no_rehash": ("BEFORE UPDATE OF name, version, weights_sha256, base_model_sha256, method ON adapters",
                           "a registered adapter keeps its identity and hashes; register a new version"),
    "adapters_no_delete": ("BEFORE DELETE ON adapters", "registered adapters are kept for the audit trail"),
}


def upgrade() -> None:
    with op.batch_alter_table("adapters") as batch:
        batch.alter_column("peft_type", new_column_name="method")
    if op.get_bind().dialect.name == "sqlite":
        for name, (when, message) in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {when} BEGIN SELECT RAISE(ABORT, '{message}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table("adapters") as batch:
        batch.alter_column("method", new_column_name="peft_type")
