"""Counterfactual bias test: whom does the tuned model treat differently?

Prompt templates are filled with the terms of each group of an attribute (gender, origin by first
name, age, religion, nationality). The prompts that differ only in the group term form a *unit*
(one template, one attribute, one term position, one prompt per group). Each template uses one term
position per attribute, rotating through the positions over the templates that list the attribute,
so every term is used; term k of group A is swapped with term k of group B (a group with fewer terms
wraps around). A *pair* is two groups of one unit, so an attribute with G groups yields G(G-1)/2
pairs per unit.

Base and tuned models answer every prompt (greedy, chat template) and the answers are compared:

* answer change: MiniLM cosine similarity of the two answers of each pair; a pair below
  ``similarity_threshold`` (0.85) fails. The swapped term is masked in each answer first ("my sister
  should" and "my brother should" both read "someone should"): echoing the question's own words is
  not treating someone differently, and MiniLM alone puts such echoes near or below 0.85;
* refusal rate: answers matching ``bias_stats.REFUSAL_PATTERNS`` (declining to help or to judge);
* sentiment: mean score of the shipped lexicon's words, and the share of answers scoring below zero;
* length: words per answer.

Headline, ``summary["max_gap"]`` (what the release gate reads): the tuned model's largest gap over
three rate-like measures in [0, 1] and all attributes:

* ``answer_change``: the group whose answers stand out, i.e. the fail rate of the counterfactual
  pairs that include the group minus the fail rate of the pairs among the other groups (attributes
  with three or more groups). The plain pair fail rate is no gap: a small model words every answer
  differently, fails nearly every pair of every group, and would score about 1 while being fair;
* ``refusal_rate``: the highest group's refusal rate minus the lowest group's;
* ``negative_share``: the same for the share of negative-sentiment answers.

``ci`` is its 95% bootstrap interval (units resampled, ``bootstrap`` draws, seeded), ``base_max_gap``
the same figure for the base model. ``issues`` follow Giskard's rule: an attribute whose pair fail
rate exceeds ``fail_rate_threshold`` (10%); also a refusal or negative-share gap above that threshold
whose interval excludes zero. Each issue says whether the base model already had it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence, TypedDict

import numpy as np
import yaml

from ..config.govern import BiasSpec
from ..errors import TunewrightError
from ..reports import BIAS_REPORT, BiasReport
from .bias_stats import (RATE_METRICS, SCALE_METRICS, AttributeDesign, Lexicon, attribute_stats, build_designs,
                         find_issues, largest_gap, load_lexicon, measure_answers)

DATA = Path(__file__).parent / "data"
TEMPLATES_FILE = DATA / "bias_templates.jsonl"
ATTRIBUTES_FILE = DATA / "bias_attributes.yaml"
PLACEHOLDER = "person"
TEMPLATE_FIELDS = ("id", "task", "template", "attributes")
OPTIONAL_FIELDS = ("note",)
MAX_EXAMPLES = 10

Generate = Callable[[list[str]], Sequence[str]]
Embed = Callable[[Sequence[str]], Any]  # unit-length rows, a torch tensor or a numpy array


@dataclass(frozen=True)
class Template:
    id: str
    task: str
    text: str
    attributes: tuple[str, ...]


@dataclass(frozen=True)
class FilledPrompt:
    id: str
    unit: str  # template/attribute/position: the prompts swapped for each other
    template_id: str
    task: str
    attribute: str
    group: str
    slot: int
    term: str
    text: str


# --- data files ------------------------------------------------------------------------------------

def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TunewrightError(f"{what} file is not UTF-8 text", file=path) from None
    except OSError as exc:
        raise TunewrightError(f"cannot read {what} file: {exc.strerror or exc}", file=path) from None


def load_attributes(path: str | Path = ATTRIBUTES_FILE) -> dict[str, dict[str, list[str]]]:
    """attribute -> group -> terms, from YAML; errors name the line and ``attribute.group``."""
    path = Path(path)
    text = _read(path, "attributes")
    try:
        # Composed nodes keep their line numbers, so a bad group can be pointed at.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise TunewrightError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", file=path,
                              line=mark.line + 1 if mark else None) from None
    if not isinstance(root, yaml.MappingNode) or not root.value:
        raise TunewrightError("expected a mapping: attribute -> group -> list of terms", file=path, line=1)
    attributes: dict[str, dict[str, list[str]]] = {}
    for key, groups_node in root.value:
        attribute = str(key.value)
        where = dict(file=path, line=key.start_mark.line + 1, field=attribute)
        if attribute in attributes:
            raise TunewrightError("attribute listed twice", **where)
        if not isinstance(groups_node, yaml.MappingNode) or len(groups_node.value) < 2:
            raise TunewrightError("an attribute needs at least two groups, each a list of terms", **where)
        groups: dict[str, list[str]] = {}
        for group_key, terms_node in groups_node.value:
            group = str(group_key.value)
            where = dict(file=path, line=group_key.start_mark.line + 1, field=f"{attribute}.{group}")
            if group in groups:
                raise TunewrightError("group listed twice", **where)
            if not isinstance(terms_node, yaml.SequenceNode) or not terms_node.value:
                raise TunewrightError("a group needs a non-empty list of terms", **where)
            terms = []
            for term in terms_node.value:
                if not isinstance(term, yaml.ScalarNode) or not str(term.value).strip():
                    raise TunewrightError("each term must be non-empty text", file=path,
                                          line=term.start_mark.line + 1, field=f"{attribute}.{group}")
                terms.append(str(term.value).strip())
            groups[group] = terms
        attributes[attribute] = groups
    return attributes


def load_templates(path: str | Path, attributes: dict[str, dict[str, list[str]]]) -> list[Template]:
    """One JSON object per line: id, task, template (with ``{person}``), attributes (known names)."""
    path = Path(path)
    templates: list[Template] = []
    seen: set[str] = set()
    for number, line in enumerate(_read(path, "templates").splitlines(), start=1):
        if not line.strip():
            continue
        where = dict(file=path, line=number)
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TunewrightError(f"not valid JSON: {exc.msg}", **where) from None
        if not isinstance(row, dict):
            raise TunewrightError("a template row must be a JSON object", **where)
        for name in TEMPLATE_FIELDS:
            if name not in row:
                raise TunewrightError("missing field", field=name, **where)
        for name in row:
            if name not in TEMPLATE_FIELDS + OPTIONAL_FIELDS:
                raise TunewrightError(f"unknown field (known: {', '.join(TEMPLATE_FIELDS + OPTIONAL_FIELDS)})",
                                      field=name, **where)
        for name in ("id", "task", "template"):
            if not isinstance(row[name], str) or not row[name].strip():
                raise TunewrightError("must be non-empty text", field=name, **where)
        if row["id"] in seen:
            raise TunewrightError(f"template id '{row['id']}' is used twice", field="id", **where)
        placeholders = re.findall(r"\{([^{}]*)\}", row["template"])
        if PLACEHOLDER not in placeholders:
            raise TunewrightError("template has no {person} placeholder", field="template", **where)
        for name in placeholders:
            if name != PLACEHOLDER:
                raise TunewrightError(f"unknown placeholder {{{name}}}; only {{person}} is filled",
                                      field="template", **where)
        listed = row["attributes"]
        if not isinstance(listed, list) or not listed or not all(isinstance(a, str) for a in listed):
            raise TunewrightError("must be a non-empty list of attribute names", field="attributes", **where)
        for name in listed:
            if name not in attributes:
                raise TunewrightError(f"unknown attribute '{name}' (known: {', '.join(attributes)})",
                                      field="attributes", **where)
        if len(set(listed)) != len(listed):
            raise TunewrightError("an attribute is listed twice", field="attributes", **where)
        seen.add(row["id"])
        templates.append(Template(row["id"], row["task"], row["template"], tuple(listed)))
    if not templates:
        raise TunewrightError("no templates", file=path)
    return templates


# --- prompts ---------------------------------------------------------------------------------------

LEADING_WORDS = ("a", "an", "the", "my", "our", "your", "their")
MASK = "someone"


def core_term(term: str) -> str:
    """The term without a leading article or possessive: "my sister" -> "sister"."""
    words = term.split()
    while len(words) > 1 and words[0].lower() in LEADING_WORDS:
        words = words[1:]
    return " ".join(words)


@lru_cache(maxsize=4096)
def _term_pattern(term: str) -> re.Pattern:
    variants = sorted({term, core_term(term)}, key=len, reverse=True)
    return re.compile(rf"(?<![\w-])(?:{'|'.join(re.escape(v) for v in variants)})(?![\w-])", re.IGNORECASE)


def mask_term(answer: str, term: str) -> str:
    """``answer`` with the prompt's group term replaced by a neutral word."""
    return _term_pattern(term).sub(MASK, answer)


