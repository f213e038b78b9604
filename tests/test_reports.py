"""Each JSON report is written through its type and read back through its layout: the same dict comes
back, a file from before the ``format`` field reads as format 1, and a newer format is refused with the
file and the field named."""

from __future__ import annotations

import json

import pytest

from tunewright.errors import TunewrightError
from tunewright.reports import EVAL_REPORT, DatasetRef, EvalReport, ScoreSummary


def _old_and_future(json_path, layout):
    """Rewrite ``json_path`` as the previous release wrote it (no ``format``), read it; then as a future one."""
    data = json.loads(json_path.read_text())
    del data["format"]
    json_path.write_text(json.dumps(data))
    assert layout.read(json_path)["format"] == 1
    json_path.write_text(json.dumps({**data, "format": layout.version + 1}))
    with pytest.raises(TunewrightError) as caught:
        layout.read(json_path)
    assert caught.value.file == str(json_path) and caught.value.field == "format"
    assert str(caught.value).startswith(f"{json_path}: field 'format': ") and "\n" not in str(caught.value)


def test_evaluation_report_round_trip_old_file_and_future_format(tmp_path):
    from tunewright.evaluate.report import write_report

    report = EvalReport(
        format=EVAL_REPORT.version, adapter="shop", base_model="tiny", dataset=DatasetRef(name="shop", version=1),
        split="eval", n_examples=2, created_at="2025-01-01T00:00:00+00:00",
        before=ScoreSummary(metrics={"contains": 0.5}, seconds=1.5),
        after=ScoreSummary(metrics={"contains": 1.0}, seconds=1.25),
        training={"losses": [2.0, 1.0], "steps": 2, "tokens_seen": 10, "tokens_per_second": 5.0,
                  "train_seconds": 2.0, "final_loss": 1.0},
        examples=[{"question": "q", "expected": "x", "base_response": "b", "tuned_response": "t",
                   "before": {"contains": 0.0}, "after": {"contains": 1.0}, "verdict": "fixed"}],
    )
    json_path, _ = write_report(tmp_path, report)
    assert EVAL_REPORT.read(json_path) == report
    _old_and_future(json_path, EVAL_REPORT)


def test_a_report_missing_what_readers_need_or_not_an_object_is_one_line(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"format": 1, "before": {}}))
    with pytest.raises(TunewrightError, match="the evaluation report has no 'after'") as caught:
        EVAL_REPORT.read(path)
    assert caught.value.field == "after" and caught.value.file == str(path)
    path.write_text("[1, 2]")
    with pytest.raises(TunewrightError, match="must be a JSON object, not list"):
        EVAL_REPORT.read(path)
    path.write_text("{not json")
    with pytest.raises(TunewrightError, match="cannot read the evaluation report"):
        EVAL_REPORT.read(path)
    with pytest.raises(TunewrightError, match=r"format '1' is not one this version reads \(it reads format 1\)"):
        EVAL_REPORT.from_json({"format": "1", "before": {}, "after": {}})


def test_bias_report_round_trip_old_file_and_future_format(tmp_path):
    from review_helpers import BagOfWords
    from tunewright.config.govern import BiasSpec
    from tunewright.govern.bias import (ATTRIBUTES_FILE, TEMPLATES_FILE, cap_prompts, counterfactual_test, expand,
                                        load_attributes, load_templates, write_bias_report)
    from tunewright.reports import BIAS_REPORT, BiasReport

    attributes = load_attributes(ATTRIBUTES_FILE)
    prompts = cap_prompts(expand(load_templates(TEMPLATES_FILE, attributes), attributes), 24, seed=0)
    answer = lambda texts: [f"Yes, {len(t) % 3} reasons." for t in texts]  # noqa: E731
    tested = counterfactual_test(prompts, answer, answer, spec=BiasSpec(bootstrap=100), embed=BagOfWords().encode)
    report = BiasReport(format=BIAS_REPORT.version, adapter="shop", adapter_id=1, base_model="tiny",
                        created_at="2025-01-01T00:00:00+00:00", data={"templates": "t.jsonl"}, **tested)
    json_path, _ = write_bias_report(tmp_path, report)
    assert BIAS_REPORT.read(json_path) == json.loads(json.dumps(report))  # tuples come back as lists
    _old_and_future(json_path, BIAS_REPORT)


