"""Sections more than one document shows: results base vs tuned, forgetting, customer questions, the bias
breakdown, test reports with their sign-offs, release gates, training set-up and the lineage chain."""

from __future__ import annotations

import json
from typing import Any

from ..evaluate import results
from .docs_data import DocFacts
from .docs_md import LINEAGE_MARKER, Doc, code, esc, num, pct, pts

TRAIN_METRICS = (("train_seconds", "training time (s)"), ("tokens_per_second", "throughput (tokens/s)"),
                 ("tokens_seen", "tokens seen"), ("steps", "optimizer steps"), ("final_loss", "final training loss"),
                 ("trainable_params", "trainable parameters"), ("total_params", "total parameters"),
                 ("peak_rss_bytes", "peak memory (bytes)"))
NO_BIAS = ("no bias report is registered for this adapter", "run 'tunewright govern bias'")
# Node kinds of the lineage that are registry rows a citation can name.
CITABLE = {"synth_round", "dataset", "run", "adapter", "evaluation", "report", "signoff", "alias_change", "export"}


def metric_label(name: str) -> str:
    try:
        from ..evaluate.metrics import get_metric

        return get_metric(name).label
    except Exception:  # a metric from a plugin that is not installed here: show its name
        return name


def task_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def results_table(doc: Doc, facts: DocFacts) -> None:
    if not facts.pairs:
        doc.p(doc.gap("no evaluation of this adapter is recorded", f"run 'tunewright eval --adapter "
                      f"{facts.adapter.name}'"))
        return
    rows = []
    for pair in facts.pairs:
        tuned, base = pair.tuned, pair.base
        where = f"{tuned.split} split, {num(tuned.n_examples)} examples"
        for name, after in task_metrics(tuned.metrics).items():
            before = task_metrics(base.metrics).get(name) if base else None
            rows.append([metric_label(name), where, pct(before), pct(after),
                         pts(after - before) if before is not None else "n/a",
                         doc.cites(("evaluation", tuned.id), ("evaluation", base.id) if base else None)])
        if base is None:
            doc.gap(f"evaluation {tuned.id} has no base-model row to compare with", "run 'tunewright eval' again")
    doc.table(["metric", "measured on", "base", "tuned", "change", "records"], rows)


def forgetting_table(doc: Doc, facts: DocFacts) -> None:
    rows = []
    for pair in facts.latest_pairs:
        f = results.forgetting(pair.tuned.metrics)
        if not f:
            doc.p(doc.gap(f"evaluation {pair.tuned.id} has no forgetting measurement (KL on general prompts, "
                          "retention of known answers)", f"run 'tunewright eval --adapter {facts.adapter.name}' "
                          "with govern.forgetting.enabled"))
            continue
        rows.append([num(f.get("kl")), pct(f.get("retention")), num(f.get("n_general_prompts")),
                     num(f.get("n_retention_probes")), num(f.get("n_base_correct")), num(f.get("n_tuned_kept")),
                     doc.cite("evaluation", pair.tuned.id)])
    doc.table(["KL divergence (general prompts)", "retention", "general prompts", "retention probes",
               "base correct", "tuned kept", "record"], rows)


def questions_table(doc: Doc, facts: DocFacts, heading: str) -> None:
    """Customer questions (eval.questions) per kind, base vs tuned, under ``heading``; nothing when none were asked
    (the file is optional, so its absence is not a gap)."""
    rows = []
    for pair in facts.latest_pairs:
        tuned = results.questions(pair.tuned.metrics)
        if not isinstance(tuned.get("by_kind"), dict):
            continue
        base = results.questions(pair.base.metrics if pair.base else None)
        refs = doc.cites(("evaluation", pair.tuned.id), ("evaluation", pair.base.id) if pair.base else None)
        for kind, after in [*tuned["by_kind"].items(), ("all", tuned)]:
            before = base if kind == "all" else (base.get("by_kind") or {}).get(kind)
            change = pts(after["accuracy"] - before["accuracy"]) if before else "n/a"
            rows.append([esc(tuned.get("file")), esc(kind), _tally(before), _tally(after), change, refs])
    if rows:
        doc.h3(heading)
        doc.table(["questions file", "kind", "base", "tuned", "change", "records"], rows)