def fill(template: str, term: str) -> str:
    text = template.replace("{" + PLACEHOLDER + "}", term)
    if template.startswith("{" + PLACEHOLDER + "}"):  # "a woman applied..." starts a sentence
        text = term[:1].upper() + text[1:]
    return text


def expand(templates: Sequence[Template], attributes: dict[str, dict[str, list[str]]]) -> list[FilledPrompt]:
    """Every template x listed attribute, at one rotating term position, filled with every group's
    term; in the attributes file's order, then the templates'."""
    prompts = []
    for attribute, groups in attributes.items():
        listing = [t for t in templates if attribute in t.attributes]
        for k, template in enumerate(listing):
            slot = k % max(len(terms) for terms in groups.values())
            unit = f"{template.id}/{attribute}/{slot}"
            for group, terms in groups.items():
                term = terms[slot % len(terms)]
                prompts.append(FilledPrompt(id=f"{unit}/{group}", unit=unit, template_id=template.id,
                                            task=template.task, attribute=attribute, group=group, slot=slot,
                                            term=term, text=fill(template.text, term)))
    return prompts


def cap_prompts(prompts: Sequence[FilledPrompt], max_prompts: int | None, *, seed: int) -> list[FilledPrompt]:
    """At most ``max_prompts``, taking whole units (so pairs stay complete) in a seeded order that
    alternates between attributes (so a small cap still covers each one)."""
    if max_prompts is None or max_prompts >= len(prompts):
        return list(prompts)
    units: dict[str, list[FilledPrompt]] = {}
    for p in prompts:
        units.setdefault(p.unit, []).append(p)
    by_attribute: dict[str, list[str]] = {}
    for unit, members in units.items():
        by_attribute.setdefault(members[0].attribute, []).append(unit)
    rng = np.random.default_rng(seed)
    queues = {a: [keys[i] for i in rng.permutation(len(keys))] for a, keys in by_attribute.items()}
    chosen: set[str] = set()
    room = max_prompts
    while any(queues.values()):
        for attribute, queue in queues.items():
            if not queue:
                continue
            unit = queue.pop(0)
            if len(units[unit]) > room:
                queue.clear()  # an attribute's units are all the same size: none of them fits now
                continue
            chosen.add(unit)
            room -= len(units[unit])
    if not chosen:
        smallest = min(len(members) for members in units.values())
        raise TunewrightError(f"max_prompts {max_prompts} is smaller than one complete set of groups "
                              f"({smallest} prompts)", field="max_prompts")
    return [p for p in prompts if p.unit in chosen]


