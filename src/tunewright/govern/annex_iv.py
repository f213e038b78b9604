"""Technical documentation under the nine headings of Annex IV to the EU AI Act (Regulation (EU)
2024/1689). The registry evidences the development, data, testing, release and logging; the provider's
own statements come from the recipe; the parts no tool can hold (standards applied, declaration of
conformity, the risk-management process) are listed as gaps for people to write."""

from __future__ import annotations

from .docs_data import DocFacts
from .docs_md import Doc, code, esc, num, pct
from .docs_sections import (bias_groups, bias_summary, forgetting_table, gates_section, lineage_list, metric_label,
                            overrides_list, questions_table, results_table, signoff_table, task_metrics,
                            training_setup)

INTRO = ("Structured along the nine points of Annex IV to Regulation (EU) 2024/1689 (the AI Act). Whether the "
         "system is high-risk (Article 6) is for the provider to decide; this file holds what the Tunewright "
         "registry can evidence, the provider's statements from tunewright.yaml, and the gaps still to fill.")


def build_annex_iv(facts: DocFacts) -> Doc:
    adapter = facts.adapter
    doc = Doc(f"Technical documentation (AI Act Annex IV): {adapter.name} v{adapter.version}", facts.index)
    _general(doc, facts)
    _development(doc, facts)
    _monitoring_control(doc, facts)
    _performance(doc, facts)
    _risk(doc, facts)
    _changes(doc, facts)
    doc.h2("7. Harmonised standards and other specifications applied")
    doc.p(doc.gap("no harmonised standard or other specification is recorded as applied",
                  "list the standards applied, or describe the solutions adopted for Chapter III, Section 2"))
    doc.h2("8. EU declaration of conformity")
    doc.p(doc.gap("no EU declaration of conformity (Article 47) is on file", "attach a copy once drawn up"))
    _post_market(doc, facts)
    return doc


def _general(doc: Doc, facts: DocFacts) -> None:
    adapter, run, declared = facts.adapter, facts.run, facts.declared
    a_ref = doc.cite("adapter", adapter.id)
    doc.h2("1. General description of the AI system")
    doc.bullets([
        "Intended purpose: " + doc.declared_or_gap(declared.intended_purpose, "intended_purpose"),
        "Intended users: " + doc.declared_or_gap(declared.intended_users, "intended_users"),
        "Provider: " + doc.declared_or_gap(declared.provider, "provider")
        + "; contact: " + doc.declared_or_gap(declared.contact, "contact"),
        f"System version: adapter {code(adapter.name)} version {adapter.version}, weights sha256 "
        f"{code(adapter.weights_sha256)} {a_ref}",
        f"Runs on the pre-trained base model {code(adapter.base_model_ref)} (weights sha256 "
        f"{code(adapter.base_model_sha256 or 'not recorded')}), loaded with peft {a_ref}",
    ])
    doc.p("Previous and later versions of this adapter:")
    doc.table(["version", "registered", "weights sha256", "record"], [
        [("**" if a.id == adapter.id else "") + f"v{a.version}" + ("**" if a.id == adapter.id else ""),
         a.created_at.isoformat(timespec="seconds"), code(a.weights_sha256), doc.cite("adapter", a.id)]
        for a in facts.adapter_versions])
    if run is not None:
        doc.p("Versions of the software it was built with: " + ", ".join(
            f"{esc(k)} {code(v)}" for k, v in (run.library_versions or {}).items()) + f" {doc.cite('run', run.id)}.")
    forms = [f"adapter folder {code(adapter.path)} {a_ref}"]
    forms += [f"export to {esc(', '.join(n.details.get('formats') or []))} at {code(n.details.get('path'))} "
              f"{doc.cite('export', n.id)}" for n in facts.exports]
    doc.p("Forms in which it is made available:")
    doc.bullets(forms)
    doc.p("Hardware it is intended to run on: " + doc.gap(
        "the hardware the system is intended to run on is not stated", "write it here by hand (the registry "
        "records only the training hardware, section 2)"))
    doc.p("Instructions for use: model_card.md, section \u201cHow to get started with the model\u201d.")