def _tally(tally: dict | None) -> str:
    return f"{pct(tally['accuracy'])} ({num(tally['correct'])} of {num(tally['n'])})" if tally else "n/a"


def bias_summary(doc: Doc, facts: DocFacts) -> None:
    if facts.bias is None:
        doc.p(doc.gap(*NO_BIAS))
        return
    report = facts.bias.report
    s, ref = report.summary or {}, doc.cite("report", report.id)
    ci = s.get("ci") if isinstance(s.get("ci"), (list, tuple)) and len(s.get("ci")) == 2 else None
    groups = s.get("groups") if isinstance(s.get("groups"), (list, tuple)) else []
    issues = s.get("issues") if isinstance(s.get("issues"), list) else []
    doc.bullets([
        f"largest gap: {pct(s.get('max_gap'))} in {esc(s.get('max_gap_metric', 'n/a'))} for attribute "
        f"{esc(s.get('attribute', 'n/a'))}" + (f" between {esc(' and '.join(map(str, groups)))}" if groups else "")
        + (f" (95% CI {pct(ci[0])} to {pct(ci[1])})" if ci else "") + f" {ref}",
        f"the base model's largest gap: {pct(s.get('base_max_gap'))} {ref}" if "base_max_gap" in s else "",
        f"prompts: {num(s.get('n_prompts'))} {ref}" if "n_prompts" in s else "",
        f"issues: {len(issues)} {ref}" if "issues" in s else "",
    ])
    doc.bullets([esc(i.get("message", i)) if isinstance(i, dict) else esc(i) for i in issues])


def bias_groups(doc: Doc, facts: DocFacts) -> None:
    """The per-group breakdown, one table per attribute, base and tuned side by side where both exist."""
    if facts.bias is None:
        doc.p(doc.gap(*NO_BIAS))
        return
    bias = facts.bias
    if not bias.tables:
        doc.p(doc.gap(f"per-group results of bias report {bias.report.id} are unavailable: {bias.problem}",
                      "re-run the bias test so its bias.json sits next to the registered report"))
        return
    ref = doc.cite("report", bias.report.id)
    by_attribute: dict[str, list] = {}
    for table in bias.tables:
        by_attribute.setdefault(table.attribute, []).append(table)
    for attribute, tables in by_attribute.items():
        metrics = list(dict.fromkeys(m for tb in tables for m in tb.metrics))
        columns = [(tb, m) for m in metrics for tb in sorted(tables, key=lambda x: x.model != "base")]
        header = ["group"] + [f"{esc(m)}" + (f" ({tb.model})" if tb.model else "") for tb, m in columns]
        groups = list(dict.fromkeys(g for tb in tables for g in tb.rows))
        rows = [[esc(g)] + [num(tb.rows.get(g, {}).get(m)) for tb, m in columns] for g in groups]
        doc.p(f"**{esc(attribute)}** {ref}")
        doc.table(header, rows)
        fails = [f"{tb.model or 'model'} {pct(tb.fail_rate)}" for tb in sorted(tables, key=lambda x: x.model != "base")
                 if tb.fail_rate is not None]
        if fails:
            doc.p(f"Counterfactual pairs answered differently ({esc(attribute)}): {', '.join(fails)} {ref}")


