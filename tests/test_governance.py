"""Governance records: the audit log's tamper evidence, release gates, alias history, sign-offs,
PII scans before training, and the lineage chain."""

from __future__ import annotations

import json
import sqlite3

import pytest

from helpers import qa_rows, run_cli

SHA = "ab" * 32


@pytest.fixture
def ws(tmp_path, tiny_model_dir):
    from tunewright.config import Recipe
    from tunewright.workspace import Workspace

    return Workspace.init(tmp_path / "ws", Recipe(name="shop", base_model=str(tiny_model_dir)))


def _set_in_recipe(ws, section: str, values: dict) -> None:
    """Write ``govern.<section>`` settings into the workspace recipe file."""
    import yaml

    path = ws.root / "tunewright.yaml"
    data = yaml.safe_load(path.read_text())
    data.setdefault("govern", {}).setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _with_gates(ws, **gates):
    from tunewright.workspace import Workspace

    recipe = ws.recipe.model_copy(deep=True)
    recipe.govern.gates = recipe.govern.gates.model_copy(update=gates)
    return Workspace(ws.root, recipe)


def _dataset(ws, rows=None, name="shop-qa"):
    from tunewright.data.api import register_rows

    return register_rows(ws, name, rows or qa_rows(6), spec={"kind": "test"}, eval_fraction=0.3, seed=0)


def _adapter(ws, name="alpha", *, gain=0.6, retention=0.95, kl=0.02, bias_gap=None, evaluate=True, questions=None):
    """A registered adapter with a base and a tuned evaluation recorded together, and maybe a bias report."""
    from tunewright.registry.reports import ReportStore

    reg = ws.registry
    dataset = _dataset(ws)
    run = reg.start_run(name=name, kind="train", config={}, seed=0, hardware={}, library_versions={},
                        dataset_id=dataset.id, base_model_ref="tiny", base_model_sha256=SHA, output_path="x")
    reg.finish_run(run.id, status="completed", metrics={"train_seconds": 1.0})
    adapter = reg.add_adapter(name=name, path=str(ws.root / "adapters" / name), weights_sha256=SHA, method="lora",
                              run_id=run.id, base_model_ref="tiny", base_model_sha256=SHA)
    if evaluate:
        results = str(ws.root / "reports" / name / "results.jsonl")
        reg.add_evaluation(model_ref="base", adapter_id=None, dataset_id=dataset.id, split="eval",
                           metrics={"contains": 0.2}, n_examples=10, results_path=results, report_path=None)
        metrics = {"contains": 0.2 + gain, "forgetting": {"kl": kl, "retention": retention}}
        if questions is not None:  # the tuned accuracy on eval.questions, nested as `tunewright eval` stores it
            metrics["questions"] = {"accuracy": questions, "correct": round(questions * 20), "n": 20, "by_kind": {}}
        reg.add_evaluation(model_ref=name, adapter_id=adapter.id, dataset_id=dataset.id, split="eval",
                           metrics=metrics, n_examples=10, results_path=results, report_path=None)
    if bias_gap is not None:
        path = ws.root / "reports" / f"{name}-bias.html"
        path.write_text("<html>bias</html>")
        ReportStore(reg).add_report("bias", path, {"max_gap": bias_gap}, adapter_id=adapter.id)
    return adapter


# -- audit log ---------------------------------------------------------------------------------


def _log(ws, n=6):
    from tunewright.registry.events import WorkspaceCreated

    for i in range(n):
        ws.registry.record(WorkspaceCreated(name=f"event-{i}", root="/r"), actor="tester")
    return [e.id for e in ws.registry.events()]


def _db(ws):
    """Write access as a tamperer has it: the append-only triggers go first."""
    db = sqlite3.connect(ws.root / "registry.db", isolation_level=None)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    return db


def _verify(ws, anchor=None):
    """The damage found, leaving out the removed triggers every tamper test starts with."""
    from tunewright.govern.audit import verify_log

    result = verify_log(ws.registry, anchor)
    result.damage = [d for d in result.damage if d.kind != "unguarded"]
    return result


def test_removing_the_append_only_triggers_is_reported(ws):
    from tunewright.govern.audit import verify_log

    _log(ws)
    _db(ws).close()
    assert [d.kind for d in verify_log(ws.registry).damage] == ["unguarded"]


