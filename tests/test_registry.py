from __future__ import annotations

import dataclasses
from datetime import timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from tunewright.errors import NotFoundError, TunewrightError
from tunewright.registry import Registry, WorkspaceCreated
from tunewright.registry import api as registry_api
from tunewright.registry import events as registry_events
from tunewright.registry.tables import Base

SHA_A = "a" * 64
SHA_B = "b" * 64
TABLES = {"datasets", "runs", "adapters", "evaluations", "lineage", "events",
          "synth_rounds", "candidates", "reviewers", "assignments", "reviews", "alias_changes", "exports", "feedback", "reports", "signoffs",
          "indexes"}


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'nested' / 'registry.db'}"


@pytest.fixture
def reg(url, monkeypatch):
    monkeypatch.setenv("TUNEWRIGHT_ACTOR", "tester")
    registry = Registry(url)
    yield registry
    registry.close()


def add_dataset(reg, name="support", sha=SHA_A, **kw):
    args = dict(name=name, version=sha[:12], content_sha256=sha, path=f"datasets/{name}", n_train=8, n_eval=2,
                n_duplicates=1, source_files=[{"path": "data/a.jsonl", "sha256": "f1" * 32, "rows": 10},
                                              {"path": "data/b.jsonl", "sha256": "f2" * 32, "rows": 1}],
                spec={"split": 0.2, "seed": 7})
    args.update(kw)
    return reg.add_dataset(**args)


def start_run(reg, dataset_id=None, **kw):
    args = dict(name="lora-1", kind="train", config={"lr": 1e-4, "epochs": 2}, seed=7, hardware={"device": "cpu"},
                library_versions={"torch": "2.13.0"}, dataset_id=dataset_id, base_model_ref="smollm2-135m",
                base_model_sha256=SHA_B, output_path="runs/1")
    args.update(kw)
    return reg.start_run(**args)


def add_adapter(reg, name="support-lora", run_id=None):
    return reg.add_adapter(name=name, path=f"adapters/{name}", weights_sha256=SHA_B, method="lora",
                           run_id=run_id, base_model_ref="smollm2-135m", base_model_sha256=SHA_B)


def counts(reg):
    with reg.engine.connect() as conn:
        return {name: conn.execute(text(f"SELECT COUNT(*) FROM {name}")).scalar_one() for name in TABLES}


# -- schema ------------------------------------------------------------------------------------


def test_migrations_create_all_tables_and_stamp_head(reg):
    names = set(inspect(reg.engine).get_table_names())
    assert TABLES | {"alembic_version"} <= names
    with reg.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0007_postgres_guards"
    assert Path(reg.engine.url.database).is_file()  # the missing parent folder was created


def test_orm_models_match_migrations(reg):
    with reg.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_upgrade_from_first_revision_keeps_existing_rows(tmp_path):
    from alembic import command
    from alembic.config import Config

    from tunewright.registry.api import MIGRATIONS_DIR

    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0001_initial")  # a registry written before review existed
    with create_engine(url).begin() as conn:
        conn.execute(text("INSERT INTO datasets (name, version, content_sha256, path, n_train, n_eval, n_duplicates,"
                          " source_files, spec, created_at) VALUES ('old','v1','x','p',1,0,0,'[]','{}',"
                          " '2025-01-01 00:00:00')"))
        conn.execute(text("INSERT INTO adapters (name, version, path, weights_sha256, peft_type, base_model_ref,"
                          " created_at) VALUES ('shop', 1, 'p', 'w', 'dora', 'base', '2025-01-01 00:00:00')"))
    upgraded = Registry(url)
    try:
        assert [d.name for d in upgraded.list_datasets()] == ["old"]
        assert {"candidates", "reviews"} <= set(inspect(upgraded.engine).get_table_names())
        assert upgraded.get_adapter("shop").method == "dora"  # the column renamed by 0006, its rows kept
    finally:
        upgraded.close()