def _development(doc: Doc, facts: DocFacts) -> None:
    run = facts.run
    doc.h2("2. Detailed description of the elements and of the development process")
    doc.h3("(a) Methods and steps, and pre-trained systems used")
    doc.p("The pre-trained base model was adapted with parameter-efficient fine-tuning; the base weights are "
          "unchanged. The chain of records from the source data to the released adapter:")
    lineage_list(doc, facts)
    doc.h3("(b, c) Design specifications, training method and computational resources")
    training_setup(doc, facts)
    plan = ((run.config or {}).get("plan") or {}) if run is not None else {}
    recommendation = plan.get("recommendation") or {}
    if plan:
        doc.p(f"Planned before training: predicted peak memory {num(plan.get('predicted_peak_bytes'))} bytes, "
              f"predicted time {num(plan.get('predicted_seconds'))} s, planner recommendation "
              + (", ".join(f"{esc(k)} {code(v)}" for k, v in recommendation.items()
                           if not isinstance(v, (dict, list))) or "none") + f" {doc.cite('run', run.id)}.")
    doc.p(doc.gap("the rationale and assumptions behind the design choices (method, hyperparameters, base model) "
                  "are not recorded", "state them here"))
    _data_governance(doc, facts)
    doc.h3("(g) Validation and testing: test reports and their sign-offs")
    doc.p("Metrics are in section 4. Test reports, dated and signed by the responsible persons:")
    signoff_table(doc, facts)
    doc.h3("(h) Cybersecurity measures")
    doc.p(doc.gap("no cybersecurity measure is recorded", "describe access control to the registry, the serving "
                  "API keys and the adapter files"))


def _data_governance(doc: Doc, facts: DocFacts) -> None:
    dataset = facts.dataset
    doc.h3("(d) Data and data governance (Article 10)")
    if dataset is None:
        doc.p(doc.gap("the training data is not in the registry", None))
        return
    d_ref = doc.cite("dataset", dataset.id)
    kind = (dataset.spec or {}).get("kind")
    collected = {"build": "built from the source files by templates", "import": "imported from files",
                 "review": "generated by a teacher model and reviewed by people"}.get(kind, f"kind {esc(kind)}")
    filtered = sum(int(v) for r in facts.rounds for v in (r.node.details.get("filter_counts") or {}).values()
                   if isinstance(v, (int, float)))
    items = [
        f"sources: {len(dataset.source_files or [])} file(s), each pinned by sha256 {d_ref}",
        f"collection: {collected} {d_ref}",
        f"size: {num(dataset.n_train)} training and {num(dataset.n_eval)} evaluation rows; content sha256 "
        f"{code(dataset.content_sha256)} {d_ref}",
        f"cleaning: {num(dataset.n_duplicates)} duplicates removed {d_ref}"
        + (f"; synthetic filters flagged {filtered} rows in {len(facts.rounds)} round(s) "
           + " ".join(doc.cite("synth_round", r.node.id) for r in facts.rounds) if facts.rounds else ""),
    ]
    if facts.review is not None:
        d = facts.review.details
        items.append(f"labelling: {num(d.get('n_reviews'))} human review decisions by "
                     f"{len(d.get('reviewers') or {})} reviewer(s) {d_ref}")
    elif kind == "build":
        items.append(f"labelling: none by people; answers come from the source files {d_ref}")
    if facts.pii is not None:
        s = facts.pii.summary or {}
        items.append(f"personal data: PII scan status {code(s.get('status', 'n/a'))}, {num(s.get('n_findings'))} "
                     f"findings in {num(s.get('rows_with_findings'))} rows {doc.cite('report', facts.pii.id)}")
    else:
        items.append("personal data: " + doc.gap(f"no PII scan of dataset {dataset.id} is registered",
                                                 f"tunewright govern pii --dataset {dataset.name}@{dataset.version}"))
    scans = " ".join(doc.cite("report", r.id) for r in facts.data_scans)
    items.append("bias examination of the data: " + (f"data scan {scans}" if scans else doc.gap(
        f"no data scan (group terms in the rows) of dataset {dataset.id} is registered",
        f"tunewright govern scan --dataset {dataset.name}@{dataset.version}")))
    doc.bullets(items)
    doc.p("The datasheet (datasheet.md) answers these questions in full.")


