"""`tunewright card`: model card, datasheet and Annex IV documentation traced to registry records.

No model is loaded: the records are written straight into a fresh registry, the way the stages
would write them, and every figure in the documents is read back against those rows.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from tunewright.config import Recipe
from tunewright.config.govern import DocumentationSpec, GatesSpec, GovernSpec
from tunewright.data.schema import ChatRow
from tunewright.errors import NotFoundError, TunewrightError
from tunewright.registry import tables as t
from tunewright.registry.events import AliasChanged, OverrideRecorded, append_event
from tunewright.registry.reports import ReportStore, evaluation_sha256
from tunewright.review.feedback import add_feedback
from tunewright.workspace import Workspace

CITATION = re.compile(r"\]\(#rec-([a-z-]+)-(\d+)\)")
TODAY = dt.date.today().isoformat()
DOCS = ("datasheet", "model_card", "technical_documentation")
PURPOSE = "Answer questions about the shop's <b>returns</b> policy."


def _documentation() -> DocumentationSpec:
    return DocumentationSpec(provider="Shop Ltd", contact="ml@shop.example", intended_purpose=PURPOSE,
                             intended_users="support staff", out_of_scope=["medical advice"],
                             known_limitations=["English only"], risks=["wrong refund dates: reviewed weekly"],
                             human_oversight="an agent reads every answer before it is sent", license="apache-2.0",
                             language=["en"])


def _workspace(root: Path, documentation: DocumentationSpec | None = None, **gates) -> Workspace:
    govern = GovernSpec(documentation=documentation or DocumentationSpec(), gates=GatesSpec(**gates))
    return Workspace.init(root, Recipe(name="shop", govern=govern))


def _synthetic_dataset(ws: Workspace):
    """A teacher round with filter counts, two reviewers' decisions, then the reviewed dataset."""
    from tunewright.review import NewCandidate, ReviewStore
    from tunewright.review.dataset import build_reviewed_dataset

    store = ReviewStore(ws.registry)
    record = store.open_round("shop", spec_sha256="5" * 64, teacher_model="teacher-x",
                              guidance={"notes": ["be brief"]})
    new = [NewCandidate(row=ChatRow(messages=[{"role": "user", "content": f"How long is return window {i}?"},
                                              {"role": "assistant", "content": f"{30 + i} days."}]),
                        provenance={"generator": "self-instruct", "template_sha256": "7" * 64, "round": 1})
           for i in range(4)]
    store.finish_round(record.id, new, usage={"calls": 6}, filter_counts={"exact-duplicates": 2, "pii": 1},
                       failures=[], n_generated=7)
    ids = [c.id for c in store.candidates("shop")]
    for i, cid in enumerate(ids):
        store.review(cid, reviewer="ann", decision="accept")
        store.review(cid, reviewer="bob", decision="reject" if i == 3 else "accept")
    return build_reviewed_dataset(ws, "shop")


def _questions(correct: dict[str, int]) -> dict:
    """``metrics["questions"]`` as `tunewright eval` stores it: 2 questions per kind."""
    by_kind = {kind: {"correct": c, "n": 2, "accuracy": c / 2} for kind, c in correct.items()}
    total = sum(correct.values())
    return {"accuracy": total / (2 * len(correct)), "correct": total, "n": 2 * len(correct), "by_kind": by_kind,
            "file": "customer-questions.jsonl", "sha256": "e" * 64}