def test_reopening_keeps_data_and_does_not_remigrate(reg, url):
    add_dataset(reg)
    again = Registry(url)
    try:
        assert [d.name for d in again.list_datasets()] == ["support"]
        assert again.verify_events() == (True, None)
    finally:
        again.close()


def test_sqlite_foreign_keys_are_enforced(reg):
    with pytest.raises(IntegrityError):
        with reg.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO runs (name, kind, status, config, seed, hardware, library_versions, metrics, dataset_id,"
                " base_model_ref, output_path, started_at) VALUES ('x','train','running','{}',1,'{}','{}','{}',999,"
                " 'm','o','2025-01-01 00:00:00')"))


# -- datasets ----------------------------------------------------------------------------------


def test_dataset_add_get_and_snapshot(reg):
    rec = add_dataset(reg)
    assert rec.id == 1 and rec.version == SHA_A[:12] and rec.n_duplicates == 1
    assert rec.created_at.tzinfo is not None and rec.created_at.utcoffset() == timezone.utc.utcoffset(None)
    assert reg.get_dataset("support") == rec
    assert reg.get_dataset("support", SHA_A[:12]) == rec
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.name = "other"  # type: ignore[misc]
    rec.spec["seed"] = 99  # a snapshot: mutating it must not leak back
    assert reg.get_dataset("support").spec == {"split": 0.2, "seed": 7}


def test_dataset_add_is_idempotent(reg):
    first = add_dataset(reg)
    before = counts(reg)
    again = add_dataset(reg)
    assert again == first
    assert counts(reg) == before  # no duplicate row, edge or event
    assert len(reg.list_datasets()) == 1


def test_dataset_same_version_different_content_is_refused(reg):
    add_dataset(reg)
    with pytest.raises(TunewrightError, match="different content"):
        add_dataset(reg, content_sha256=SHA_B)


def test_get_dataset_returns_latest_version(reg):
    add_dataset(reg, sha=SHA_A)
    newer = add_dataset(reg, sha=SHA_B)
    assert reg.get_dataset("support") == newer
    assert reg.get_dataset("support", SHA_A[:12]).content_sha256 == SHA_A
    assert [d.version for d in reg.list_datasets()] == [SHA_A[:12], SHA_B[:12]]


def test_dataset_not_found_messages(reg):
    with pytest.raises(NotFoundError, match=r"dataset 'nope' not found; known: \(none\)"):
        reg.get_dataset("nope")
    add_dataset(reg, name="beta")
    add_dataset(reg, name="alpha")
    with pytest.raises(NotFoundError) as err:
        reg.get_dataset("nope")
    assert str(err.value) == "dataset 'nope' not found; known: alpha, beta"
    with pytest.raises(NotFoundError, match=rf"dataset 'alpha' version 'ffff' not found; known versions: {SHA_A[:12]}"):
        reg.get_dataset("alpha", "ffff")


# -- runs, adapters, evaluations ---------------------------------------------------------------


def test_run_start_and_finish(reg):
    ds = add_dataset(reg)
    run = start_run(reg, dataset_id=ds.id)
    assert run.status == "running" and run.finished_at is None and run.metrics == {}
    assert run.config == {"lr": 1e-4, "epochs": 2} and run.started_at.tzinfo is not None
    done = reg.finish_run(run.id, status="completed", metrics={"train_loss": 1.25})
    assert done.status == "completed" and done.metrics == {"train_loss": 1.25}
    assert done.finished_at is not None and done.finished_at >= done.started_at
    assert reg.get_run(run.id) == done
    assert reg.list_runs() == [done]
    with pytest.raises(TunewrightError, match="already finished"):
        reg.finish_run(run.id, status="failed")
    with pytest.raises(TunewrightError, match="status 'running'"):
        reg.finish_run(run.id, status="running")
    with pytest.raises(NotFoundError, match="run 42 not found"):
        reg.get_run(42)