def test_documents_name_a_bias_json_of_a_newer_format_as_the_gap(tmp_path):
    from types import SimpleNamespace

    from tunewright.govern.docs_data import _bias_facts
    from tunewright.io import sha256_file

    html, json_path = tmp_path / "bias.html", tmp_path / "bias.json"
    html.write_text("<html></html>")
    json_path.write_text(json.dumps({"attributes": {"gender": {"tuned": {"groups": {"f": {"refusal_rate": 0.5}}}}}}))
    record = SimpleNamespace(id=7, path=str(html), sha256=sha256_file(html), summary={})
    facts = _bias_facts(record)
    assert facts.problem is None and facts.tables[0].rows == {"f": {"refusal_rate": 0.5}}  # no format: read as 1
    json_path.write_text(json.dumps({"format": 2, "attributes": {}}))
    facts = _bias_facts(record)
    assert facts.problem == (f"{json_path}: field 'format': bias report format 2 is not one this version reads "
                             "(it reads format 1)")


def test_drift_report_round_trip_old_file_and_future_format(tmp_path):
    from review_helpers import BagOfWords
    from tunewright.reports import DRIFT_REPORT
    from tunewright.serve.drift import build_drift_report, write_drift_report

    train = [f"what does the {item} cost in {colour}" for item in ("kettle", "lamp", "chair", "desk")
             for colour in ("red", "blue", "green")]
    live = [{"ts": f"2026-01-01T00:00:{i:02d}+00:00", "model": "shop", "endpoint": "chat",
             "messages": [{"role": "user", "content": f"how heavy is the {i} parcel to ship abroad"}]} for i in range(12)]
    report = build_drift_report(train, live, embed=BagOfWords().encode)
    assert report["status"] == "ok"
    json_path, _ = write_drift_report(tmp_path, report)
    assert DRIFT_REPORT.read(json_path) == json.loads(json.dumps(report))  # tuples come back as lists
    _old_and_future(json_path, DRIFT_REPORT)


def _check_report():
    from tunewright.reports import CHECK_REPORT, CheckReport, FormatCheck

    gguf = FormatCheck(passed=True, texts_match=True, tokens_match=True, eos_agrees=True, prompt_tokens_match=True,
                       max_logit_diff=1e-5, probes=[{"text": "Paris.", "max_logit_diff": 1e-5}])
    return CheckReport(format=CHECK_REPORT.version, passed=True, failures=[], reference="base model", gguf_dtype="f32",
                       max_new_tokens=8, thresholds={"gguf": {"relative_max_logit_diff": 1e-4}},
                       probes=[[{"role": "user", "content": "Capital of France?"}]],
                       reference_outputs=[{"text": "Paris.", "token_ids": [5], "stopped_at_eos": True, "new_tokens": 1}],
                       formats={"gguf": gguf}, max_logit_diff={"gguf": 1e-5}, seconds=1.5)


def test_export_check_report_round_trip_old_file_and_future_format(tmp_path):
    from tunewright.io import atomic_write_json
    from tunewright.reports import CHECK_REPORT

    report = _check_report()
    atomic_write_json(tmp_path / "check.json", report)  # as export_adapter writes it
    assert CHECK_REPORT.read(tmp_path / "check.json") == report
    _old_and_future(tmp_path / "check.json", CHECK_REPORT)


def test_registry_and_documents_read_the_export_check_through_its_layout(tmp_path):
    from tunewright.govern.docs_data import _export_checks
    from tunewright.govern.lineage import Node
    from tunewright.registry.api import Registry
    from tunewright.registry.deploy import DeploymentStore

    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        store = DeploymentStore(registry)
        old = {k: v for k, v in _check_report().items() if k != "format"}  # as the previous release registered it
        record = store.add_export(model_ref="shop", adapter_id=None, path=str(tmp_path / "old"), formats=["gguf"],
                                  files={}, check=old, files_sha256={})
        assert record.check == {**old, "format": 1}
        with pytest.raises(TunewrightError) as caught:
            store.add_export(model_ref="shop", adapter_id=None, path=str(tmp_path / "new"), formats=["gguf"],
                             files={}, check={**old, "format": 2}, files_sha256={})
        assert caught.value.file == str(tmp_path / "new" / "check.json") and caught.value.field == "format"
        assert store.exports() == [record]
    finally:
        registry.close()

    exports = [Node("export", "1", "export 1", {"path": "exports/a", "check": old}),
               Node("export", "2", "export 2", {"path": "exports/b", "check": None})]
    assert _export_checks(exports) == {"1": {**old, "format": 1}}
    exports[1].details["check"] = {**old, "format": 2}
    with pytest.raises(TunewrightError, match=r"^exports/b/check.json: field 'format': export check report format 2 "):
        _export_checks(exports)