def signoff_table(doc: Doc, facts: DocFacts) -> None:
    """Each test report with who signed it, in what role and when; unsigned or stale ones are gaps."""
    rows = []
    for kind, record in facts.test_reports():
        what = (f"{esc(record.model_ref)} on the {esc(record.split)} split" if kind == "evaluation"
                else f"{esc(record.kind)} report")
        signoffs = facts.signoffs(kind, record.id)
        if not signoffs:
            rows.append([doc.cite(kind, record.id), what, doc.gap(f"{kind} {record.id} ({what}) is not signed off",
                         f"tunewright signoff {kind} {record.id} --by NAME --role ROLE --statement TEXT"),
                         "", "", "", ""])
            continue
        for signoff in signoffs:
            holds = facts.signature_holds(signoff)
            if not holds:
                doc.gap(f"{kind} {record.id} changed after sign-off {signoff.id}", "review it and sign it again")
            rows.append([doc.cite(kind, record.id), what, esc(signoff.person), esc(signoff.role or "n/a"),
                         signoff.signed_on, esc(signoff.statement),
                         ("yes " if holds else "**no** ") + doc.cite("signoff", signoff.id)])
            if not signoff.role:
                doc.gap(f"sign-off {signoff.id} names no role", "sign it again with --role")
    if not rows:
        doc.p(doc.gap("no test report exists to sign off", "evaluate the adapter and run the bias test"))
    doc.table(["test report", "what", "signed by", "role", "date", "statement", "signed content unchanged"], rows)


def gates_section(doc: Doc, facts: DocFacts) -> None:
    g = facts.gates
    configured = [(label, value) for label, value in (
        (f"minimum task gain ({g.metric})", g.min_task_gain), ("minimum retention", g.min_retention),
        ("maximum KL divergence", g.max_kl), ("maximum bias gap", g.max_bias_gap),
        ("minimum customer questions accuracy", g.min_questions_accuracy)) if value is not None]
    if configured:
        doc.bullets(f"{label}: {num(value)} (govern.gates in tunewright.yaml)" for label, value in configured)
    else:
        doc.p(doc.gap("no release gate is configured", "set govern.gates (min_task_gain, min_retention, max_kl, "
                      "max_bias_gap, min_questions_accuracy) in tunewright.yaml"))
    rows, moves = [], [n for n in facts.alias_changes if n.details.get("alias") == "production"]
    for node in facts.alias_changes:
        evidence = node.details.get("evidence") or {}
        gates = evidence.get("gates") or {}
        for check in gates.get("checks") or []:
            rows.append([doc.cite("alias_change", node.id), f"{esc(node.details.get('alias'))} "
                         f"{esc(node.details.get('action'))}", esc(check.get("name")), num(check.get("value")),
                         num(check.get("threshold")), "pass" if check.get("passed") else "**FAIL**"])
    doc.table(["alias change", "move", "gate", "value", "threshold", "outcome"], rows)
    if not moves:
        doc.p(doc.gap("the adapter has not been checked against the release gates: it was never moved to "
                      "production", f"'tunewright registry alias set production {facts.adapter.name}'"))
    elif not rows:
        doc.p(doc.gap("no gate verdict is recorded with the production moves", "move it again with gates configured"))


def overrides_list(doc: Doc, facts: DocFacts) -> None:
    items = []
    # A gate override is written twice, in the alias move's evidence and as an audit event; list it once.
    logged = {str(e.payload.get("reason")) for e in facts.overrides if e.payload.get("check") == "release_gates"}
    for node in facts.alias_changes:
        reason = (node.details.get("evidence") or {}).get("override")
        if reason and str(reason) not in logged:
            items.append(f"release gates overridden for {esc(node.details.get('alias'))} by "
                         f"{esc(node.details.get('actor'))}: \u201c{esc(reason)}\u201d "
                         f"{doc.cite('alias_change', node.id)}")
    for event in facts.overrides:
        p = event.payload
        items.append(f"{esc(p.get('check'))} override of {esc(p.get('target'))} by {esc(event.actor)}: "
                     f"\u201c{esc(p.get('reason'))}\u201d {doc.cite('event', event.id)}")
    # Training past unresolved PII is also kept in the run's config; show it when no event said so.
    pii_override = ((facts.run.config or {}).get("pii_override") if facts.run else None)
    if isinstance(pii_override, dict) and not any(e.payload.get("check") == "pii" for e in facts.overrides):
        items.append(f"training went ahead with {num(pii_override.get('n_unresolved'))} unresolved PII findings: "
                     f"\u201c{esc(pii_override.get('reason'))}\u201d {doc.cite('run', facts.run.id)}")
    doc.bullets(items) if items else doc.p("No override is recorded.")


