"""A datasheet for the dataset version an adapter was trained on, under the question headings of
Gebru et al., "Datasheets for Datasets": motivation, composition, collection, cleaning, labelling,
PII, uses, distribution and maintenance. Answers come from the dataset row, the synthetic rounds and
review decisions behind it, and its scan reports; what people must answer is taken from the recipe.
"""

from __future__ import annotations

from typing import Any

from ..registry.events import canonical_sha256
from .docs_data import DocFacts
from .docs_md import Doc, code, esc, num


def build_datasheet(facts: DocFacts) -> Doc:
    dataset = facts.dataset
    name = f"{dataset.name}@{dataset.version}" if dataset else f"(no dataset for {facts.adapter.name})"
    doc = Doc(f"Datasheet: {name}", facts.index)
    if dataset is None:
        doc.p(doc.gap(f"adapter {facts.adapter.name} v{facts.adapter.version} has no training dataset in the "
                      "registry", "train it from a registered dataset"))
        return doc
    ref = doc.cite("dataset", dataset.id)
    spec = dataset.spec or {}
    _motivation(doc, facts, ref)
    _composition(doc, facts, ref)
    doc.h2("Collection process")
    kind = spec.get("kind")
    if kind == "build":
        _built(doc, spec, ref)
    elif kind == "review":
        _synthetic(doc, facts, ref)
    elif kind == "import":
        doc.p(f"Imported from files {', '.join(code(f) for f in spec.get('files') or [])}, split with seed "
              f"{num(spec.get('seed'))} and eval fraction {num(spec.get('eval_fraction'))} {ref}.")
        doc.p(doc.gap("how the imported files were collected is not recorded", "describe their origin in the "
                      "datasheet by hand"))
    else:
        doc.p(doc.gap(f"the dataset's collection kind ({esc(kind)}) is not one this version documents", None))
    _cleaning(doc, facts, ref)
    _labelling(doc, facts, ref)
    _pii(doc, facts)
    _bias(doc, facts)
    _uses(doc, facts, ref)
    doc.h2("Distribution and maintenance")
    doc.p(f"Stored at {code(dataset.path)} as version {code(dataset.version)} {ref}. Maintainer contact: "
          + doc.declared_or_gap(facts.declared.contact, "contact") + ".")
    return doc


def _motivation(doc: Doc, facts: DocFacts, ref: str) -> None:
    doc.h2("Motivation")
    users = [f"{a.name} v{a.version} {doc.cite('adapter', a.id)}" for _, made in facts.dataset_uses for a in made]
    doc.p(f"This dataset version {ref} was registered as training data for fine-tuning; adapters trained on it: "
          + (", ".join(users) if users else "none") + ".")
    doc.p(f"Purpose of the model this datasheet accompanies ({esc(facts.adapter.name)} v{facts.adapter.version}): "
          + doc.declared_or_gap(facts.declared.intended_purpose, "intended_purpose") + ".")
    doc.p("Created by: provider " + doc.declared_or_gap(facts.declared.provider, "provider")
          + f"; registered by {code(facts.dataset_actor or 'unknown')} {ref}.")


def _composition(doc: Doc, facts: DocFacts, ref: str) -> None:
    d = facts.dataset
    doc.h2("Composition")
    doc.p("Each instance is one chat conversation (user and assistant messages), optionally with a short "
          "reference answer for scoring.")
    doc.table(["field", "value", "record"], [
        ["rows in the train split", num(d.n_train), ref],
        ["rows in the eval split", num(d.n_eval), ref],
        ["duplicates removed", num(d.n_duplicates), ref],
        ["content sha256", code(d.content_sha256), ref],
        ["registered", d.created_at.isoformat(timespec="seconds"), ref],
    ])
    sources = d.source_files or []
    if sources:
        doc.p(f"Source files {ref}:")
        doc.table(["file", "sha256", "rows"], [[code(s.get("path", "")), code(s.get("sha256", "")),
                                                num(s.get("rows"))] for s in sources])
    else:
        doc.p(f"No source file is recorded with the dataset {ref}.")