def test_intact_log_verifies(ws):
    ids = _log(ws)
    result = _verify(ws)
    assert result.ok and result.n_events == len(ids) and result.head_id == ids[-1]


def test_an_edited_event_is_named(ws):
    ids = _log(ws)
    with _db(ws) as db:
        db.execute("UPDATE events SET payload = ? WHERE id = ?", (json.dumps({"name": "forged", "root": "/r"}), ids[3]))
    result = _verify(ws)
    assert [(d.event_id, d.kind) for d in result.damage] == [(ids[3], "edited")]


def test_a_deleted_event_is_named(ws):
    ids = _log(ws)
    with _db(ws) as db:
        db.execute("DELETE FROM events WHERE id = ?", (ids[3],))
    damage = _verify(ws).damage
    assert [(d.event_id, d.kind) for d in damage] == [(ids[4], "deleted")]
    assert str(ids[3]) in damage[0].detail


def test_deleting_the_newest_events_is_caught(ws):
    ids = _log(ws)
    with _db(ws) as db:
        db.execute("DELETE FROM events WHERE id >= ?", (ids[-2],))
    damage = _verify(ws).damage
    assert [d.kind for d in damage] == ["truncated"]
    assert f"{ids[-2]} to {ids[-1]}" in damage[0].detail


def test_deleting_the_newest_events_and_covering_up_is_caught_by_the_release_anchors(ws):
    """Delete the newest events, rewind SQLite's counter and recreate the triggers: the chain alone
    looks intact, but the head anchored outside the database after the alias change is gone."""
    from tunewright.govern.audit import read_release_anchors, verify_log, verify_workspace
    from tunewright.registry.deploy import DeploymentStore

    _adapter(ws, "alpha")
    DeploymentStore(ws.registry).set_alias("production", "alpha")
    anchors = read_release_anchors(ws.anchor_file)
    assert [a["action"] for a in anchors] == ["adapter.registered", "alias.changed"]
    assert verify_workspace(ws).ok
    last = anchors[-1]["event_id"]
    db = sqlite3.connect(ws.root / "registry.db", isolation_level=None)
    triggers = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    for name, _ in triggers:
        db.execute(f"DROP TRIGGER {name}")
    db.execute("DELETE FROM alias_changes")
    db.execute("DELETE FROM events WHERE id >= ?", (last,))
    db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'", (last - 1,))
    for _, sql in triggers:
        db.execute(sql)
    db.close()
    assert verify_log(ws.registry).ok  # the chain alone cannot tell
    damage = verify_workspace(ws).damage
    assert [(d.event_id, d.kind) for d in damage] == [(last, "anchor")]
    assert "gone from the log" in damage[0].detail


def test_a_torn_last_anchor_line_is_skipped_and_a_bad_one_named(ws):
    from tunewright.errors import TunewrightError
    from tunewright.govern.audit import read_release_anchors

    ws.anchor_file.parent.mkdir(parents=True, exist_ok=True)
    ws.anchor_file.write_text('{"event_id": 1, "hash": "aa"}\n{"event_id": 2, "ha')
    assert [a["event_id"] for a in read_release_anchors(ws.anchor_file)] == [1]
    ws.anchor_file.write_text('not json\n{"event_id": 2, "hash": "bb"}\n')
    with pytest.raises(TunewrightError, match=r"anchors.jsonl:1: anchor line is not JSON"):
        read_release_anchors(ws.anchor_file)


def test_an_inserted_event_is_named(ws):
    ids = _log(ws)
    at = ids[3]
    with _db(ws) as db:
        for event_id in reversed(ids[3:]):  # make room: shift the later events up by one
            db.execute("UPDATE events SET id = ? WHERE id = ?", (event_id + 1, event_id))
        ts = db.execute("SELECT ts FROM events WHERE id = ?", (ids[2],)).fetchone()[0]
        db.execute("INSERT INTO events (id, ts, actor, action, subject_kind, subject_id, payload, prev_hash, hash) "
                   "VALUES (?, ?, 'mallory', 'workspace.created', 'workspace', 'x', '{}', ?, ?)",
                   (at, ts, "f" * 64, "e" * 64))
    damage = [(d.event_id, d.kind) for d in _verify(ws).damage]
    assert (at, "inserted") in damage
    assert all(kind != "deleted" for _, kind in damage)