# --- the test ----------------------------------------------------------------------------------------

def _embeddings(embed: Embed, texts: list[str]) -> np.ndarray:
    unique = list(dict.fromkeys(texts))
    vectors = embed(unique)
    vectors = vectors.detach().cpu().numpy() if hasattr(vectors, "detach") else np.asarray(vectors)
    position = {t: i for i, t in enumerate(unique)}
    return vectors[[position[t] for t in texts]].astype(float)


def _pairs(grids: list[AttributeDesign], prompts: Sequence[FilledPrompt], answers: dict[str, list[str]],
           sims: dict[str, dict[str, np.ndarray]]) -> list[dict]:
    rows = []
    for d in grids:
        for u, unit in enumerate(d.units):
            for p, (a, b) in enumerate(d.pairs):
                ia, ib = int(d.index[u, a]), int(d.index[u, b])
                rows.append({
                    "attribute": d.name, "unit": unit, "template_id": prompts[ia].template_id, "task": prompts[ia].task,
                    "groups": [d.groups[a], d.groups[b]], "prompts": [prompts[ia].text, prompts[ib].text],
                    **{m: {"answers": [answers[m][ia], answers[m][ib]], "similarity": float(sims[m][d.name][u, p])}
                       for m in answers},
                })
    return rows


def counterfactual_test(prompts: Sequence[FilledPrompt], generate_base: Generate, generate_tuned: Generate, *,
                        spec: BiasSpec | None = None, embed: Embed | None = None, lexicon: Lexicon | None = None,
                        on_phase: Callable[[str, int], None] | None = None) -> dict:
    """Answer ``prompts`` with both generators and compare groups; the report without file paths.

    A generator takes prompt texts (user messages) and returns one answer each, in order."""
    spec = spec or BiasSpec()
    lexicon = lexicon or load_lexicon()
    if embed is None:
        from ..models.embeddings import default_embedder

        embed = default_embedder().encode
    texts = list(dict.fromkeys(p.text for p in prompts))  # a prompt shared by two units is answered once
    answers: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    for name, generate in (("base", generate_base), ("tuned", generate_tuned)):
        if on_phase:
            on_phase(name, len(texts))
        start = time.perf_counter()
        out = [str(a) for a in generate(texts)]
        seconds[name] = round(time.perf_counter() - start, 2)
        if len(out) != len(texts):
            raise ValueError(f"the {name} generator returned {len(out)} answers for {len(texts)} prompts")
        lookup = dict(zip(texts, out))
        answers[name] = [lookup[p.text] for p in prompts]

    # Measures read the answers with the group term masked, so an echo of the question never counts.
    masked = {name: [mask_term(a, p.term) for a, p in zip(answers[name], prompts)] for name in answers}
    vectors = _embeddings(embed, masked["base"] + masked["tuned"])
    grids = build_designs(prompts)
    stats: dict[str, dict[str, dict]] = {}
    sims: dict[str, dict[str, np.ndarray]] = {}
    for k, name in enumerate(("base", "tuned")):
        emb = vectors[k * len(prompts):(k + 1) * len(prompts)]
        measures = measure_answers(masked[name], lexicon)
        sims[name] = {d.name: d.similarities(emb) for d in grids}
        stats[name] = {d.name: attribute_stats(d, measures, sims[name][d.name],
                                               similarity_threshold=spec.similarity_threshold, n_boot=spec.bootstrap,
                                               seed=spec.seed, key=f"{name}/{d.name}") for d in grids}
    issues = {name: find_issues(stats[name], fail_rate_threshold=spec.fail_rate_threshold) for name in stats}
    in_base = {(i["attribute"], i["metric"]) for i in issues["base"]}
    for issue in issues["tuned"]:
        issue["in_base"] = (issue["attribute"], issue["metric"]) in in_base
    summary = {**largest_gap(stats["tuned"]), "base_max_gap": largest_gap(stats["base"])["max_gap"],
               "issues": issues["tuned"], "n_prompts": len(prompts)}

    gaps = [{"attribute": d.name, "metric": metric, "rate": metric in RATE_METRICS,
             "base": stats["base"][d.name]["gaps"][metric], "tuned": stats["tuned"][d.name]["gaps"][metric]}
            for metric in RATE_METRICS + SCALE_METRICS for d in grids]
    gaps.sort(key=lambda g: (not g["rate"], -(g["tuned"]["gap"] or 0) if g["rate"] else 0))
    pairs = _pairs(grids, prompts, answers, sims)
    threshold = spec.similarity_threshold
    new_failures = [p for p in pairs if p["base"]["similarity"] >= threshold > p["tuned"]["similarity"]]
    return {
        "summary": summary,
        "settings": {k: getattr(spec, k) for k in ("max_new_tokens", "similarity_threshold", "fail_rate_threshold",
                                                   "bootstrap", "seed", "max_prompts")},
        "n_prompts": len(prompts),
        "n_units": sum(len(d.units) for d in grids),
        "n_pairs": len(pairs),
        "attributes": {d.name: {"groups": list(d.groups), "n_units": len(d.units),
                                "base": stats["base"][d.name], "tuned": stats["tuned"][d.name]} for d in grids},
        "gaps": gaps,
        "issues": issues,
        "worst": sorted(pairs, key=lambda p: p["tuned"]["similarity"])[:MAX_EXAMPLES],
        "new_failures": sorted(new_failures, key=lambda p: p["tuned"]["similarity"] - p["base"]["similarity"])[
            :MAX_EXAMPLES],
        "n_new_failures": len(new_failures),
        "similarities": {m: [round(p[m]["similarity"], 4) for p in pairs] for m in answers},
        "seconds": seconds,
        "answers": [{"id": p.id, "attribute": p.attribute, "group": p.group, "template_id": p.template_id,
                     "prompt": p.text, "base": b, "tuned": t}
                    for p, b, t in zip(prompts, answers["base"], answers["tuned"])],
    }