def test_complete_training_registers_run_and_adapter_together(reg, monkeypatch):
    run = start_run(reg)
    adapter = dict(name="shop", path="adapters/shop", weights_sha256=SHA_B, method="lora",
                   base_model_ref="smollm2-135m", base_model_sha256=SHA_B)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    # The adapter insert fails after the run row was updated in the same transaction: neither lands.
    with monkeypatch.context() as patch:
        patch.setattr(registry_api.Registry, "_add_adapter", broken)
        with pytest.raises(RuntimeError, match="disk full"):
            reg.complete_training(run.id, metrics={"loss": 0.5}, adapter=adapter)
    assert reg.get_run(run.id).status == "running" and reg.list_adapters() == []
    assert [e.action for e in reg.events()].count("run.finished") == 0

    done, record = reg.complete_training(run.id, metrics={"loss": 0.5}, adapter=adapter)
    assert done.status == "completed" and done.metrics == {"loss": 0.5}
    assert record.run_id == run.id and record.version == 1 and reg.list_adapters() == [record]
    assert [e.action for e in reg.events()][-2:] == ["run.finished", "adapter.registered"]


def test_failed_run_keeps_error(reg):
    run = start_run(reg)
    failed = reg.finish_run(run.id, status="failed", error="CUDA out of memory")
    assert failed.status == "failed" and failed.error == "CUDA out of memory"


def test_adapter_versions_increment_per_name(reg):
    run = start_run(reg)
    v1 = add_adapter(reg, run_id=run.id)
    v2 = add_adapter(reg, run_id=run.id)
    other = add_adapter(reg, name="other")
    assert (v1.version, v2.version, other.version) == (1, 2, 1)
    assert reg.get_adapter("support-lora") == v2
    assert reg.get_adapter("support-lora", 1) == v1
    assert [a.id for a in reg.list_adapters()] == [v1.id, v2.id, other.id]


def test_adapter_not_found_messages(reg):
    add_adapter(reg, name="b-lora")
    add_adapter(reg, name="a-lora")
    with pytest.raises(NotFoundError) as err:
        reg.get_adapter("missing")
    assert str(err.value) == "adapter 'missing' not found; known: a-lora, b-lora"
    with pytest.raises(NotFoundError, match=r"adapter 'a-lora' version 5 not found; known versions: 1"):
        reg.get_adapter("a-lora", 5)


def test_evaluation_recorded(reg):
    ds = add_dataset(reg)
    adapter = add_adapter(reg)
    ev = reg.add_evaluation(model_ref=adapter.name, adapter_id=adapter.id, dataset_id=ds.id, split="eval",
                            metrics={"exact_match": 0.5}, n_examples=2, results_path="reports/r.jsonl",
                            report_path=None)
    base = reg.add_evaluation(model_ref="base", adapter_id=None, dataset_id=ds.id, split="eval",
                              metrics={"exact_match": 0.0}, n_examples=2, results_path="reports/b.jsonl",
                              report_path="reports/b.html")
    assert ev.metrics == {"exact_match": 0.5} and ev.report_path is None and ev.created_at.tzinfo is not None
    assert reg.list_evaluations() == [ev, base]


# -- lineage -----------------------------------------------------------------------------------


def test_lineage_links_file_dataset_run_adapter_evaluation(reg):
    ds = add_dataset(reg)
    run = start_run(reg, dataset_id=ds.id)
    adapter = add_adapter(reg, run_id=run.id)
    ev = reg.add_evaluation(model_ref=adapter.name, adapter_id=adapter.id, dataset_id=ds.id, split="eval",
                            metrics={}, n_examples=0, results_path="r", report_path=None)

    def edges(kind, node_id):
        return {(e["parent_kind"], e["parent_id"], e["relation"], e["child_kind"], e["child_id"])
                for e in reg.lineage(kind, node_id)}

    d, r, a, e = str(ds.id), str(run.id), str(adapter.id), str(ev.id)
    assert edges("dataset", d) == {
        ("file", "f1" * 32, "source_of", "dataset", d), ("file", "f2" * 32, "source_of", "dataset", d),
        ("dataset", d, "input_to", "run", r), ("dataset", d, "input_to", "evaluation", e)}
    assert edges("run", run.id) == {  # an int id works as well as its text
        ("dataset", d, "input_to", "run", r), ("base_model", SHA_B, "input_to", "run", r),
        ("run", r, "produced", "adapter", a)}
    assert edges("adapter", a) == {("run", r, "produced", "adapter", a), ("adapter", a, "evaluated_by", "evaluation", e)}
    assert edges("file", "f1" * 32) == {("file", "f1" * 32, "source_of", "dataset", d)}
    assert reg.lineage("dataset", "999") == []