def test_reordered_events_are_named(ws):
    ids = _log(ws)
    columns = "ts, actor, action, subject_kind, subject_id, payload, prev_hash, hash"
    with _db(ws) as db:
        a = db.execute(f"SELECT {columns} FROM events WHERE id = ?", (ids[2],)).fetchone()
        b = db.execute(f"SELECT {columns} FROM events WHERE id = ?", (ids[3],)).fetchone()
        sets = ", ".join(f"{c} = ?" for c in columns.split(", "))
        db.execute("UPDATE events SET prev_hash = 'x1', hash = 'y1' WHERE id = ?", (ids[2],))  # unique columns
        db.execute(f"UPDATE events SET {sets} WHERE id = ?", (*a, ids[3]))
        db.execute(f"UPDATE events SET {sets} WHERE id = ?", (*b, ids[2]))
    damage = [(d.event_id, d.kind) for d in _verify(ws).damage]
    assert damage[:2] == [(ids[2], "reordered"), (ids[3], "reordered")]
    assert {kind for _, kind in damage} == {"reordered"}  # the next event's link points into the moved pair too


def test_unreadable_rows_and_a_missing_table_are_reported_not_raised(ws, capsys):
    ids = _log(ws)
    with _db(ws) as db:
        db.execute("UPDATE events SET payload = 'not json{' WHERE id = ?", (ids[1],))
    assert [(d.event_id, d.kind) for d in _verify(ws).damage] == [(ids[1], "unreadable")]
    with _db(ws) as db:
        db.execute("DROP TABLE events")
    code, out, err = run_cli(["--workspace", ws.root, "audit", "verify"], capsys)
    assert code == 1 and "event log cannot be read" in err and "no such table" in err


def test_the_deployment_history_and_adapter_hashes_cannot_change_in_place(ws):
    from tunewright.registry.deploy import DeploymentStore

    alpha = _adapter(ws, "alpha")
    DeploymentStore(ws.registry).set_alias("production", "alpha")
    db = sqlite3.connect(ws.root / "registry.db", isolation_level=None)
    for statement, message in [
        ("UPDATE alias_changes SET adapter_id = 99", "deployment history is append-only"),
        ("DELETE FROM alias_changes", "deployment history is append-only"),
        (f"UPDATE adapters SET weights_sha256 = 'x' WHERE id = {alpha.id}", "keeps its identity and hashes"),
        ("DELETE FROM adapters", "kept for the audit trail"),
    ]:
        with pytest.raises(sqlite3.IntegrityError, match=message):
            db.execute(statement)
    db.execute(f"UPDATE adapters SET path = '/moved' WHERE id = {alpha.id}")  # a folder may move
    db.close()
    assert ws.registry.get_adapter("alpha").path == "/moved"


def test_tables_that_decide_what_is_served_are_checked_against_their_events(ws):
    """Rows edited without an event (the chain itself intact) are named: an adapter's weights hash,
    an alias repointed, an adapter row added behind the registry's back."""
    from tunewright.registry.deploy import DeploymentStore

    alpha, beta = _adapter(ws, "alpha"), _adapter(ws, "beta")
    DeploymentStore(ws.registry).set_alias("production", "alpha")
    assert _verify(ws).ok
    with _db(ws) as db:
        db.execute("UPDATE alias_changes SET adapter_id = ? WHERE alias = 'production'", (beta.id,))
        db.execute("UPDATE adapters SET weights_sha256 = ? WHERE id = ?", ("cd" * 32, alpha.id))
        db.execute("INSERT INTO adapters (name, version, path, weights_sha256, method, base_model_ref, "
                   "created_at) VALUES ('gamma', 1, '/x', ?, 'lora', 'tiny', '2026-01-01 00:00:00')", (SHA,))
    details = [(d.kind, d.detail) for d in _verify(ws).damage]
    assert [k for k, _ in details] == ["table", "table", "table"]
    assert "adapter row %d no longer matches its event: weights_sha256" % alpha.id in details[0][1]
    assert "(gamma@1) has no adapter.registered event" in details[1][1]
    assert "alias 'production' now points elsewhere than its last event says: adapter_id" in details[2][1]