def _train_and_evaluate(ws: Workspace, dataset, *, forgetting: bool = True, questions: bool = False):
    reg = ws.registry
    run = reg.start_run(name="shop", kind="train", config={"train": {"method": "lora", "r": 8, "max_length": 128}},
                        seed=7, hardware={"cpu_count": 2, "processor": "x86_64"},
                        library_versions={"tunewright": "0.1.0", "peft": "0.21.2"}, dataset_id=dataset.id,
                        base_model_ref="smollm2-135m-instruct", base_model_sha256="c" * 64, output_path="runs/x")
    reg.finish_run(run.id, status="completed", metrics={"train_seconds": 12.5, "tokens_per_second": 321.25,
                                                        "tokens_seen": 4016, "steps": 10, "final_loss": 0.5})
    adapter = reg.add_adapter(name="shop", path=str(ws.root / "adapters" / "shop"), weights_sha256="d" * 64,
                              method="lora", run_id=run.id, base_model_ref="smollm2-135m-instruct",
                              base_model_sha256="c" * 64)
    results = str(ws.root / "reports" / "shop" / "results.jsonl")
    base_metrics = {"exact_match": 0.1, "contains": 0.2, "token_f1": 0.3125}
    metrics = {"exact_match": 0.6, "contains": 0.7, "token_f1": 0.8125}
    if questions:
        base_metrics["questions"] = _questions({"price": 0, "policy": 1})
        metrics["questions"] = _questions({"price": 2, "policy": 1})
    base = reg.add_evaluation(model_ref="base", adapter_id=None, dataset_id=dataset.id, split="eval",
                              metrics=base_metrics, n_examples=10, results_path=results, report_path=None)
    if forgetting:
        metrics["forgetting"] = {"kl": 0.0123, "retention": 0.95, "n_general_prompts": 20, "n_retention_probes": 40,
                                 "n_base_correct": 20, "n_tuned_kept": 19}
    tuned = reg.add_evaluation(model_ref="shop", adapter_id=adapter.id, dataset_id=dataset.id, split="eval",
                               metrics=metrics, n_examples=10, results_path=results, report_path=None)
    return run, adapter, base, tuned


def _bias_report(ws: Workspace, adapter) -> object:
    folder = ws.dir("reports") / "shop" / "bias"
    folder.mkdir(parents=True, exist_ok=True)
    groups = {"tuned": {"female": {"refusal_rate": 0.1234, "negative_share": 0.05},
                        "male": {"refusal_rate": 0.0617, "negative_share": 0.04}},
              "base": {"female": {"refusal_rate": 0.2222, "negative_share": 0.1},
                       "male": {"refusal_rate": 0.2, "negative_share": 0.1}}}
    # The layout govern.bias writes: per attribute, the group names, then each model's statistics.
    (folder / "bias.json").write_text(json.dumps({"summary": {}, "attributes": {"gender": {
        "groups": ["female", "male"], "n_units": 4,
        **{model: {"groups": g, "fail_rate": 0.05 if model == "base" else 0.125, "pairs": [
            {"groups": ["female", "male"], "answer_change": 0.125, "similarity": 0.9}]}
           for model, g in groups.items()}}}}))
    (folder / "bias.html").write_text("<html>bias</html>")
    summary = {"max_gap": 0.0617, "max_gap_metric": "refusal_rate", "attribute": "gender", "groups": ["female", "male"],
               "ci": [0.01, 0.11], "base_max_gap": 0.0222, "issues": [], "n_prompts": 48}
    return ReportStore(ws.registry).add_report(kind="bias", path=folder / "bias.html", summary=summary,
                                               adapter_id=adapter.id)


def _deploy(ws: Workspace, adapter, tuned, bias) -> None:
    """A production move carrying the gates' verdict and an override, as the release gates record them."""
    evidence = {"evaluation_id": tuned.id, "bias_report_id": bias.id, "override": "launch deadline, fix in v2",
                "gates": {"passed": False, "checks": [
                    {"name": "task gain (contains)", "value": 0.5, "threshold": 0.1, "passed": True},
                    {"name": "largest bias gap", "value": 0.0617, "threshold": 0.05, "passed": False}]}}

    def work(s):
        s.add(t.AliasChange(alias="production", action="set", adapter_id=adapter.id, split_adapter_id=None,
                            split_percent=0, previous_id=None, actor="ann", created_at=t.utcnow(),
                            reason="first release", evidence=evidence))
        append_event(s, AliasChanged(alias="production", change="set", adapter_id=adapter.id, split_adapter_id=None,
                                     split_percent=0, previous_adapter_id=None, reason="first release",
                                     evidence=evidence), "ann")
        append_event(s, OverrideRecorded(check="release_gates", target=f"adapter {adapter.id} -> production",
                                         reason="launch deadline, fix in v2", findings={}), "ann")
    ws.registry.write(work)


