"""A model card in the Hugging Face layout: YAML metadata (base_model, library_name, tags, license,
datasets, model-index with the evaluations' figures) above the sections of the Hub's card template.
The model-index values are the evaluation rows' own numbers, unrounded, so a reader can compare them
with the registry byte for byte."""

from __future__ import annotations

from typing import Any

import yaml

from ..models.resolve import hub_id

from .docs_data import DocFacts
from .docs_md import Doc, code, esc, num
from .docs_sections import (bias_groups, bias_summary, forgetting_table, lineage_list, metric_label, questions_table,
                            results_table, signoff_table, task_metrics, training_setup)


def model_index(facts: DocFacts) -> list[dict[str, Any]]:
    dataset = facts.dataset
    results = []
    for pair in facts.latest_pairs:
        tuned = pair.tuned
        entry: dict[str, Any] = {"task": {"type": "text-generation", "name": "Text Generation"}}
        if dataset is not None and tuned.dataset_id == dataset.id:
            entry["dataset"] = {"name": f"{dataset.name}@{dataset.version}", "type": dataset.name,
                                "split": tuned.split, "revision": dataset.version}
        else:
            entry["dataset"] = {"name": f"dataset {tuned.dataset_id}", "type": f"dataset-{tuned.dataset_id}",
                                "split": tuned.split}
        entry["metrics"] = [{"type": name, "value": value, "name": metric_label(name)}
                            for name, value in task_metrics(tuned.metrics).items()]
        # The Hub wants a URL with a source: the card's own appendix entry for the row.
        entry["source"] = {"name": f"Tunewright registry, evaluation {tuned.id}",
                           "url": f"#rec-evaluation-{tuned.id}"}
        results.append(entry)
    return [{"name": facts.adapter.name, "results": results}] if results else []


def front_matter(facts: DocFacts, doc: Doc) -> str:
    adapter, declared = facts.adapter, facts.declared
    local = facts.run.base_model_ref if facts.run else adapter.base_model_ref
    base = hub_id(local) or local
    meta: dict[str, Any] = {"base_model": base, "library_name": "peft",
                            "tags": ["peft", "tunewright", adapter.method.lower(), "text-generation"]}
    # Unset license and language are listed as gaps where the card's body asks for them.
    if declared.license:
        meta["license"] = declared.license
    if declared.language:
        meta["language"] = list(declared.language)
    if facts.dataset is not None:
        meta["datasets"] = [facts.dataset.name]
    meta["pipeline_tag"] = "text-generation"
    index = model_index(facts)
    if index:
        meta["model-index"] = index
    if "/" not in base:
        doc.gap(f"base_model '{base}' is Tunewright's local name, not a Hugging Face Hub id",
                "replace it with the Hub id before publishing the card")
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"