def test_review_decisions_are_checked_against_their_events(ws):
    """A decision flipped in the table (reject -> accept) would change what trains: it is named."""
    from review_helpers import add_round

    from tunewright.review import ReviewStore

    store = ReviewStore(ws.registry)
    add_round(store, [("q1?", "a1"), ("q2?", "a2")])
    first, second = [c.id for c in store.candidates("support")]
    store.review(first, reviewer="ann", decision="reject")
    store.review(second, reviewer="ann", decision="accept", edited=[{"role": "user", "content": "q2?"},
                                                                    {"role": "assistant", "content": "a2, edited"}])
    assert _verify(ws).ok
    with _db(ws) as db:
        db.execute("UPDATE reviews SET decision = 'accept' WHERE candidate_id = ?", (first,))
        db.execute("UPDATE reviews SET after = ? WHERE candidate_id = ?",
                   (json.dumps([{"role": "user", "content": "q2?"}, {"role": "assistant", "content": "forged"}]), second))
    details = [d.detail for d in _verify(ws).damage]
    assert len(details) == 2
    assert "no longer matches its event: decision changed" in details[0]
    assert "no longer matches its event: after changed" in details[1]


def test_a_rewritten_chain_passes_alone_but_fails_against_its_anchor(ws, tmp_path, capsys):
    from tunewright.govern.audit import write_anchor
    from tunewright.registry.events import chain_hash

    ids = _log(ws)
    anchor_file = tmp_path / "anchor.json"
    write_anchor(ws.registry, anchor_file)
    with _db(ws) as db:  # someone who can write the database recomputes every hash after an edit
        db.execute("UPDATE events SET payload = ? WHERE id = ?", (json.dumps({"name": "forged", "root": "/r"}), ids[1]))
        rows = db.execute("SELECT id, ts, actor, action, subject_kind, subject_id, payload FROM events ORDER BY id").fetchall()
        import datetime as dt
        prev = "0" * 64
        fresh = []
        for event_id, ts, actor, action, kind, subject, payload in rows:
            moment = dt.datetime.fromisoformat(ts).replace(tzinfo=dt.timezone.utc)
            digest = chain_hash(prev, ts=moment, actor=actor, action=action, subject_kind=kind, subject_id=subject,
                                payload=json.loads(payload))
            fresh.append((event_id, prev, digest))
            prev = digest
        for event_id, _, _ in fresh:
            db.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?", (f"p{event_id}", f"h{event_id}", event_id))
        for event_id, prev_hash, digest in fresh:
            db.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?", (prev_hash, digest, event_id))
    assert _verify(ws).damage == []  # the limit of any unkeyed chain, stated in the module
    code, _, err = run_cli(["--workspace", ws.root, "audit", "verify", "--anchor", anchor_file], capsys)
    assert code == 1 and f"event {ids[-1]}: anchor" in err


def test_audit_verify_cli_names_the_edited_event(ws, capsys):
    ids = _log(ws)
    code, out, _ = run_cli(["--workspace", ws.root, "audit", "verify"], capsys)
    assert code == 0 and f"{len(ids)} events" in out
    with _db(ws) as db:
        db.execute("UPDATE events SET actor = 'mallory' WHERE id = ?", (ids[2],))
    code, _, err = run_cli(["--workspace", ws.root, "audit", "verify"], capsys)
    assert code == 1 and f"event {ids[2]}: edited" in err


# -- release gates -----------------------------------------------------------------------------


def test_gates_refuse_production_with_the_failing_numbers(ws):
    from tunewright.govern.gates import GatedDeployment, GateRefused

    _adapter(ws, gain=0.3, retention=0.7, bias_gap=0.4)
    gated = GatedDeployment(_with_gates(ws, min_task_gain=0.5, min_retention=0.9, max_bias_gap=0.2))
    before = len(ws.registry.events())
    with pytest.raises(GateRefused) as refused:
        gated.set_alias("production", "alpha")
    message = str(refused.value)
    assert "task gain (contains): 0.3" in message and "retention: 0.7" in message and "largest bias gap: 0.4" in message
    assert len(ws.registry.events()) == before  # nothing written
    staged = gated.set_alias("staging", "alpha", reason="try it")  # staging is not gated, but keeps the evidence
    assert staged.evidence["gates"]["passed"] is False and staged.reason == "try it"
    with pytest.raises(GateRefused):
        gated.promote("staging", "production")