def _monitoring_control(doc: Doc, facts: DocFacts) -> None:
    declared = facts.declared
    doc.h2("3. Monitoring, functioning and control")
    doc.h3("Capabilities and limitations")
    for pair in facts.latest_pairs:
        ref = doc.cite("evaluation", pair.tuned.id)
        doc.p(f"Expected level of accuracy on the {esc(pair.tuned.split)} split ({num(pair.tuned.n_examples)} "
              "examples): " + ", ".join(f"{metric_label(k)} {pct(v)}" for k, v in task_metrics(pair.tuned.metrics)
                                        .items()) + f" {ref}.")
    doc.p("Behaviour across groups of persons (bias test, per group):")
    bias_groups(doc, facts)
    doc.p("Known limitations: " + doc.declared_or_gap(declared.known_limitations, "known_limitations"))
    doc.h3("Foreseeable unintended outcomes and sources of risk")
    doc.p(doc.declared_or_gap(declared.risks, "risks"))
    doc.h3("Human oversight measures (Article 14)")
    doc.p("Oversight in operation: " + doc.declared_or_gap(declared.human_oversight, "human_oversight"))
    review = facts.review
    if review is not None:
        d = review.details
        doc.p(f"Human review of training data: queue {code(review.queue)}, {num(d.get('n_reviews'))} decisions by "
              + ", ".join(esc(k) for k in sorted(d.get("reviewers") or {}))
              + f" {doc.cite('dataset', facts.dataset.id)}.")
    elif facts.dataset is not None:
        doc.p(f"Human review of training data: none recorded; the dataset is of kind "
              f"{code((facts.dataset.spec or {}).get('kind'))} {doc.cite('dataset', facts.dataset.id)}.")
    doc.p("Release gates, checked before the adapter serves production:")
    gates_section(doc, facts)
    doc.p("Overrides of governance checks, with the reasons given:")
    overrides_list(doc, facts)
    doc.h3("Specifications for input data")
    train = ((facts.run.config or {}).get("train") or {}) if facts.run else {}
    if "max_length" in train:
        doc.p(f"Chat conversations rendered with the base model's chat template; trained on sequences of at most "
              f"{num(train['max_length'])} tokens {doc.cite('run', facts.run.id)}.")
    else:
        doc.p(doc.gap("the input length the model was trained for is not recorded", None))


def _performance(doc: Doc, facts: DocFacts) -> None:
    doc.h2("4. Performance metrics")
    doc.h3("Task metrics, base model vs tuned")
    results_table(doc, facts)
    doc.h3("Forgetting of general abilities")
    forgetting_table(doc, facts)
    questions_table(doc, facts, "Customer questions written independently of the training data")
    doc.h3("Bias")
    bias_summary(doc, facts)
    doc.h3("Robustness and consistency")
    rows = []
    for node in facts.exports:
        check = facts.export_checks.get(node.id)
        if check is None:
            continue
        for fmt, diff in (check.get("max_logit_diff") or {}).items():
            rows.append([esc(fmt), num(diff), "passed" if check["passed"] else "failed",
                         doc.cite("export", node.id)])
    if rows:
        doc.p("Exported copies give the same answers as the adapter (parity check, largest logit difference):")
        doc.table(["export format", "largest logit difference", "check", "record"], rows)
    doc.p(doc.gap("no robustness test (perturbed or adversarial inputs) is recorded", "test and register it"))
    doc.p(doc.gap("why these metrics suit the intended purpose is not stated", "state it here"))