@pytest.fixture
def shop(tmp_path):
    """A workspace holding every kind of record the documents draw on."""
    ws = _workspace(tmp_path / "ws", _documentation(), min_task_gain=0.1, max_bias_gap=0.05)
    dataset = _synthetic_dataset(ws)
    run, adapter, base, tuned = _train_and_evaluate(ws, dataset)
    reports = ReportStore(ws.registry)
    # Registering a dataset scans it for PII already; a later scan (an allowlist edit) is the one shown.
    pii_path = ws.dir("reports") / "pii.json"
    pii_path.write_text("{}")
    pii = reports.add_report(kind="pii_scan", path=pii_path, dataset_id=dataset.id, summary={
        "n_rows": 3, "n_findings": 1, "rows_with_findings": 1, "by_kind": {"email": 1}, "n_allowed": 1,
        "n_unresolved": 0, "status": "resolved"})
    bias = _bias_report(ws, adapter)
    reports.sign_off("evaluation", tuned.id, person="Ada Lovelace", role="ML lead", signed_on=TODAY,
                     statement="metrics checked against results.jsonl")
    reports.sign_off("report", bias.id, person="Grace Hopper", role="fairness reviewer", signed_on=TODAY,
                     statement="groups reviewed")
    _deploy(ws, adapter, tuned, bias)
    add_feedback(ws.registry, request_id="r1", model="shop", rating="up")
    add_feedback(ws.registry, request_id="r2", model="shop", rating="up")
    return {"ws": ws, "dataset": dataset, "run": run, "adapter": adapter, "base": base, "tuned": tuned,
            "pii": pii, "bias": bias}


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def _row(ws: Workspace, kind: str, record_id: int):
    model = {"adapter": t.Adapter, "dataset": t.Dataset, "run": t.Run, "evaluation": t.Evaluation,
             "report": t.Report, "signoff": t.SignOff, "synth-round": t.SynthRound, "alias-change": t.AliasChange,
             "export": t.Export, "feedback": t.Feedback, "event": t.Event}[kind]
    return ws.registry.read(lambda s: s.get(model, record_id) is not None)