def test_an_override_needs_a_reason_and_is_audited(ws):
    from tunewright.govern.gates import GatedDeployment

    adapter = _adapter(ws, gain=0.3, bias_gap=0.1)
    gated = GatedDeployment(_with_gates(ws, min_task_gain=0.5))
    state = gated.set_alias("production", "alpha", reason="hotfix", override="legal approved the 30-point gain")
    assert state.adapter.id == adapter.id and state.evidence["override"] == "legal approved the 30-point gain"
    events = ws.registry.events()
    assert [e.action for e in events[-2:]] == ["alias.changed", "govern.override"]
    assert events[-1].payload["reason"] == "legal approved the 30-point gain"
    assert events[-1].payload["findings"]["failed"][0]["value"] == pytest.approx(0.3)
    assert events[-2].payload["reason"] == "hotfix"


def test_passing_gates_record_their_evidence(ws):
    from tunewright.govern.gates import GatedDeployment

    _adapter(ws, gain=0.6, retention=0.95, kl=0.01, bias_gap=0.05)
    gated = GatedDeployment(_with_gates(ws, min_task_gain=0.5, min_retention=0.9, max_kl=0.1, max_bias_gap=0.2))
    state = gated.set_alias("production", "alpha", reason="weekly release")
    evidence = state.evidence
    assert evidence["gates"]["passed"] and len(evidence["gates"]["checks"]) == 4
    evaluations = ws.registry.list_evaluations()
    assert evidence["evaluation_id"] == evaluations[-1].id and evidence["base_evaluation_id"] == evaluations[-2].id
    assert evidence["bias_report_id"] is not None


def test_gates_without_the_records_they_need_fail_clearly(ws):
    from tunewright.errors import TunewrightError
    from tunewright.govern.gates import GatedDeployment, GateRefused

    _adapter(ws, name="unevaluated", evaluate=False)
    with pytest.raises(TunewrightError, match="has no evaluation"):
        GatedDeployment(_with_gates(ws, min_task_gain=0.1)).set_alias("production", "unevaluated")
    _adapter(ws, name="nobias")
    with pytest.raises(GateRefused, match="no bias report"):
        GatedDeployment(_with_gates(ws, max_bias_gap=0.2)).set_alias("production", "nobias")
    # a tuned evaluation whose base row is missing
    adapter = ws.registry.get_adapter("unevaluated")
    ws.registry.add_evaluation(model_ref="unevaluated", adapter_id=adapter.id, dataset_id=None, split="eval",
                               metrics={"contains": 0.9}, n_examples=3, results_path="elsewhere.jsonl", report_path=None)
    with pytest.raises(TunewrightError, match="no base evaluation"):
        GatedDeployment(_with_gates(ws, min_task_gain=0.1)).set_alias("production", "unevaluated")


def test_the_questions_gate_reads_the_tuned_accuracy(ws):
    from tunewright.govern.gates import GatedDeployment, GateRefused

    _adapter(ws, name="weak", questions=0.45)
    with pytest.raises(GateRefused) as refused:
        GatedDeployment(_with_gates(ws, min_questions_accuracy=0.6)).set_alias("production", "weak")
    tuned = ws.registry.list_evaluations()[-1]
    assert f"customer questions accuracy: 0.45 (needs >= 0.6; evaluation {tuned.id}) -> FAIL" in str(refused.value)

    _adapter(ws, name="strong", questions=0.75)
    state = GatedDeployment(_with_gates(ws, min_questions_accuracy=0.6)).set_alias("production", "strong")
    (check,) = state.evidence["gates"]["checks"]
    tuned = ws.registry.list_evaluations()[-1]
    assert check == {"name": "customer questions accuracy", "value": 0.75, "threshold": 0.6, "passed": True,
                     "detail": f">= 0.6; evaluation {tuned.id}"}
    assert state.evidence["evaluation_id"] == tuned.id

    # An evaluation that asked no questions: one line saying what is missing and how to get it.
    _adapter(ws, name="unasked")
    with pytest.raises(GateRefused) as refused:
        GatedDeployment(_with_gates(ws, min_questions_accuracy=0.6)).set_alias("production", "unasked")
    tuned = ws.registry.list_evaluations()[-1]
    assert (f"customer questions accuracy: not measured (needs >= 0.6; evaluation {tuned.id} asked no customer "
            "questions: set eval.questions and run 'tunewright eval' again) -> FAIL") in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_gate_threshold_out_of_range_names_file_line_and_field(ws):
    from tunewright.config import load_recipe
    from tunewright.errors import TunewrightError

    recipe = ws.root / "tunewright.yaml"
    for gate in ("min_retention", "min_questions_accuracy"):
        _set_in_recipe(ws, "gates", {"min_retention": None, "min_questions_accuracy": None, gate: 1.5})
        line = next(i for i, text in enumerate(recipe.read_text().splitlines(), 1) if f"{gate}: 1.5" in text)
        with pytest.raises(TunewrightError) as err:
            load_recipe(recipe)
        assert f"tunewright.yaml:{line}: field 'govern.gates.{gate}'" in str(err.value)