def _risk(doc: Doc, facts: DocFacts) -> None:
    doc.h2("5. Risk management system (Article 9)")
    doc.p("Risks and mitigations: " + doc.declared_or_gap(facts.declared.risks, "risks"))
    evidence = []
    if facts.bias is not None:
        evidence.append(f"bias test {doc.cite('report', facts.bias.report.id)}")
    if facts.pii is not None:
        evidence.append(f"PII scan {doc.cite('report', facts.pii.id)}")
    for pair in facts.latest_pairs:
        if isinstance(pair.tuned.metrics.get("forgetting"), dict):
            evidence.append(f"forgetting measurement {doc.cite('evaluation', pair.tuned.id)}")
    doc.p("Measurements on record that feed it: " + (", ".join(evidence) if evidence else "none") + ".")
    doc.p(doc.gap("the risk management process itself (identification, estimation, evaluation, residual risk) is "
                  "not held by the registry", "describe it here or attach it"))


def _changes(doc: Doc, facts: DocFacts) -> None:
    doc.h2("6. Changes through the lifecycle")
    doc.table(["adapter version", "registered", "training run", "record"], [
        [f"v{a.version}", a.created_at.isoformat(timespec="seconds"), f"run {a.run_id}" if a.run_id else "n/a",
         doc.cite("adapter", a.id)] for a in facts.adapter_versions])
    rows = [[doc.cite("alias_change", n.id), esc(n.details.get("alias")), esc(n.details.get("action")),
             esc(n.details.get("actor")), esc(n.details.get("created_at")),
             esc(n.details.get("reason") or "none given")]
            for n in facts.alias_changes]
    if rows:
        doc.p("Deployment alias history involving this adapter:")
        doc.table(["change", "alias", "action", "by", "when (UTC)", "reason"], rows)
    else:
        doc.p("The adapter has never been assigned to a deployment alias.")
    doc.table(["export", "formats", "created (UTC)", "parity check"], [
        [doc.cite("export", n.id), esc(", ".join(n.details.get("formats") or [])), esc(n.details.get("created_at")),
         "passed" if facts.export_checks.get(n.id, {}).get("passed") else "not run"] for n in facts.exports])


def _post_market(doc: Doc, facts: DocFacts) -> None:
    doc.h2("9. Post-market monitoring (Article 72) and logging (Article 12)")
    doc.p("Request logging: " + ("on (serve.log_requests in tunewright.yaml)" if facts.log_requests else doc.gap(
        "request logging is off, so served answers cannot be reviewed later", "set serve.log_requests: true")))
    fb = facts.feedback
    if fb.first_id is not None:
        doc.p(f"User feedback on served answers (model named {esc(' or '.join(fb.names))}): "
              + ", ".join(f"{esc(k)} {v}" for k, v in sorted(fb.ratings.items()))
              + f", rows {doc.cite('feedback', fb.first_id)} to {doc.cite('feedback', fb.last_id)}.")
    else:
        doc.p("No user feedback on this adapter is recorded.")
    if facts.drift:
        doc.p("Drift reports: " + ", ".join(doc.cite("report", r.id) for r in facts.drift) + ".")
    else:
        on_disk = f" ({len(facts.drift_files)} drift report file(s) exist on disk but are not registered)" \
            if facts.drift_files else ""
        doc.p(doc.gap("no drift report is registered" + on_disk, "run 'tunewright drift' on logged traffic"))
    doc.p(doc.gap("no post-market monitoring plan (Article 72(3)) is on file", "write it and attach it"))
    audit = facts.audit
    if audit.head_id is None:
        doc.p(doc.gap("the audit log is empty", None))
        return
    verdict = "passes" if audit.ok else f"**fails** at event {audit.first_bad_id}"
    doc.p(f"Audit log: every registry write appends a hash-chained event; {num(audit.n_events)} events, head "
          f"{doc.cite('event', audit.head_id)} with hash {code(audit.head_hash)}; verification of the chain "
          f"{verdict} at {esc(facts.generated_at)}.")
    if not audit.ok:
        doc.gap(f"the audit log does not verify (first damaged event {audit.first_bad_id})",
                "run 'tunewright audit verify' to see what was damaged")
