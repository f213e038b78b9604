"""Everything the model card, the datasheet and the technical documentation say, gathered in one pass
from registry records and the recipe's documentation section. Nothing here is estimated or filled
in: a fact the registry does not hold stays ``None`` or empty, and the documents list it as a gap.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..config.govern import DocumentationSpec, GatesSpec
from ..errors import TunewrightError
from ..io import sha256_file
from ..registry import tables as t
from ..registry.events import EventRecord, to_record
from ..registry.reports import ReportRecord, SignOffRecord, evaluation_sha256
from ..registry.tables import AdapterRecord, EvaluationRecord, RunRecord, snapshot
from ..reports import BIAS_REPORT, CHECK_REPORT, BiasReport, CheckReport
from .docs_records import RecordIndex, build_index, wanted_ids
from .lineage import Lineage, Node, base_evaluation_for, build_lineage

TEST_REPORT_KINDS = ("bias", "pii_scan", "data_scan")  # reports that are test results and need a sign-off


@dataclass(frozen=True)
class EvalPair:
    tuned: EvaluationRecord
    base: EvaluationRecord | None  # the base row recorded with it (same results file and dataset)


@dataclass(frozen=True)
class GroupTable:
    """One attribute's per-group measures for one model, as found in the bias report's JSON."""

    attribute: str
    model: str  # "tuned", "base", or "" when the JSON does not say
    metrics: tuple[str, ...]
    rows: dict[str, dict[str, float]]
    fail_rate: float | None = None  # share of counterfactual pairs whose answers differ, when recorded


@dataclass
class BiasFacts:
    report: ReportRecord
    tables: list[GroupTable] = field(default_factory=list)
    json_path: str | None = None
    problem: str | None = None  # why the per-group breakdown could not be read


@dataclass
class ReviewFacts:
    queue: str
    details: dict[str, Any]
    agreement: Any | None  # review.agreement.AgreementReport


@dataclass(frozen=True)
class RoundFacts:
    node: Node
    generators: dict[str, int]


@dataclass(frozen=True)
class AuditFacts:
    n_events: int
    head_id: int | None
    head_hash: str | None
    ok: bool
    first_bad_id: int | None


@dataclass(frozen=True)
class FeedbackFacts:
    names: tuple[str, ...]
    ratings: dict[str, int]
    first_id: int | None
    last_id: int | None


@dataclass
class DocFacts:
    workspace_name: str
    registry_url: str
    declared: DocumentationSpec
    gates: GatesSpec
    log_requests: bool
    lineage: Lineage
    adapter_versions: list[AdapterRecord]
    pairs: list[EvalPair]
    bias: BiasFacts | None
    pii: ReportRecord | None
    data_scans: list[ReportRecord]
    review: ReviewFacts | None
    rounds: list[RoundFacts]
    alias_changes: list[Node]
    exports: list[Node]
    export_checks: dict[str, CheckReport]  # by export node id; an export registered unchecked has none
    overrides: list[EventRecord]
    feedback: FeedbackFacts
    drift: list[ReportRecord]
    drift_files: list[str]
    dataset_uses: list[tuple[RunRecord, list[AdapterRecord]]]
    dataset_actor: str | None
    audit: AuditFacts
    index: RecordIndex
    generated_at: str

    @property
    def adapter(self) -> AdapterRecord:
        return self.lineage.adapter

    @property
    def run(self) -> RunRecord | None:
        return self.lineage.run

    @property
    def dataset(self):
        return self.lineage.dataset

    @property
    def latest_pairs(self) -> list[EvalPair]:
        """The newest evaluation per dataset and split: the figures a card leads with."""
        latest: dict[tuple[Any, str], EvalPair] = {}
        for pair in self.pairs:
            latest[(pair.tuned.dataset_id, pair.tuned.split)] = pair
        return list(latest.values())

    def signoffs(self, kind: str, record_id: int) -> list[SignOffRecord]:
        return [s for s in self.lineage.signoffs if s.subject_kind == kind and s.subject_id == record_id]

    def signature_holds(self, signoff: SignOffRecord) -> bool:
        """Whether what was signed is still what the registry holds (a re-recorded file breaks it)."""
        if signoff.subject_kind == "evaluation":
            rows = [e for e in self.lineage.evaluations + self.lineage.base_evaluations if e.id == signoff.subject_id]
            return bool(rows) and evaluation_sha256(rows[0]) == signoff.subject_sha256
        rows = [r for r in self.lineage.reports + self.lineage.dataset_reports if r.id == signoff.subject_id]
        return bool(rows) and rows[0].sha256 == signoff.subject_sha256

    def test_reports(self) -> list[tuple[str, Any]]:
        """What Annex IV calls test reports: the adapter's evaluations and its bias/PII/data scans."""
        found: list[tuple[str, Any]] = [("evaluation", p.tuned) for p in self.pairs]
        found += [("report", r) for r in self.lineage.reports + self.lineage.dataset_reports
                  if r.kind in TEST_REPORT_KINDS]
        return found