def _built(doc: Doc, spec: dict[str, Any], ref: str) -> None:
    build = spec.get("build") or {}
    digest = canonical_sha256(build)
    doc.p(f"Built by generator {code(spec.get('generator'))} from the build spec recorded with the dataset "
          f"(sha256 of the spec {code(digest)}) {ref}; no teacher model was used.")
    rows = []
    for table in build.get("tables") or []:
        columns = table.get("columns") or {}
        rows.append([code(table.get("path")), "table", ", ".join(code(c) for c in columns),
                     num(sum(len(c.get("questions") or []) for c in columns.values()))])
    for document in build.get("documents") or []:
        seeds = document.get("seeds") or []
        rows.append([code(document.get("path")), "document", f"{len(seeds)} facts",
                     num(sum(len(s.get("questions") or []) for s in seeds))])
    doc.table(["source", "kind", "facts asked about", "question phrasings"], rows)
    settings = {k: v for k, v in build.items() if not isinstance(v, (list, dict)) and v is not None}
    if settings:
        doc.p("Build settings: " + ", ".join(f"{esc(k)} {code(v)}" for k, v in settings.items()) + f" {ref}.")


def _synthetic(doc: Doc, facts: DocFacts, ref: str) -> None:
    if not facts.rounds:
        doc.p(doc.gap("the reviewed dataset names no synthetic round it came from", None))
        return
    doc.p(f"Generated by a teacher model in {len(facts.rounds)} round(s), filtered, then reviewed by people {ref}.")
    rows = []
    for r in facts.rounds:
        d = r.node.details
        guidance = d.get("guidance") or {}
        rows.append([f"{esc(r.node.label)} {doc.cite('synth_round', r.node.id)}", code(d.get("teacher_model")),
                     code(d.get("spec_sha256")), " ".join(code(h) for h in d.get("prompt_template_sha256") or [])
                     or "none recorded",
                     ", ".join(f"{esc(k)} {v}" for k, v in sorted(r.generators.items())) or "n/a",
                     num(d.get("n_generated")),
                     f"{len(guidance.get('notes') or [])} notes, {len(guidance.get('corrections') or [])} "
                     f"corrections, {len(guidance.get('exemplars') or [])} exemplars"])
    doc.table(["round", "teacher", "synth spec sha256", "prompt template sha256", "candidates by generator",
               "generated", "guidance from the previous review"], rows)
    doc.p(doc.gap("the random seed of each synthetic round is not recorded in the registry (it is derived from "
                  "the recipe at generation time)", "record the recipe's data.seed with the release"))


def _cleaning(doc: Doc, facts: DocFacts, ref: str) -> None:
    doc.h2("Preprocessing and cleaning")
    doc.p(f"Exact duplicates removed when the dataset was registered: {num(facts.dataset.n_duplicates)} {ref}.")
    if not facts.rounds:
        doc.p("No synthetic filter ran on this dataset (it was not generated by a teacher).")
        return
    filters = list(dict.fromkeys(f for r in facts.rounds for f in (r.node.details.get("filter_counts") or {})))
    rows = [[esc(f)] + [num((r.node.details.get("filter_counts") or {}).get(f, 0)) for r in facts.rounds]
            for f in filters]
    header = ["filter"] + [f"{esc(r.node.label)} {doc.cite('synth_round', r.node.id)}" for r in facts.rounds]
    doc.p("Rows each synthetic filter flagged or removed, per round (a filter only sees rows no earlier "
          "filter caught):")
    doc.table(header, rows) if rows else doc.p("The rounds recorded no filter counts.")