def test_duplicate_source_file_gives_one_edge(reg):
    same = {"path": "x.jsonl", "sha256": "c" * 64, "rows": 1}
    ds = add_dataset(reg, source_files=[same, dict(same, path="copy/x.jsonl")])
    assert len(reg.lineage("dataset", ds.id)) == 1


# -- events ------------------------------------------------------------------------------------


def test_every_mutating_call_appends_exactly_one_event_with_actor(reg):
    steps = [
        ("dataset.imported", lambda: add_dataset(reg)),
        ("run.started", lambda: start_run(reg, dataset_id=1)),
        ("run.finished", lambda: reg.finish_run(1, status="completed", metrics={"loss": 1.0})),
        ("adapter.registered", lambda: add_adapter(reg, run_id=1)),
        ("evaluation.recorded", lambda: reg.add_evaluation(
            model_ref="support-lora", adapter_id=1, dataset_id=1, split="eval", metrics={"em": 1.0},
            n_examples=1, results_path="r", report_path=None, actor="alice")),
        ("workspace.created", lambda: reg.record(WorkspaceCreated(name="ws", root="/tmp/ws"))),
    ]
    for i, (action, call) in enumerate(steps, start=1):
        call()
        log = reg.events()
        assert len(log) == i
        assert log[-1].action == action
        assert log[-1].actor == ("alice" if action == "evaluation.recorded" else "tester")
        assert log[-1].ts.tzinfo is not None
    log = reg.events()
    assert [(e.subject_kind, e.subject_id) for e in log] == [
        ("dataset", "1"), ("run", "1"), ("run", "1"), ("adapter", "1"), ("evaluation", "1"), ("workspace", "ws")]
    assert log[2].payload == {"run_id": 1, "status": "completed", "metrics": {"loss": 1.0}, "error": None}
    assert [e.id for e in reg.events(limit=2)] == [log[-2].id, log[-1].id]


def test_actor_defaults_to_os_user(url, monkeypatch):
    monkeypatch.delenv("TUNEWRIGHT_ACTOR", raising=False)
    monkeypatch.setattr(registry_events.getpass, "getuser", lambda: "os-user")
    reg = Registry(url)
    try:
        assert reg.record(WorkspaceCreated(name="ws", root="/w")).actor == "os-user"
    finally:
        reg.close()


def test_hash_chain_verifies(reg):
    assert reg.verify_events() == (True, None)  # empty log is valid
    add_dataset(reg)
    start_run(reg, dataset_id=1, config={"nested": {"b": 1, "a": (1, 2)}, 3: "int key"})
    reg.record(WorkspaceCreated(name="ws", root="/w"))
    log = reg.events()
    assert log[0].prev_hash == "0" * 64
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(log, log[1:]))
    assert reg.verify_events() == (True, None)


def test_hash_chain_detects_tampered_payload(reg):
    for i in range(3):
        reg.record(WorkspaceCreated(name=f"ws{i}", root="/w"))
    with reg.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER events_no_update"))
        conn.execute(text("UPDATE events SET payload = :p WHERE id = 2"), {"p": '{"name": "evil", "root": "/w"}'})
    assert reg.verify_events() == (False, 2)


def test_hash_chain_detects_deleted_event(reg):
    for i in range(3):
        reg.record(WorkspaceCreated(name=f"ws{i}", root="/w"))
    with reg.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER events_no_delete"))
        conn.execute(text("DELETE FROM events WHERE id = 2"))
    assert reg.verify_events() == (False, 3)