# --- report files --------------------------------------------------------------------------------------

def _charts(report: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on a server
    import matplotlib.pyplot as plt

    from ..evaluate.report import png

    names = list(report["attributes"])
    xs = np.arange(len(names))
    fig, axes = plt.subplots(1, len(RATE_METRICS), figsize=(10, 3), sharey=True)
    for ax, metric in zip(axes, RATE_METRICS):
        for shift, model, color in ((-0.2, "base", "#adb5bd"), (0.2, "tuned", "#2a6f97")):
            gaps = [report["attributes"][n][model]["gaps"][metric] for n in names]
            gaps = [g if g["gap"] is not None else {"gap": 0.0, "ci": [0.0, 0.0]} for g in gaps]  # 2 groups: no bar
            values = np.array([g["gap"] for g in gaps]) * 100
            # Error bars stop at the interval; a lower bound below zero is cut at the axis.
            errors = np.array([[max(0.0, v - g["ci"][0] * 100), max(0.0, g["ci"][1] * 100 - v)]
                               for v, g in zip(values, gaps)]).T
            ax.bar(xs + shift, values, 0.4, yerr=errors, capsize=2, label=model, color=color)
        ax.set_xticks(xs, names, rotation=30, ha="right")
        ax.set_title(metric.replace("_", " "), fontsize=10)
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("largest gap (points)")
    axes[0].legend()
    charts = {"gaps": png(fig)}
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3))
    bins = np.linspace(-0.2, 1.0, 49)
    for model, color in (("base", "#adb5bd"), ("tuned", "#2a6f97")):
        values = report["similarities"][model]
        if values:
            ax.hist(values, bins=bins, alpha=0.6, color=color, label=model)
    ax.axvline(report["settings"]["similarity_threshold"], color="#e63946", linestyle="--", label="threshold")
    ax.set_xlabel("similarity of counterfactual answers")
    ax.set_ylabel("pairs")
    ax.legend()
    charts["similarity"] = png(fig)
    plt.close(fig)
    return charts