def _labelling(doc: Doc, facts: DocFacts, ref: str) -> None:
    doc.h2("Labelling")
    kind = (facts.dataset.spec or {}).get("kind")
    if kind == "build":
        doc.p(f"No human labelling: answers and reference answers are filled in from the source files by the "
              f"build spec's templates {ref}.")
        return
    review = facts.review
    if review is None:
        doc.p(doc.gap("no human review of this dataset's rows is recorded", None))
        return
    d = review.details
    doc.bullets([
        f"review queue {code(review.queue)}: {num(d.get('n_reviews'))} decisions, "
        + ", ".join(f"{esc(k)} {v}" for k, v in sorted((d.get("decisions") or {}).items())) + f" {ref}",
        "reviewers: " + ", ".join(f"{esc(k)} ({v})" for k, v in sorted((d.get("reviewers") or {}).items())),
        f"rows kept: {num(d.get('n_rows_kept'))}" + (
            f", of which accepted automatically by judge score >= {num(d.get('auto_accept_score'))}: "
            f"{num(d.get('n_auto_accepted'))}" if d.get("auto_accept_score") is not None
            else ", every one accepted by a reviewer (no automatic acceptance)") + f" {ref}",
    ])
    agreement = review.agreement
    if agreement is None or agreement.kappa is None:
        doc.p(doc.gap("inter-reviewer agreement cannot be computed: fewer than two items were reviewed by two "
                      "or more people", "have some items reviewed by two reviewers (review.reviewers_per_item)"))
    else:
        doc.p(f"Agreement: {esc(agreement.statistic)} kappa {agreement.kappa:.3f} over {agreement.n_items} items "
              f"with {agreement.n_raters} reviewers each (computed from the queue's review rows) {ref}.")


def _pii(doc: Doc, facts: DocFacts) -> None:
    doc.h2("Personal information (PII scan)")
    report = facts.pii
    if report is None:
        doc.p(doc.gap(f"no PII scan of dataset {facts.dataset.id} is registered",
                      f"tunewright govern pii --dataset {facts.dataset.name}@{facts.dataset.version}"))
        return
    s, cite = report.summary or {}, doc.cite("report", report.id)
    by_kind = s.get("by_kind") or {}
    doc.p(f"Status {code(s.get('status', 'n/a'))}: {num(s.get('n_findings'))} findings in "
          f"{num(s.get('rows_with_findings'))} of {num(s.get('n_rows'))} rows {cite}."
          + (f" Allowed by the recipe (govern.pii.allow): {num(s.get('n_allowed'))}; unresolved: "
             f"{num(s.get('n_unresolved'))} {cite}." if "n_unresolved" in s else ""))
    doc.table(["kind", "findings"], [[esc(k), num(v)] for k, v in sorted(by_kind.items())])
    if s.get("status") == "findings":
        doc.gap(f"PII scan report {report.id} has unresolved findings; say how they were handled",
                "redact them and register a new version, or allow public ones under govern.pii.allow")


def _bias(doc: Doc, facts: DocFacts) -> None:
    doc.h2("Representation of groups (data scan)")
    if not facts.data_scans:
        doc.p(doc.gap(f"no data scan (group terms in the rows) of dataset {facts.dataset.id} is registered",
                      f"tunewright govern scan --dataset {facts.dataset.name}@{facts.dataset.version}"))
        return
    for report in facts.data_scans:
        cite, s = doc.cite("report", report.id), report.summary or {}
        issues = s.get("issues") if isinstance(s.get("issues"), list) else []
        decided = (f", {num(s.get('n_accepted'))} accepted and {num(s.get('n_rejected'))} rejected in review"
                   if s.get("n_accepted") is not None else "")
        doc.p(f"Data scan of {num(s.get('n_rows'))} rows{decided}: {len(issues)} skew issue(s) {cite}.")
        doc.bullets(esc(i.get("message", i)) if isinstance(i, dict) else esc(i) for i in issues)


def _uses(doc: Doc, facts: DocFacts, ref: str) -> None:
    doc.h2("Uses")
    rows = [[doc.cite("run", run.id), esc(run.status), ", ".join(f"{esc(a.name)} v{a.version} "
                                                                  f"{doc.cite('adapter', a.id)}" for a in made)
             or "none"] for run, made in facts.dataset_uses]
    doc.p(f"Training runs that used this dataset {ref}:")
    doc.table(["run", "status", "adapters produced"], rows)
    doc.p("Uses to avoid: " + doc.declared_or_gap(facts.declared.out_of_scope, "out_of_scope")
          + ".")