def test_card_figures_trace_to_registry_rows(shop):
    from tunewright.govern.card import generate_docs

    ws, dataset, tuned, base = shop["ws"], shop["dataset"], shop["tuned"], shop["base"]
    result = generate_docs(ws, "shop", formats="md,html")
    folder = ws.root / "reports" / "shop" / "docs"
    assert result.folder == folder
    texts = {kind: (folder / f"{kind}.md").read_text() for kind in DOCS}
    card = texts["model_card"]
    assert (folder / "README.md").read_text() == card

    meta = _front_matter(card)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["library_name"] == "peft"
    assert meta["license"] == "apache-2.0" and meta["datasets"] == [dataset.name] and "lora" in meta["tags"]
    (entry,) = meta["model-index"][0]["results"]
    assert {m["type"]: m["value"] for m in entry["metrics"]} == {
        k: v for k, v in tuned.metrics.items() if k != "forgetting"}
    assert entry["dataset"]["revision"] == dataset.version and entry["dataset"]["split"] == "eval"
    assert entry["source"]["name"].endswith(f"evaluation {tuned.id}")

    # Base vs tuned, forgetting and the by-group breakdown, each figure next to its records.
    row = f"| answer contained | eval split, 10 examples | 20.0% | 70.0% | +50.0 pts | [[evaluation {tuned.id}]]"
    assert row in card
    assert "| 0.0123 | 95.0% | 20 | 40 | 20 | 19 |" in card
    assert "| female | 0.2222 | 0.1234 | 0.1 | 0.05 |" in card and "refusal_rate (base)" in card
    assert "answered differently (gender): base 5.0%, tuned 12.5%" in card
    assert "12.5 s at 321.2 tokens/s" in card
    assert "Ada Lovelace | ML lead | " + TODAY in card

    sheet = texts["datasheet"]
    assert f"| rows in the train split | {dataset.n_train} |" in sheet
    assert f"| rows in the eval split | {dataset.n_eval} |" in sheet
    assert f"`{dataset.content_sha256}`" in sheet
    assert "| exact-duplicates | 2 |" in sheet and "| pii | 1 |" in sheet  # the round's filter counts
    assert "`teacher-x`" in sheet and "`" + "7" * 64 + "`" in sheet and "`" + "5" * 64 + "`" in sheet
    assert "accept 7, reject 1" in sheet and "ann (4), bob (4)" in sheet and "cohen kappa" in sheet
    assert f"1 findings in 1 of 3 rows [[report {shop['pii'].id}]]" in sheet and "| email | 1 |" in sheet
    assert "unresolved: 0" in sheet

    annex = texts["technical_documentation"]
    for heading in ("## 1. General description", "## 2. Detailed description", "## 3. Monitoring, functioning",
                    "## 4. Performance metrics", "## 5. Risk management", "## 6. Changes", "## 7. Harmonised",
                    "## 8. EU declaration", "## 9. Post-market monitoring"):
        assert heading in annex
    assert "| largest bias gap | 0.0617 | 0.05 | **FAIL** |" in annex
    assert "launch deadline, fix in v2" in annex and "first release" in annex
    assert "Grace Hopper | fairness reviewer | " + TODAY in annex
    assert "up 2, rows [[feedback 1]]" in annex
    events = ws.registry.events()
    head = [e for e in events if e.action != "report.recorded"][-1]  # the documents register themselves after
    assert f"[[event {head.id}]](#rec-event-{head.id}) with hash `{head.hash}`" in annex and "passes" in annex

    # Every citation names a registry row, and the appendix lists it with its hash and audit event.
    for kind, text in texts.items():
        cited = set(CITATION.findall(text))
        assert cited, kind
        for record_kind, record_id in cited:
            assert _row(ws, record_kind, int(record_id)), (kind, record_kind, record_id)
            assert f'<a id="rec-{record_kind}-{record_id}"></a>' in text, (kind, record_kind, record_id)
        assert text.rstrip().split("\n## ")[-1].startswith("Gaps to fill")
    assert f"metrics sha256 (what a sign-off freezes): `{evaluation_sha256(tuned)}`" in card
    assert f"content sha256: `{dataset.content_sha256}`" in sheet

    # Registered as reports, pinned by the Markdown's hash, with their gap counts.
    registered = {r.kind: r for r in ReportStore(ws.registry).list_reports(adapter_id=shop["adapter"].id)}
    for doc in result.documents:
        report = registered[doc.kind]
        assert report.path == str(folder / f"{doc.kind}.md") and report.dataset_id == dataset.id
        assert report.summary["n_gaps"] == len(doc.gaps) and report.summary["n_citations"] > 0
        assert report.summary["files"]["html"]["path"] == str(folder / f"{doc.kind}.html")
    ok, _ = ws.registry.verify_events()
    assert ok

    html = (folder / "model_card.html").read_text()
    assert "<svg" in html and 'id="rec-evaluation-' in html and "&lt;b&gt;returns&lt;/b&gt;" in html
    assert "<b>returns</b>" not in html and 'href="http' not in html and "<link" not in html


def test_card_front_matter_reads_as_a_hub_model_card(shop):
    # Only this reading needs the optional package; everything else in the card is checked above.
    hub = pytest.importorskip("huggingface_hub")
    from tunewright.govern.card import generate_docs

    generate_docs(shop["ws"], "shop", formats="md")
    card = (shop["ws"].root / "reports" / "shop" / "docs" / "model_card.md").read_text()
    parsed = hub.ModelCard(card).data.eval_results
    assert {r.metric_type: r.metric_value for r in parsed} == {
        k: v for k, v in shop["tuned"].metrics.items() if k != "forgetting"}
    assert len(parsed) == len(shop["tuned"].metrics) - 1  # one result per metric, none merged away