def test_alias_cli_refuses_then_accepts_an_override(ws, capsys):
    _adapter(ws, gain=0.1)
    _set_in_recipe(ws, "gates", {"min_task_gain": 0.5})
    code, _, err = run_cli(["--workspace", ws.root, "registry", "alias", "set", "production", "alpha"], capsys)
    assert code == 1 and "release gates refuse alpha v1" in err and "task gain (contains): 0.1" in err
    code, out, err = run_cli(["--workspace", ws.root, "registry", "alias", "set", "production", "alpha",
                              "--override", "pilot with 10 users"], capsys)
    assert code == 0, err
    assert "override: pilot with 10 users" in out


# -- alias history -----------------------------------------------------------------------------


def test_history_answers_which_adapter_served_when(ws, capsys):
    from tunewright.govern.gates import GatedDeployment
    from tunewright.govern.history import adapter_periods, serving_at

    _adapter(ws, "alpha")
    _adapter(ws, "beta")
    gated = GatedDeployment(ws)
    first = gated.set_alias("production", "alpha", reason="first release")
    second = gated.set_alias("production", "beta", reason="better answers")
    assert serving_at(ws.registry, "production", first.created_at).adapter.name == "alpha"
    assert serving_at(ws.registry, "production", second.created_at).adapter.name == "beta"
    assert serving_at(ws.registry, "production", first.created_at.replace(year=2000)) is None
    periods = adapter_periods(ws.registry, "alpha")
    assert len(periods) == 1 and periods[0].start.reason == "first release"
    assert periods[0].end.change_id == second.change_id
    code, out, _ = run_cli(["--workspace", ws.root, "history", "--at", first.created_at.isoformat()], capsys)
    assert code == 0 and "alpha@1" in out
    code, out, _ = run_cli(["--workspace", ws.root, "history", "alpha"], capsys)
    assert code == 0 and "production" in out and "serves" in out and "first" in out
    code, _, err = run_cli(["--workspace", ws.root, "history", "--at", "yesterday"], capsys)
    assert code == 2 and "not a date" in err
    code, _, err = run_cli(["--workspace", ws.root, "history", "gamma"], capsys)
    assert code != 0 and "gamma" in err


# -- sign-off ----------------------------------------------------------------------------------


def test_sign_off_is_a_chained_event_and_rejects_bad_input(ws, capsys):
    from tunewright.errors import TunewrightError
    from tunewright.registry.reports import ReportStore

    _adapter(ws, bias_gap=0.1)
    evaluation = ws.registry.list_evaluations()[-1]
    code, out, err = run_cli(["--workspace", ws.root, "signoff", "evaluation", evaluation.id, "--by", "Dana Reyes",
                              "--role", "QA lead", "--date", "2026-11-28", "--statement", "checked 10 answers"], capsys)
    assert code == 0, err
    event = ws.registry.events()[-1]
    assert event.action == "signoff.recorded" and event.payload["person"] == "Dana Reyes"
    assert event.payload["signed_on"] == "2026-11-28" and ws.registry.verify_events()[0]
    store = ReportStore(ws.registry)
    with pytest.raises(TunewrightError, match="not a date"):
        store.sign_off("evaluation", evaluation.id, person="x", signed_on="28/11/2026", statement="ok")
    with pytest.raises(TunewrightError, match="in the future"):
        store.sign_off("evaluation", evaluation.id, person="x", signed_on="2999-01-01", statement="ok")
    with pytest.raises(TunewrightError, match="evaluation 999 not found"):
        store.sign_off("evaluation", 999, person="x", signed_on="2026-11-28", statement="ok")
    report = store.list_reports("bias")[-1]
    open(report.path, "a").write("edited after the fact")
    with pytest.raises(TunewrightError, match="changed or went missing"):
        store.sign_off("report", report.id, person="x", signed_on="2026-11-28", statement="ok")
    code, _, err = run_cli(["--workspace", ws.root, "signoff", "adapter", 1, "--by", "x", "--statement", "y"], capsys)
    assert code == 2 and "cannot sign off a 'adapter'" in err