def collect_facts(workspace, ref: str) -> DocFacts:
    """``ref`` is ``name`` or ``name@version``; an unknown adapter raises the registry's NotFoundError."""
    registry = workspace.registry
    lineage = build_lineage(registry, ref)
    review = _review_facts(registry, lineage)
    audit_ok, first_bad = registry.verify_events()
    return registry.read(lambda s: _read(s, workspace, lineage, review, audit_ok, first_bad))


def _read(s: Session, workspace, lineage: Lineage, review: ReviewFacts | None, audit_ok: bool,
          first_bad: int | None) -> DocFacts:
    adapter, dataset = lineage.adapter, lineage.dataset
    recipe = workspace.recipe
    versions = [snapshot(AdapterRecord, r) for r in s.scalars(
        select(t.Adapter).where(t.Adapter.name == adapter.name).order_by(t.Adapter.version))]
    pairs = [EvalPair(e, base_evaluation_for(e, lineage.base_evaluations)) for e in lineage.evaluations]
    reports = lineage.reports + lineage.dataset_reports
    bias_reports = [r for r in lineage.reports if r.kind == "bias"]
    pii = [r for r in lineage.dataset_reports if r.kind == "pii_scan"]
    uses: list[tuple[RunRecord, list[AdapterRecord]]] = []
    dataset_actor = None
    if dataset is not None:
        for run_row in s.scalars(select(t.Run).where(t.Run.dataset_id == dataset.id).order_by(t.Run.id)):
            made = [snapshot(AdapterRecord, a) for a in s.scalars(
                select(t.Adapter).where(t.Adapter.run_id == run_row.id).order_by(t.Adapter.id))]
            uses.append((snapshot(RunRecord, run_row), made))
        dataset_actor = s.scalar(select(t.Event.actor).where(t.Event.subject_kind == "dataset",
                                                             t.Event.subject_id == str(dataset.id))
                                 .order_by(t.Event.id).limit(1))
    rounds = [RoundFacts(node, _generators(s, int(node.id))) for node in lineage.nodes if node.kind == "synth_round"]
    alias_changes = [n for n in lineage.nodes if n.kind == "alias_change"]
    exports = [n for n in lineage.nodes if n.kind == "export"]
    overrides = _overrides(s, adapter.id, dataset.id if dataset else None)
    feedback = _feedback(s, adapter)
    audit = _audit(s, audit_ok, first_bad)

    wanted = wanted_ids()
    wanted["adapter"].update(a.id for a in versions)
    wanted["evaluation"].update(e.id for e in lineage.evaluations + lineage.base_evaluations)
    wanted["report"].update(r.id for r in reports)
    wanted["signoff"].update(x.id for x in lineage.signoffs)
    wanted["synth_round"].update(int(r.node.id) for r in rounds)
    wanted["alias_change"].update(int(n.id) for n in alias_changes)
    wanted["export"].update(int(n.id) for n in exports)
    wanted["event"].update(e.id for e in overrides)
    if audit.head_id is not None:
        wanted["event"].add(audit.head_id)
    for run, made in uses:
        wanted["run"].add(run.id)
        wanted["adapter"].update(a.id for a in made)
    if lineage.run is not None:
        wanted["run"].add(lineage.run.id)
    if dataset is not None:
        wanted["dataset"].add(dataset.id)
    wanted["feedback"].update(i for i in (feedback.first_id, feedback.last_id) if i is not None)

    return DocFacts(
        workspace_name=recipe.name, registry_url=workspace.registry.display_url,
        declared=recipe.govern.documentation, gates=recipe.govern.gates, log_requests=recipe.serve.log_requests,
        lineage=lineage, adapter_versions=versions, pairs=pairs,
        bias=_bias_facts(bias_reports[-1]) if bias_reports else None, pii=pii[-1] if pii else None,
        data_scans=[r for r in lineage.dataset_reports if r.kind == "data_scan"], review=review, rounds=rounds,
        alias_changes=alias_changes, exports=exports, export_checks=_export_checks(exports), overrides=overrides,
        feedback=feedback,
        drift=[r for r in reports if r.kind == "drift"],
        drift_files=sorted(str(p) for p in (Path(workspace.root) / "reports" / "drift").glob("*.json")),
        dataset_uses=uses, dataset_actor=dataset_actor, audit=audit, index=build_index(s, wanted),
        generated_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def _export_checks(exports: list[Node]) -> dict[str, CheckReport]:
    """Each export's parity check as the registry holds it (a copy of its check.json, which the error names)."""
    return {node.id: CHECK_REPORT.from_json(node.details["check"], file=Path(node.details["path"]) / "check.json")
            for node in exports if node.details.get("check") is not None}


def _generators(s: Session, round_id: int) -> dict[str, int]:
    rows = s.execute(select(t.Candidate.generator, func.count()).where(t.Candidate.round_id == round_id)
                     .group_by(t.Candidate.generator))
    return {name: int(n) for name, n in rows}


def _overrides(s: Session, adapter_id: int, dataset_id: int | None) -> list[EventRecord]:
    """Override events whose target names this adapter or its dataset ("adapter 3 -> production")."""
    mine = {("adapter", adapter_id)} | ({("dataset", dataset_id)} if dataset_id is not None else set())
    found = []
    for event in s.scalars(select(t.Event).where(t.Event.action == "govern.override").order_by(t.Event.id)):
        target = str((event.payload or {}).get("target", ""))
        named = {(kind, int(number)) for kind, number in re.findall(r"\b(adapter|dataset) (\d+)\b", target)}
        if named & mine:
            found.append(to_record(event))
    return found


def _feedback(s: Session, adapter: AdapterRecord) -> FeedbackFacts:
    # Feedback names the model as the client asked for it; these are the names that mean this adapter.
    names = (adapter.name, f"{adapter.name}@{adapter.version}")
    rows = list(s.execute(select(t.Feedback.id, t.Feedback.rating).where(t.Feedback.model.in_(names))
                          .order_by(t.Feedback.id)))
    return FeedbackFacts(names, dict(Counter(r.rating for r in rows)), rows[0].id if rows else None,
                         rows[-1].id if rows else None)


def _audit(s: Session, ok: bool, first_bad: int | None) -> AuditFacts:
    head = s.scalars(select(t.Event).order_by(t.Event.id.desc()).limit(1)).first()
    count = s.scalar(select(func.count()).select_from(t.Event)) or 0
    return AuditFacts(int(count), head.id if head else None, head.hash if head else None, ok, first_bad)


def _review_facts(registry, lineage: Lineage) -> ReviewFacts | None:
    node = next((n for n in lineage.nodes if n.kind == "review"), None)
    if node is None:
        return None
    from ..review.agreement import agreement_report
    from ..review.store import ReviewStore

    queue = node.details.get("queue")
    reviews = ReviewStore(registry).reviews(queue) if queue else []
    return ReviewFacts(str(queue), node.details, agreement_report(reviews) if reviews else None)


# -- the bias report's per-group results ---------------------------------------------------------------


def _bias_facts(report: ReportRecord) -> BiasFacts:
    facts = BiasFacts(report)
    path = Path(report.path)
    if not path.is_file():
        facts.problem = f"the registered report file {path} is missing"
        return facts
    if sha256_file(path) != report.sha256:
        facts.problem = f"the report file {path} changed since report {report.id} was recorded"
        return facts
    json_path = path if path.suffix == ".json" else path.with_name("bias.json")
    if not json_path.is_file():
        facts.problem = f"no bias.json next to {path}"
        return facts
    pinned = next((v for k, v in (report.summary or {}).items() if k.endswith("json_sha256")), None)
    if pinned and sha256_file(json_path) != pinned:
        facts.problem = f"{json_path} does not match the sha256 recorded with report {report.id}"
        return facts
    try:
        facts.tables = _group_tables(BIAS_REPORT.read(json_path))
    except TunewrightError as exc:
        facts.problem = str(exc)  # names the file, and the field where one is at fault
        return facts
    facts.json_path = str(json_path)
    if not facts.tables:
        facts.problem = f"{json_path} holds no per-group results"
    return facts


def _group_tables(report: BiasReport) -> list[GroupTable]:
    from .bias import group_tables

    tables = []
    for row in group_tables(report):
        metrics = tuple(dict.fromkeys(m for measures in row["groups"].values() for m in measures))
        tables.append(GroupTable(row["attribute"], row["model"], metrics, row["groups"], row["fail_rate"]))
    return tables