def test_gaps_listed_when_missing_and_gone_once_provided(tmp_path):
    from tunewright.data.api import import_files
    from tunewright.govern.card import generate_docs

    ws = _workspace(tmp_path / "ws")
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}?"},
                                                       {"role": "assistant", "content": f"a{i}."}]}) + "\n"
                              for i in range(10)))
    dataset = import_files(ws, [source], eval_fraction=0.2)
    _, adapter, _, tuned = _train_and_evaluate(ws, dataset, forgetting=False)

    before = generate_docs(ws, "shop", formats="md").gaps
    for gap in ("the intended purpose is not stated", "no bias report is registered for this adapter",
                f"evaluation {tuned.id} (shop on the eval split) is not signed off", "no release gate is configured",
                f"evaluation {tuned.id} has no forgetting measurement (KL on general prompts, retention of known "
                "answers)", "the license is not stated"):
        assert gap in before
    (pii,) = ReportStore(ws.registry).list_reports("pii_scan", dataset_id=dataset.id)  # made by the import
    assert f"report {pii.id} (pii_scan report) is not signed off" in before
    card = (ws.root / "reports" / "shop" / "docs" / "model_card.md").read_text()
    assert "license" not in _front_matter(card)
    assert "**Gap:** the intended purpose is not stated" in card

    recipe = ws.recipe.model_copy(update={"govern": GovernSpec(documentation=_documentation(),
                                                               gates=GatesSpec(min_task_gain=0.2))})
    ws.recipe_path.write_text(yaml.safe_dump(recipe.model_dump(mode="json", exclude_none=True), sort_keys=False))
    ws = Workspace.open(ws.root)
    ReportStore(ws.registry).sign_off("evaluation", tuned.id, person="Ada", role="ML lead", signed_on=TODAY,
                                      statement="checked")
    _bias_report(ws, adapter)

    after = generate_docs(ws, "shop", formats="md").gaps
    for gap in ("the intended purpose is not stated", "no bias report is registered for this adapter",
                f"evaluation {tuned.id} (shop on the eval split) is not signed off", "no release gate is configured",
                "the license is not stated", "the provider is not named"):
        assert gap not in after
    assert f"evaluation {tuned.id} has no forgetting measurement" in " ".join(after)  # still missing
    card = (ws.root / "reports" / "shop" / "docs" / "model_card.md").read_text()
    assert _front_matter(card)["license"] == "apache-2.0"
    assert "Intended purpose: Answer questions about the shop's &lt;b>returns&lt;/b> policy. " \
           "(declared in tunewright.yaml)" in card


def test_customer_questions_show_beside_forgetting_and_stay_out_of_the_model_index(tmp_path):
    from tunewright.data.api import import_files
    from tunewright.govern.card import generate_docs

    ws = _workspace(tmp_path / "ws", min_questions_accuracy=0.5)
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}?"},
                                                       {"role": "assistant", "content": f"a{i}."}]}) + "\n"
                              for i in range(10)))
    dataset = import_files(ws, [source], eval_fraction=0.2)
    _, _, base, tuned = _train_and_evaluate(ws, dataset, questions=True)
    result = generate_docs(ws, "shop", formats="md")
    folder = ws.root / "reports" / "shop" / "docs"
    card = (folder / "model_card.md").read_text()
    refs = f"[[evaluation {tuned.id}]](#rec-evaluation-{tuned.id}) [[evaluation {base.id}]](#rec-evaluation-{base.id})"
    assert "### Customer questions (never trained on)" in card
    assert card.index("### Forgetting") < card.index("### Customer questions") < card.index("### Results by group")
    assert f"| customer-questions.jsonl | price | 0.0% (0 of 2) | 100.0% (2 of 2) | +100.0 pts | {refs} |" in card
    assert f"| customer-questions.jsonl | policy | 50.0% (1 of 2) | 50.0% (1 of 2) | +0.0 pts | {refs} |" in card
    assert f"| customer-questions.jsonl | all | 25.0% (1 of 4) | 75.0% (3 of 4) | +50.0 pts | {refs} |" in card
    (entry,) = _front_matter(card)["model-index"][0]["results"]
    assert {m["type"] for m in entry["metrics"]} == {"exact_match", "contains", "token_f1"}
    annex = (folder / "technical_documentation.md").read_text()
    assert "| customer-questions.jsonl | all | 25.0% (1 of 4) | 75.0% (3 of 4) |" in annex
    assert "minimum customer questions accuracy: 0.5" in annex
    assert not [gap for gap in result.gaps if "question" in gap]