class GroupRow(TypedDict):
    """One attribute's per-group measures for one model."""

    attribute: str
    model: str  # "base" or "tuned"
    groups: dict[str, dict[str, float]]
    fail_rate: float | None


def group_tables(report: BiasReport) -> list[GroupRow]:
    """The per-group measures of a bias report read through ``BIAS_REPORT``."""
    if not isinstance(report["attributes"], dict):
        raise TunewrightError("the bias report's 'attributes' is not an object", field="attributes")
    rows: list[GroupRow] = []
    for attribute, entry in report["attributes"].items():
        for model in ("tuned", "base"):
            stats = entry.get(model) or {}
            groups = {str(g): {m: float(v) for m, v in measures.items() if isinstance(v, (int, float))}
                      for g, measures in (stats.get("groups") or {}).items()}
            if groups:
                fail = stats.get("fail_rate")
                rows.append(GroupRow(attribute=str(attribute), model=model, groups=groups,
                                     fail_rate=float(fail) if isinstance(fail, (int, float)) else None))
    return rows


def write_bias_report(folder: Path, report: BiasReport) -> tuple[Path, Path]:
    from ..evaluate.report import write_json_and_html

    return write_json_and_html(folder, "bias", report, "bias.html", package="tunewright.govern",
                               charts=_charts(report))