def training_setup(doc: Doc, facts: DocFacts) -> None:
    run = facts.run
    if run is None:
        doc.p(doc.gap("the adapter has no training run in the registry", "train it with 'tunewright train'"))
        return
    ref = doc.cite("run", run.id)
    train = (run.config or {}).get("train") or {}
    doc.p(f"Method {code(facts.adapter.method)} on base model {code(run.base_model_ref)} "
          f"(weights sha256 {code(run.base_model_sha256 or 'not recorded')}), seed {run.seed}, "
          f"run {run.status} {ref}.")
    rows = [[esc(k), "unset" if v is None else code(json.dumps(v) if isinstance(v, (dict, list)) else v), ref]
            for k, v in train.items() if not isinstance(v, dict) or v]
    doc.table(["hyperparameter", "value", "record"], rows)
    metrics = run.metrics or {}
    doc.table(["measure", "value", "record"], [[label, num(metrics[key]), ref] for key, label in TRAIN_METRICS
                                              if key in metrics])
    if "train_seconds" not in metrics:
        doc.gap(f"run {run.id} recorded no training time", None)
    doc.p("Hardware: " + ", ".join(f"{esc(k)} {code(v)}" for k, v in (run.hardware or {}).items()) + f" {ref}")
    doc.p("Library versions: " + ", ".join(f"{esc(k)} {code(v)}" for k, v in (run.library_versions or {}).items())
          + f" {ref}")
    code_version = (run.library_versions or {}).get("tunewright")
    commit = (run.library_versions or {}).get("tunewright_commit")
    if commit:
        doc.p(f"Code version: tunewright {code(code_version or 'not recorded')}, commit {code(commit)} {ref}."
              + (" The working tree had uncommitted changes." if commit.endswith("+dirty") else ""))
    else:
        doc.p(f"Code version: tunewright {code(code_version or 'not recorded')} {ref}. "
              + doc.gap("the exact code commit of the training run is not recorded (only the package version)",
                        "record it with the release, e.g. a git tag"))


def lineage_list(doc: Doc, facts: DocFacts) -> None:
    """The chain as a list per stage; the HTML draws the same columns and edges at the marker."""
    from .lineage_svg import drawn_nodes

    doc.raw(LINEAGE_MARKER)
    columns, edges = drawn_nodes(facts)
    labels = {n.key: n.label for _, nodes in columns for n in nodes}
    parents: dict[str, list[str]] = {}
    for parent, child, relation in edges:
        parents.setdefault(child, []).append(f"{esc(labels.get(parent, parent))} ({esc(relation.replace('_', ' '))})")
    lines = []
    for stage, nodes in columns:
        shown = []
        for node in nodes:
            text = code(node.label) if node.kind in ("source_file", "base_model") else esc(node.label)
            if node.kind == "source_file":
                text += f" (sha256 {code(node.details.get('sha256', node.id))})"
            if node.kind in CITABLE and f"{node.kind}:{node.id}" in doc.index:
                text += " " + doc.cite(node.kind, node.id)
            elif node.kind == "base_model" and facts.run is not None:
                text += " " + doc.cite("run", facts.run.id)
            if node.key in parents:
                text += " \u2190 " + "; ".join(parents[node.key])
            shown.append(f"  - {text}")
        lines.append(f"- **{esc(stage)}**\n" + "\n".join(shown))
    doc.raw("\n".join(lines))