@pytest.mark.parametrize("sql", ["UPDATE events SET actor = 'mallory'", "DELETE FROM events"])
def test_events_are_append_only_in_sqlite(reg, sql):
    reg.record(WorkspaceCreated(name="ws", root="/w"))
    with pytest.raises(DBAPIError, match="append-only"):
        with reg.engine.begin() as conn:
            conn.execute(text(sql))
    assert [e.actor for e in reg.events()] == ["tester"]


def test_racing_writer_cannot_fork_the_chain(reg, monkeypatch):
    reg.record(WorkspaceCreated(name="first", root="/w"))
    real_tail = registry_events._tail_hash
    stale = iter(["0" * 64])  # first attempt sees the tail another writer already extended
    monkeypatch.setattr(registry_events, "_tail_hash", lambda s: next(stale, None) or real_tail(s))
    second = reg.record(WorkspaceCreated(name="second", root="/w"))
    assert second.prev_hash == reg.events()[0].hash
    assert len(reg.events()) == 2 and reg.verify_events() == (True, None)


# -- atomicity ---------------------------------------------------------------------------------


def test_missing_foreign_key_writes_nothing(reg):
    before = counts(reg)
    with pytest.raises(NotFoundError, match="dataset id 999 not found"):
        start_run(reg, dataset_id=999)
    with pytest.raises(NotFoundError, match="run id 5 not found"):
        add_adapter(reg, run_id=5)
    with pytest.raises(NotFoundError, match="adapter id 3"):
        reg.add_evaluation(model_ref="x", adapter_id=3, dataset_id=None, split="eval", metrics={}, n_examples=0,
                           results_path="r", report_path=None)
    assert counts(reg) == before


def test_database_foreign_key_failure_writes_nothing(reg, monkeypatch):
    # Skip the friendly pre-check so the database's own FK constraint is what fails, mid-transaction.
    monkeypatch.setattr(registry_api.Registry, "_require", staticmethod(lambda *a, **k: None))
    with pytest.raises(IntegrityError):
        start_run(reg, dataset_id=999)
    assert counts(reg) == {name: 0 for name in TABLES}


def test_failure_after_event_rolls_back_row_lineage_and_event(reg, monkeypatch):
    def append_then_fail(session, event, actor=None):
        registry_events.append_event(session, event, actor)  # the event row is flushed, then we fail
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(registry_api, "append_event", append_then_fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        add_dataset(reg)
    assert counts(reg) == {name: 0 for name in TABLES}
    monkeypatch.undo()
    assert add_dataset(reg).id >= 1 and reg.verify_events() == (True, None)


def test_failure_in_finish_run_keeps_run_running(reg, monkeypatch):
    run = start_run(reg)

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(registry_api, "append_event", boom)
    with pytest.raises(RuntimeError):
        reg.finish_run(run.id, status="completed", metrics={"x": 1})
    monkeypatch.undo()
    assert reg.get_run(run.id).status == "running"
    assert [e.action for e in reg.events()] == ["run.started"]


# -- errors ------------------------------------------------------------------------------------


def test_bad_url_raises_tunewright_error():
    with pytest.raises(TunewrightError, match="not a url"):
        Registry("not a url")
    with pytest.raises(TunewrightError, match="nosuchdb"):
        Registry("nosuchdb://host/db")


def test_unreachable_database_names_url_without_password(tmp_path):
    with pytest.raises(TunewrightError) as err:
        Registry("postgresql://alice:s3cret@127.0.0.1:1/registry")
    assert "127.0.0.1" in str(err.value) and "s3cret" not in str(err.value)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TunewrightError, match="registry"):
        Registry(f"sqlite:///{blocker / 'sub' / 'registry.db'}")


def test_sqlite_file_that_is_not_a_database(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(TunewrightError, match="junk.db"):
        Registry(f"sqlite:///{junk}")


def test_database_from_a_newer_tunewright_is_refused(reg, url):
    with reg.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(TunewrightError, match="newer tunewright"):
        Registry(url)