def build_model_card(facts: DocFacts) -> tuple[Doc, str]:
    """The card and its YAML front matter (written above the Markdown body)."""
    adapter, run, dataset, declared = facts.adapter, facts.run, facts.dataset, facts.declared
    doc = Doc(f"Model card: {adapter.name} v{adapter.version}", facts.index)
    header = front_matter(facts, doc)
    a_ref = doc.cite("adapter", adapter.id)

    doc.h2("Model details")
    doc.h3("Model description")
    doc.bullets([
        "Developed by: " + doc.declared_or_gap(declared.provider, "provider"),
        f"Model type: {code(adapter.method)} adapter (peft) for causal language modelling {a_ref}",
        "Language(s): " + doc.declared_or_gap(declared.language, "language"),
        "License: " + doc.declared_or_gap(declared.license, "license"),
        f"Fine-tuned from: {code(adapter.base_model_ref)} (weights sha256 "
        f"{code(adapter.base_model_sha256 or 'not recorded')}) {a_ref}",
        f"Version {adapter.version}, adapter weights sha256 {code(adapter.weights_sha256)}, "
        f"registered {adapter.created_at.isoformat(timespec='seconds')} {a_ref}",
    ])
    doc.h3("Lineage")
    lineage_list(doc, facts)

    doc.h2("Uses")
    doc.h3("Direct use")
    doc.p("Intended purpose: " + doc.declared_or_gap(declared.intended_purpose, "intended_purpose") + ".")
    doc.p("Intended users: " + doc.declared_or_gap(declared.intended_users, "intended_users") + ".")
    doc.h3("Out-of-scope use")
    doc.p(doc.declared_or_gap(declared.out_of_scope, "out_of_scope"))

    doc.h2("Bias, risks, and limitations")
    doc.h3("Bias test")
    bias_summary(doc, facts)
    doc.h3("Known limitations")
    doc.p(doc.declared_or_gap(declared.known_limitations, "known_limitations"))
    doc.h3("Risks")
    doc.p(doc.declared_or_gap(declared.risks, "risks"))

    doc.h2("How to get started with the model")
    doc.p(f"Load the adapter on its base model with peft {a_ref}:")
    doc.codeblock(_snippet(facts), "python")

    doc.h2("Training details")
    doc.h3("Training data")
    if dataset is not None:
        d_ref = doc.cite("dataset", dataset.id)
        doc.p(f"{code(f'{dataset.name}@{dataset.version}')}: {num(dataset.n_train)} training rows, "
              f"{num(dataset.n_eval)} held-out evaluation rows, content sha256 {code(dataset.content_sha256)} "
              f"{d_ref}. See datasheet.md for its composition, collection, cleaning, labelling and PII scan.")
    else:
        doc.p(doc.gap("the training dataset is not in the registry", None))
    doc.h3("Training procedure")
    training_setup(doc, facts)

    doc.h2("Evaluation")
    doc.h3("Results: base model vs tuned")
    results_table(doc, facts)
    doc.h3("Forgetting")
    forgetting_table(doc, facts)
    questions_table(doc, facts, "Customer questions (never trained on)")
    doc.h3("Results by group (bias test)")
    bias_groups(doc, facts)
    doc.h3("Sign-offs of the test reports")
    signoff_table(doc, facts)

    doc.h2("Environmental impact and compute")
    if run is not None:
        r_ref, m = doc.cite("run", run.id), run.metrics or {}
        hw = run.hardware or {}
        device = hw.get("gpu") or f"CPU ({num(hw.get('cpu_count'))} cores, {esc(hw.get('processor', 'n/a'))})"
        doc.bullets([f"hardware: {esc(device)} {r_ref}",
                     f"training time: {num(m.get('train_seconds'))} s at {num(m.get('tokens_per_second'))} "
                     f"tokens/s ({num(m.get('tokens_seen'))} tokens) {r_ref}"])
    doc.p(doc.gap("energy use and carbon emissions were not measured", "measure them (e.g. a power meter) and add "
                  "them by hand"))

    doc.h2("Citation")
    doc.p(_citation(doc, facts))
    doc.h2("Model card contact")
    doc.p(doc.declared_or_gap(declared.contact, "contact"))
    return doc, header


def _load_prelude(method: str) -> tuple[str, ...]:
    from ..methods import METHODS

    return METHODS.get_class(method).load_prelude if method in METHODS.names() else ()


def _snippet(facts: DocFacts) -> str:
    adapter = facts.adapter
    lines = ["from peft import PeftModel",
             "from transformers import AutoModelForCausalLM, AutoTokenizer", ""]
    lines[:0] = list(_load_prelude(adapter.method))
    base = adapter.base_model_ref
    if "/" not in base:
        lines.append(f"# {base!r} is the base model's name in the registry: use its Hugging Face id or folder")
    lines += [f"base = AutoModelForCausalLM.from_pretrained({base!r})",
              f"tokenizer = AutoTokenizer.from_pretrained({base!r})",
              f"model = PeftModel.from_pretrained(base, {adapter.path!r})", "",
              'messages = [{"role": "user", "content": "Hello"}]',
              "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors='pt')",
              "print(tokenizer.decode(model.generate(inputs, max_new_tokens=40)[0][inputs.shape[1]:]))"]
    return "\n".join(lines)


def _citation(doc: Doc, facts: DocFacts) -> str:
    adapter, run, dataset = facts.adapter, facts.run, facts.dataset
    parts = [f"{esc(adapter.name)} v{adapter.version} {doc.cite('adapter', adapter.id)}"]
    if run is not None:
        parts.append(f"trained in {doc.cite('run', run.id)}")
    if dataset is not None:
        parts.append(f"on {esc(dataset.name)}@{esc(dataset.version)} {doc.cite('dataset', dataset.id)}")
    parts += [f"evaluated in {doc.cite('evaluation', p.tuned.id)}" for p in facts.latest_pairs]
    text = ", ".join(parts) + f", in the Tunewright registry of workspace {code(facts.workspace_name)}"
    if facts.audit.head_id is not None:
        text += (f"; audit log head when this card was written: {doc.cite('event', facts.audit.head_id)} "
                 f"{code(facts.audit.head_hash)}")
    return text + "."
