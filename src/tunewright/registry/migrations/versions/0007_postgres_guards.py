"""PostgreSQL gets the guards SQLite has had since 0001 and 0006: the event log and the deployment
history are append-only, and a registered adapter keeps its identity and hashes. Same trigger
names, same messages, so the audit can check for them by name on either database. PostgreSQL also
refuses TRUNCATE on those tables, which row triggers would not see.

Revision ID: 0007_postgres_guards
Revises: 0006_adapter_method
Create Date: 2026-12-06
"""
from __future__ import annotations

from typing import Sequence, Union

from alembic import op

revision: str = "0007_postgres_guards"
down_revision: Union[str, Sequence[str], None] = "0006_adapter_method"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

FUNCTION = "tunewright_refuse_change"
_EVENTS = "events are append-only"
_HISTORY = "the deployment history is append-only"
_ADAPTERS = "registered adapters are kept for the audit trail"
# name -> (when, what a row or statement trigger says); kept in step with SQLite's in 0001 and 0006.
POSTGRES_TRIGGERS = {
    "events_no_update": ("BEFORE UPDATE ON events FOR EACH ROW", _EVENTS),
    "events_no_delete": ("BEFORE DELETE ON events FOR EACH ROW", _EVENTS),
    "events_no_truncate": ("BEFORE TRUNCATE ON events FOR EACH STATEMENT", _EVENTS),
    "alias_changes_no_update": ("BEFORE UPDATE ON alias_changes FOR EACH ROW", _HISTORY),
    "alias_changes_no_delete": ("BEFORE DELETE ON alias_changes FOR EACH ROW", _HISTORY),
    "alias_changes_no_truncate": ("BEFORE TRUNCATE ON alias_changes FOR EACH STATEMENT", _HISTORY),
    "adapters_no_rehash": ("BEFORE UPDATE OF name, version, weights_sha256, base_model_sha256, method ON adapters "
                           "FOR EACH ROW", "a registered adapter keeps its identity and hashes; register a new version"),
    "adapters_no_delete": ("BEFORE DELETE ON adapters FOR EACH ROW", _ADAPTERS),
    "adapters_no_truncate": ("BEFORE TRUNCATE ON adapters FOR EACH STATEMENT", _ADAPTERS),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # The message travels as the trigger's argument: no format string, so no '%' to escape.
    op.execute(f"CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $body$ "
               "BEGIN RAISE EXCEPTION USING MESSAGE = TG_ARGV[0], ERRCODE = 'integrity_constraint_violation'; "
               "END $body$")
    for name, (when, message) in POSTGRES_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION {FUNCTION}('{message}')")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, (when, _message) in POSTGRES_TRIGGERS.items():
        table = when.split(" ON ")[1].split()[0]
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
