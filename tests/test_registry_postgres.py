"""The registry on a real PostgreSQL server: same migrations, same API, same hash chain."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tunewright.errors import NotFoundError
from tunewright.registry import Registry

from test_registry import add_adapter, add_dataset, start_run


@pytest.fixture
def pg_registry(postgres_url):
    registry = Registry(postgres_url)
    yield registry
    with registry.engine.begin() as conn:  # each test starts from an empty schema
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    registry.close()


def test_full_lineage_on_postgres(pg_registry):
    assert pg_registry.engine.dialect.name == "postgresql"
    dataset = add_dataset(pg_registry)
    assert add_dataset(pg_registry).id == dataset.id  # idempotent
    run = start_run(pg_registry, dataset_id=dataset.id)
    finished = pg_registry.finish_run(run.id, status="completed", metrics={"losses": [1.5, 0.5]})
    assert finished.metrics == {"losses": [1.5, 0.5]} and finished.finished_at.tzinfo is not None
    first = add_adapter(pg_registry, run_id=run.id)
    second = add_adapter(pg_registry, run_id=run.id)
    assert (first.version, second.version) == (1, 2)
    assert pg_registry.get_adapter("support-lora").version == 2
    evaluation = pg_registry.add_evaluation(model_ref="support-lora", adapter_id=second.id, dataset_id=dataset.id,
                                            split="eval", metrics={"contains": 0.9}, n_examples=10,
                                            results_path="r.jsonl", report_path=None)
    assert evaluation.metrics == {"contains": 0.9}
    kinds = {(e["parent_kind"], e["child_kind"]) for e in pg_registry.lineage("run", str(run.id))}
    assert ("dataset", "run") in kinds and ("run", "adapter") in kinds
    with pytest.raises(NotFoundError):
        pg_registry.get_adapter("ghost")
    assert pg_registry.verify_events() == (True, None)


def test_tampering_is_detected_on_postgres(pg_registry):
    """A tamperer with write access disables the guards first; the hash chain still names the event,
    and the audit names the disabled guard."""
    from tunewright.govern.audit import verify_log

    add_dataset(pg_registry)
    start_run(pg_registry)
    [first, *_] = pg_registry.events()
    with pg_registry.engine.begin() as conn:
        conn.execute(text("ALTER TABLE events DISABLE TRIGGER events_no_update"))
        conn.execute(text("UPDATE events SET actor = 'mallory' WHERE id = :id"), {"id": first.id})
    assert pg_registry.verify_events() == (False, first.id)
    kinds = {d.kind: d.detail for d in verify_log(pg_registry).damage}
    assert kinds.keys() == {"edited", "unguarded"} and "events_no_update" in kinds["unguarded"]


def test_postgres_guards_the_log_the_deployment_history_and_adapter_hashes(pg_registry):
    """The same refusals SQLite gives (test_governance), plus TRUNCATE, which row triggers miss."""
    from sqlalchemy.exc import DBAPIError

    from tunewright.govern.audit import verify_log
    from tunewright.registry.deploy import DeploymentStore

    adapter = add_adapter(pg_registry, run_id=start_run(pg_registry, dataset_id=add_dataset(pg_registry).id).id)
    DeploymentStore(pg_registry).set_alias("production", adapter.name)
    assert verify_log(pg_registry).ok
    for statement, message in [
        ("UPDATE events SET actor = 'mallory'", "events are append-only"),
        ("DELETE FROM events", "events are append-only"),
        ("TRUNCATE events", "events are append-only"),
        ("UPDATE alias_changes SET adapter_id = 99", "deployment history is append-only"),
        ("DELETE FROM alias_changes", "deployment history is append-only"),
        (f"UPDATE adapters SET weights_sha256 = 'x' WHERE id = {adapter.id}", "keeps its identity and hashes"),
        ("DELETE FROM adapters", "kept for the audit trail"),
        ("TRUNCATE adapters CASCADE", "kept for the audit trail"),
    ]:
        with pytest.raises(DBAPIError, match=message):
            with pg_registry.engine.begin() as conn:
                conn.execute(text(statement))
    with pg_registry.engine.begin() as conn:  # a folder may move
        conn.execute(text("UPDATE adapters SET path = '/moved' WHERE id = :id"), {"id": adapter.id})
    assert pg_registry.get_adapter(adapter.name).path == "/moved"
    assert verify_log(pg_registry).ok