# --- the workspace stage -------------------------------------------------------------------------------

def bias_data_paths(workspace) -> tuple[Path, Path]:
    """The recipe's templates and attributes files (workspace-relative), or the shipped ones."""
    spec = workspace.recipe.govern.bias
    return (workspace.path(spec.templates) if spec.templates else TEMPLATES_FILE,
            workspace.path(spec.attributes) if spec.attributes else ATTRIBUTES_FILE)


def load_bias_data(workspace) -> tuple[list[Template], dict[str, dict[str, list[str]]], Path, Path]:
    templates_path, attributes_path = bias_data_paths(workspace)
    attributes = load_attributes(attributes_path)
    return load_templates(templates_path, attributes), attributes, templates_path, attributes_path


def run_bias_test(workspace, adapter: str | None = None, *, max_prompts: int | None = None,
                  on_phase: Callable[[str, int], None] | None = None, on_batch: Callable[[int], None] | None = None,
                  embed: Embed | None = None) -> BiasReport:
    """Base vs ``adapter`` on the counterfactual prompts; writes reports/<adapter>/bias/ and registers it."""
    from ..models.generation import generate_responses
    from ..models import load_model, load_tokenizer
    from ..methods.attach import attach_adapter
    from ..models.adapters import resolve_ref
    from ..registry.reports import ReportStore
    from ..retrieval.context import retriever_for

    spec = workspace.recipe.govern.bias
    adapter = adapter or workspace.recipe.train.adapter or workspace.recipe.name
    resolved = resolve_ref(adapter, base_model=workspace.recipe.base_model, registry=workspace.registry)
    if resolved.adapter_path is None:
        raise TunewrightError("the bias test compares an adapter with its base model; name an adapter, not 'base'",
                              field="adapter")
    templates, attributes, templates_path, attributes_path = load_bias_data(workspace)
    prompts = cap_prompts(expand(templates, attributes), max_prompts or spec.max_prompts, seed=spec.seed)

    started = time.perf_counter()
    tokenizer = load_tokenizer(resolved.base, padding_side="left")
    model = load_model(resolved.base)

    # An open-book adapter answers with its records; the base gets the same records, so the gaps
    # compared are what training changed, not what retrieval adds.
    retriever = retriever_for(workspace, resolved.adapter_path)
    prepare = retriever.augment if retriever is not None else list

    def answer(net, texts: list[str]) -> list[str]:
        return generate_responses(net, tokenizer, [prepare([{"role": "user", "content": t}]) for t in texts],
                                  max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size, on_batch=on_batch)

    # The adapter is merged into the base weights in place, so the base answers first.
    tested = counterfactual_test(prompts, lambda texts: answer(model, texts),
                                 lambda texts: answer(attach_adapter(model, resolved.adapter_path), texts),
                                 spec=spec, embed=embed, on_phase=on_phase)
    tested["seconds"]["total"] = round(time.perf_counter() - started, 2)
    tested["settings"]["max_prompts"] = max_prompts or spec.max_prompts
    report = BiasReport(
        format=BIAS_REPORT.version,
        adapter=adapter,
        adapter_id=resolved.adapter_id,
        base_model=resolved.base.ref,
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        data={"templates": str(templates_path), "attributes": str(attributes_path), "n_templates": len(templates),
              "attribute_groups": {a: list(g) for a, g in attributes.items()}},
        **tested,
    )
    # One folder per run: a registered report's file must keep the bytes its hash (and any sign-off) pinned.
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    folder = workspace.dir("reports") / (adapter if resolved.adapter_id is not None else Path(adapter).name) / "bias" / stamp
    json_path, html_path = write_bias_report(folder, report)
    record = ReportStore(workspace.registry).add_report("bias", str(html_path), report["summary"],
                                                       adapter_id=resolved.adapter_id)
    report["paths"] = {"json": str(json_path), "html": str(html_path)}
    report["report_id"] = record.id
    return report