def test_model_card_pdf_is_rendered(shop):
    """One real WeasyPrint render (the slow part): the model card's HTML to a PDF pypdf can read."""
    from pypdf import PdfReader

    from tunewright.govern.card import _intro
    from tunewright.govern.docs_data import collect_facts
    from tunewright.govern.lineage_svg import lineage_svg
    from tunewright.govern.model_card import build_model_card
    from tunewright.govern.render import render_html, render_pdf

    facts = collect_facts(shop["ws"], "shop@1")
    doc, front = build_model_card(facts)
    page = render_html(doc.render(_intro(facts)), title=doc.title, kind_label="Model card",
                       generated_at=facts.generated_at, registry=facts.registry_url, lineage_svg=lineage_svg(facts),
                       front_matter=front.strip("-\n"))
    pdf = render_pdf(page, shop["ws"].root)
    assert pdf.startswith(b"%PDF")
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) >= 1
    text = " ".join(p.extract_text() for p in reader.pages)
    assert "Model card: shop v1" in text and "Gaps to fill" in text


def _cli() -> typer.Typer:
    from tunewright.cli.card import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keep `card` a subcommand, as under the real `tunewright`
        pass
    return app


def test_card_command_prints_paths_and_gaps(shop, monkeypatch):
    from tunewright.cli import context

    monkeypatch.setattr(context, "_state", {"workspace": shop["ws"].root})
    result = CliRunner().invoke(_cli(), ["card", "shop", "--no-pdf"], terminal_width=200)
    assert result.exit_code == 0, result.output
    folder = shop["ws"].root / "reports" / "shop" / "docs"
    assert str(folder) in result.output and "model_card.html" in result.output
    assert "gap(s) to fill" in result.output and "no drift report is registered" in result.output
    assert not (folder / "model_card.pdf").exists()


def test_unknown_adapter_and_unknown_format_are_one_clear_line(shop, monkeypatch):
    from tunewright.cli import context
    from tunewright.govern.card import generate_docs

    ws = shop["ws"]
    with pytest.raises(NotFoundError, match=r"adapter 'nope' not found; known: shop$"):
        generate_docs(ws, "nope")
    with pytest.raises(NotFoundError, match="version 9 not found; known versions: 1"):
        generate_docs(ws, "shop@9")
    with pytest.raises(TunewrightError, match=r"unknown format 'docx' \(formats: md, html, pdf\)") as caught:
        generate_docs(ws, "shop", formats="md,docx")
    assert caught.value.field == "format"
    assert ReportStore(ws.registry).list_reports(kind="model_card") == []  # nothing was written
    assert not (ws.root / "reports" / "shop" / "docs").exists()

    monkeypatch.setattr(context, "_state", {"workspace": ws.root})
    result = CliRunner().invoke(_cli(), ["card", "nope"])
    assert isinstance(result.exception, NotFoundError) and "\n" not in str(result.exception)
    result = CliRunner().invoke(_cli(), ["card", "shop", "--format", "pdf,odt"])
    assert isinstance(result.exception, TunewrightError) and result.exception.field == "format"


def test_lineage_drawing_has_a_box_per_record_and_no_arrow_through_a_box(shop):
    from tunewright.govern.docs_data import collect_facts
    from tunewright.govern.lineage_svg import drawn_nodes, lineage_svg

    facts = collect_facts(shop["ws"], "shop")
    columns, edges = drawn_nodes(facts)
    names = [name for name, _ in columns]
    assert names == ["synth round", "review", "dataset, base model", "run", "adapter", "evaluation", "report",
                     "signoff", "alias change"]
    svg = lineage_svg(facts)
    assert svg.count("<rect") == sum(len(nodes) for _, nodes in columns)
    assert f'href="#rec-adapter-{shop["adapter"].id}"' in svg
    assert svg.count('class="edge"') == len(edges)
    # An arrow that skips columns runs in a lane under every box.
    from tunewright.govern.lineage_svg import BOX_H

    lowest = max(float(y) for y in re.findall(r'<rect x="[\d.]+" y="([\d.]+)"', svg)) + BOX_H
    lanes = [float(y) for y in re.findall(r'd="M[\d.,]+ H[\d.]+ V([\d.]+) ', svg)]
    assert lanes and min(lanes) > lowest
