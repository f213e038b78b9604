"""The chain behind one adapter, from the registry's rows: source files -> synthetic rounds -> review
decisions -> dataset version -> training run -> adapter -> evaluations and reports -> sign-offs ->
alias moves and exports.

Everything here is read from registry records (never inferred), and every node carries the row it
came from, so a model card can cite ``dataset 3`` or ``evaluation 12`` and a reader can look it up.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..registry import tables as t
from ..registry.deploy import split_adapter_ref
from ..registry.events import jsonable
from ..registry.reports import ReportRecord, SignOffRecord
from ..registry.tables import AdapterRecord, DatasetRecord, EvaluationRecord, RunRecord, snapshot

STAGES = ("source_file", "synth_round", "review", "index", "dataset", "run", "adapter", "evaluation", "report", "signoff",
          "alias_change", "export")


@dataclass(frozen=True)
class Node:
    kind: str
    id: str
    label: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass
class Lineage:
    adapter: AdapterRecord
    run: RunRecord | None
    dataset: DatasetRecord | None
    evaluations: list[EvaluationRecord]
    base_evaluations: list[EvaluationRecord]
    reports: list[ReportRecord]
    dataset_reports: list[ReportRecord]
    signoffs: list[SignOffRecord]
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (parent key, child key, relation)

    def by_stage(self) -> dict[str, list[Node]]:
        grouped: dict[str, list[Node]] = {stage: [] for stage in STAGES}
        for node in self.nodes:
            grouped.setdefault(node.kind, []).append(node)
        return {stage: nodes for stage, nodes in grouped.items() if nodes}

    def add(self, node: Node, parent: Node | None = None, relation: str = "") -> Node:
        if all(n.key != node.key for n in self.nodes):
            self.nodes.append(node)
        if parent is not None and (parent.key, node.key, relation) not in self.edges:
            self.edges.append((parent.key, node.key, relation))
        return node


def base_evaluation_for(tuned: EvaluationRecord, evaluations: list[EvaluationRecord]) -> EvaluationRecord | None:
    """The base row recorded with a tuned evaluation: `tunewright eval` writes both with the same
    results file and dataset. The newest wins if an evaluation was repeated into the same file."""
    same = [e for e in evaluations if e.adapter_id is None and e.results_path == tuned.results_path
            and e.dataset_id == tuned.dataset_id]
    return same[-1] if same else None


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def build_lineage(registry, ref: str) -> Lineage:
    """``ref`` is ``name`` (latest version) or ``name@version``; an unknown adapter is a NotFoundError."""
    name, version = split_adapter_ref(ref)
    adapter = registry.get_adapter(name, version)
    return registry.read(lambda s: _build(s, adapter))


def _build(s: Session, adapter: AdapterRecord) -> Lineage:
    run = snapshot(RunRecord, s.get(t.Run, adapter.run_id)) if adapter.run_id is not None else None
    dataset_row = s.get(t.Dataset, run.dataset_id) if run is not None and run.dataset_id is not None else None
    dataset = snapshot(DatasetRecord, dataset_row) if dataset_row is not None else None
    evaluations = [snapshot(EvaluationRecord, r) for r in s.scalars(
        select(t.Evaluation).where(t.Evaluation.adapter_id == adapter.id).order_by(t.Evaluation.id))]
    # The base row of each comparison is recorded next to the tuned one: same dataset and results file.
    result_paths = {e.results_path for e in evaluations}
    base_evaluations = [snapshot(EvaluationRecord, r) for r in s.scalars(
        select(t.Evaluation).where(t.Evaluation.adapter_id.is_(None), t.Evaluation.results_path.in_(result_paths))
        .order_by(t.Evaluation.id))] if result_paths else []
    reports = [snapshot(ReportRecord, r) for r in s.scalars(
        select(t.Report).where(t.Report.adapter_id == adapter.id).order_by(t.Report.id))]
    dataset_reports = [snapshot(ReportRecord, r) for r in s.scalars(
        select(t.Report).where(t.Report.dataset_id == dataset.id).order_by(t.Report.id))] if dataset else []
    eval_ids = [e.id for e in evaluations + base_evaluations]
    report_ids = [r.id for r in reports + dataset_reports]
    signoffs = [snapshot(SignOffRecord, r) for r in s.scalars(select(t.SignOff).where(or_(
        (t.SignOff.subject_kind == "evaluation") & t.SignOff.subject_id.in_(eval_ids or [-1]),
        (t.SignOff.subject_kind == "report") & t.SignOff.subject_id.in_(report_ids or [-1]),
    )).order_by(t.SignOff.id))]
    graph = Lineage(adapter=adapter, run=run, dataset=dataset, evaluations=evaluations,
                    base_evaluations=base_evaluations, reports=reports, dataset_reports=dataset_reports,
                    signoffs=signoffs)

    dataset_node = _dataset_part(s, graph, dataset) if dataset is not None else None
    run_node = None
    if run is not None:
        run_node = graph.add(Node("run", str(run.id), f"run {run.id} ({run.status})", {
            "name": run.name, "seed": run.seed, "config": run.config, "library_versions": run.library_versions,
            "hardware": run.hardware, "base_model": run.base_model_ref, "base_model_sha256": run.base_model_sha256,
            "metrics": run.metrics, "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
            "pii_override": (run.config or {}).get("pii_override")}), dataset_node, "input_to")
    adapter_node = graph.add(Node("adapter", str(adapter.id), f"{adapter.name} v{adapter.version}", {
        "weights_sha256": adapter.weights_sha256, "method": adapter.method, "path": adapter.path,
        "created_at": _iso(adapter.created_at)}), run_node, "produced")
    nodes_by_key: dict[str, Node] = {}
    for evaluation in base_evaluations + evaluations:
        node = graph.add(Node("evaluation", str(evaluation.id), f"evaluation {evaluation.id} ({evaluation.model_ref})", {
            "model_ref": evaluation.model_ref, "split": evaluation.split, "n_examples": evaluation.n_examples,
            "metrics": evaluation.metrics, "created_at": _iso(evaluation.created_at)}), adapter_node,
            "evaluated_by" if evaluation.adapter_id == adapter.id else "baseline")
        nodes_by_key[node.key] = node
    for report in reports + dataset_reports:
        parent = adapter_node if report.adapter_id == adapter.id else dataset_node
        node = graph.add(Node("report", str(report.id), f"{report.kind} report {report.id}", {
            "kind": report.kind, "path": report.path, "sha256": report.sha256, "summary": report.summary,
            "created_at": _iso(report.created_at)}), parent, f"{report.kind}_report")
        nodes_by_key[node.key] = node
    for signoff in signoffs:
        graph.add(Node("signoff", str(signoff.id), f"signed by {signoff.person} on {signoff.signed_on}", {
            "person": signoff.person, "role": signoff.role, "signed_on": signoff.signed_on,
            "statement": signoff.statement, "subject": f"{signoff.subject_kind} {signoff.subject_id}",
            "subject_sha256": signoff.subject_sha256}),
            nodes_by_key.get(f"{signoff.subject_kind}:{signoff.subject_id}"), "signed_off")
    for change in s.scalars(select(t.AliasChange).where(or_(
            t.AliasChange.adapter_id == adapter.id, t.AliasChange.split_adapter_id == adapter.id))
            .order_by(t.AliasChange.id)):
        role = "split" if change.split_adapter_id == adapter.id and change.adapter_id != adapter.id else "serves"
        graph.add(Node("alias_change", str(change.id), f"{change.alias} {change.action} ({role})", {
            "alias": change.alias, "action": change.action, "actor": change.actor, "reason": change.reason,
            "evidence": jsonable(change.evidence or {}), "split_percent": change.split_percent,
            "created_at": _iso(change.created_at)}), adapter_node, "deployed_as")
    for export in s.scalars(select(t.Export).where(t.Export.adapter_id == adapter.id).order_by(t.Export.id)):
        graph.add(Node("export", str(export.id), f"export {export.id} ({', '.join(export.formats)})", {
            "formats": export.formats, "path": export.path, "files": jsonable(export.files),
            "check": jsonable(export.check), "created_at": _iso(export.created_at)}), adapter_node, "exported")
    return graph


def _dataset_part(s: Session, graph: Lineage, dataset: DatasetRecord) -> Node:
    spec = dataset.spec or {}
    node = Node("dataset", str(dataset.id), f"{dataset.name}@{dataset.version}", {
        "content_sha256": dataset.content_sha256, "n_train": dataset.n_train, "n_eval": dataset.n_eval,
        "n_duplicates": dataset.n_duplicates, "kind": spec.get("kind"), "path": dataset.path,
        "created_at": _iso(dataset.created_at)})
    for source in dataset.source_files:
        graph.add(Node("source_file", source["sha256"], source.get("path", source["sha256"][:12]),
                       {"sha256": source["sha256"], "rows": source.get("rows")}), None)
    graph.add(node)
    for source in dataset.source_files:
        graph.edges.append((f"source_file:{source['sha256']}", node.key, "source_of"))
    round_ids = [int(e.parent_id) for e in s.scalars(select(t.Lineage).where(
        t.Lineage.child_kind == "dataset", t.Lineage.child_id == str(dataset.id),
        t.Lineage.parent_kind == "synth_round"))]
    for synth_round in s.scalars(select(t.SynthRound).where(t.SynthRound.id.in_(round_ids or [-1]))
                                 .order_by(t.SynthRound.id)):
        templates = sorted({c.provenance.get("template_sha256") for c in s.scalars(
            select(t.Candidate).where(t.Candidate.round_id == synth_round.id)) if c.provenance.get("template_sha256")})
        round_node = graph.add(Node("synth_round", str(synth_round.id), f"{synth_round.queue} round {synth_round.number}", {
            "teacher_model": synth_round.teacher_model, "spec_sha256": synth_round.spec_sha256,
            "prompt_template_sha256": templates, "n_generated": synth_round.n_generated,
            "filter_counts": jsonable(synth_round.filter_counts), "guidance": jsonable(synth_round.guidance),
            "usage": jsonable(synth_round.usage), "status": synth_round.status,
            "started_at": _iso(synth_round.started_at)}))
        for edge in s.scalars(select(t.Lineage).where(t.Lineage.child_kind == "synth_round",
                                                      t.Lineage.child_id == str(synth_round.id),
                                                      t.Lineage.parent_kind == "file")):
            file_node = graph.add(Node("source_file", edge.parent_id, edge.parent_id[:12], {"sha256": edge.parent_id}))
            graph.edges.append((file_node.key, round_node.key, "source_of"))
        graph.edges.append((round_node.key, node.key, "source_of"))
    index_ids = [int(e.parent_id) for e in s.scalars(select(t.Lineage).where(
        t.Lineage.child_kind == "dataset", t.Lineage.child_id == str(dataset.id), t.Lineage.parent_kind == "index"))]
    for index in s.scalars(select(t.RetrievalIndex).where(t.RetrievalIndex.id.in_(index_ids or [-1]))):
        # Open-book rows carry retrieved records: the index is an input of the dataset, its sources above it.
        index_node = graph.add(Node("index", str(index.id), f"index {index.name}@{index.version}", {
            "sha256": index.sha256, "n_chunks": index.n_chunks, "path": index.path,
            "created_at": _iso(index.created_at)}))
        for source in index.source_files or []:
            file_node = graph.add(Node("source_file", source["sha256"], source.get("path", source["sha256"][:12]),
                                       {"sha256": source["sha256"]}))
            graph.edges.append((file_node.key, index_node.key, "source_of"))
        graph.edges.append((index_node.key, node.key, "context_for"))
    candidate_ids = spec.get("candidate_ids") or []
    if spec.get("kind") == "review":
        reviews = list(s.scalars(select(t.Review).where(t.Review.candidate_id.in_(
            [int(c) for c in candidate_ids] or [-1]))))
        queue = spec.get("queue")
        all_reviews = list(s.scalars(select(t.Review).join(t.Candidate, t.Candidate.id == t.Review.candidate_id)
                                     .where(t.Candidate.queue == queue))) if queue else reviews
        decisions = Counter(r.decision for r in all_reviews)
        reviewers = Counter(r.reviewer for r in all_reviews)
        review_node = graph.add(Node("review", str(queue), f"review of queue {queue}", {
            "queue": queue, "decisions": dict(decisions), "reviewers": dict(reviewers),
            "n_reviews": len(all_reviews), "n_rows_kept": len(candidate_ids),
            "n_auto_accepted": len(spec.get("auto_accepted") or []),
            "auto_accept_score": spec.get("auto_accept_score")}))
        graph.edges.append((review_node.key, node.key, "approved_into"))
    return node