# -- PII ---------------------------------------------------------------------------------------


def _pii_rows():
    from tunewright.data.schema import ChatRow

    rows = qa_rows(4)
    rows.append(ChatRow(messages=[{"role": "user", "content": "I am jane.doe@mail.example, call 415-555-0199"},
                                  {"role": "assistant", "content": "Write to help@shop.example."}]))
    return rows


def test_every_dataset_version_gets_a_pii_scan(ws):
    from tunewright.registry.reports import ReportStore

    dataset = _dataset(ws, _pii_rows(), name="with-pii")
    report = ReportStore(ws.registry).latest_report("pii_scan", dataset_id=dataset.id)
    assert report.summary["n_findings"] == 3 and report.summary["by_kind"] == {"email": 2, "phone": 1}
    assert report.summary["status"] == "findings"
    written = open(report.path).read()
    assert "jane.doe@mail.example" not in written  # the report does not copy the personal data it found
    clean = _dataset(ws, qa_rows(3), name="clean")
    assert ReportStore(ws.registry).latest_report("pii_scan", dataset_id=clean.id).summary["status"] == "clean"


def test_training_on_unresolved_pii_needs_a_recorded_reason(ws):
    from tunewright.errors import TunewrightError
    from tunewright.data.pii_scan import require_resolved
    from tunewright.workspace import Workspace

    dataset = _dataset(ws, _pii_rows(), name="with-pii")
    with pytest.raises(TunewrightError, match="3 unresolved PII findings .*--allow-pii"):
        require_resolved(ws, dataset)
    override = require_resolved(ws, dataset, allow_pii="synthetic test identities, not real people")
    assert override["n_unresolved"] == 3
    event = ws.registry.events()[-1]
    assert event.action == "govern.override" and event.payload["check"] == "pii"
    data = ws.recipe.model_dump()
    data["govern"]["pii"]["allow"] = [{"text": t, "reason": "public"} for t in
                                      ("jane.doe@mail.example", "415-555-0199", "help@shop.example")]
    allowed = Workspace(ws.root, type(ws.recipe).model_validate(data))
    assert require_resolved(allowed, dataset) is None  # the allowlist resolves every finding: a new scan says so


def test_train_cli_refuses_unresolved_pii_before_loading_anything(ws, capsys):
    _dataset(ws, _pii_rows(), name="shop")
    code, _, err = run_cli(["--workspace", ws.root, "train", "--dataset", "shop", "--max-steps", "1"], capsys)
    assert code == 2 and "unresolved PII findings" in err
    assert ws.registry.list_runs() == []


# -- lineage -----------------------------------------------------------------------------------


def test_lineage_walks_from_files_to_deployment(ws, capsys):
    from tunewright.govern.gates import GatedDeployment
    from tunewright.govern.lineage import build_lineage

    adapter = _adapter(ws, bias_gap=0.1)
    GatedDeployment(ws).set_alias("production", "alpha", reason="first release")
    graph = build_lineage(ws.registry, "alpha")
    stages = graph.by_stage()
    assert [n.label for n in stages["adapter"]] == ["alpha v1"]
    assert stages["run"][0].details["seed"] == 0
    assert {n.details["model_ref"] for n in stages["evaluation"]} == {"base", "alpha"}
    assert {n.details["kind"] for n in stages["report"]} == {"bias", "pii_scan"}
    assert stages["alias_change"][0].details["reason"] == "first release"
    assert ("run:1", f"adapter:{adapter.id}", "produced") in graph.edges
    code, out, _ = run_cli(["--workspace", ws.root, "lineage", "alpha"], capsys)
    assert code == 0 and "alpha v1" in out and "production set" in out
    code, _, err = run_cli(["--workspace", ws.root, "lineage", "nope"], capsys)
    assert code == 2 and "adapter 'nope' not found; known: alpha" in err
