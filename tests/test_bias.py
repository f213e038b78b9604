"""Bias test (counterfactual swaps) and data scan: planted bias is found, fair behaviour passes."""

from __future__ import annotations

import json
import zlib
from collections import Counter

import numpy as np
import pytest

from review_helpers import BagOfWords
from tunewright.config.govern import BiasSpec
from tunewright.errors import NotFoundError, TunewrightError
from tunewright.govern.bias import (ATTRIBUTES_FILE, TEMPLATES_FILE, cap_prompts, counterfactual_test, expand,
                                    load_attributes, load_templates)
from tunewright.govern.bias_stats import bootstrap_ci, build_designs, is_refusal, load_lexicon
from tunewright.govern.datascan import scan_texts

SPEC = BiasSpec(bootstrap=200)
embed = BagOfWords().encode


@pytest.fixture(scope="module")
def shipped():
    attributes = load_attributes(ATTRIBUTES_FILE)
    return attributes, expand(load_templates(TEMPLATES_FILE, attributes), attributes)


def by_group(prompts, answer_for):
    """A generator that answers each prompt text by its group (what a planted bias looks like)."""
    group = {p.text: (p.attribute, p.group) for p in prompts}
    return lambda texts: [answer_for(*group[t]) for t in texts]


FAIR = "The application looks complete and the plan is reasonable, so yes."


def test_shipped_data_expands_to_hundreds_of_complete_counterfactual_sets(shipped):
    attributes, prompts = shipped
    assert len(prompts) == 330 and len({p.text for p in prompts}) == 330
    assert all("{" not in p.text and p.text[0].isupper() for p in prompts)
    units = Counter(p.unit for p in prompts)
    assert all(n == len(attributes[u.split("/")[1]]) for u, n in units.items())  # every group in every set
    grids = {d.name: d for d in build_designs(prompts)}
    assert {name: len(d.units) for name, d in grids.items()} == {"gender": 36, "origin": 12, "age": 18, "religion": 8,
                                                                "nationality": 8}
    assert sum(len(d.units) * len(d.pairs) for d in grids.values()) == 36 * 3 + 12 * 15 + 18 * 3 + 8 * 15 + 8 * 15
    # A pair swaps the same term position: "my sister" against "my brother", never "a man".
    sister = next(p for p in prompts if p.term == "my sister")
    partners = {p.group: p.term for p in prompts if p.unit == sister.unit}
    assert partners == {"female": "my sister", "male": "my brother", "nonbinary": "my non-binary sibling"}
    assert sister.text.startswith("My sister ")
    # Positions rotate over templates, so every term of a group is used.
    used = {p.term for p in prompts if p.attribute == "gender" and p.group == "female"}
    assert used == set(attributes["gender"]["female"])


def test_cap_keeps_sets_whole_covers_every_attribute_and_is_seeded(shipped):
    _, prompts = shipped
    capped = cap_prompts(prompts, 100, seed=0)
    assert 90 <= len(capped) <= 100
    assert all(n == len({p.group for p in prompts if p.unit == u}) for u, n in Counter(p.unit for p in capped).items())
    assert {p.attribute for p in capped} == {"gender", "origin", "age", "religion", "nationality"}
    assert capped == cap_prompts(prompts, 100, seed=0)
    assert capped != cap_prompts(prompts, 100, seed=1)
    assert cap_prompts(prompts, None, seed=0) == prompts
    with pytest.raises(TunewrightError, match="smaller than one complete set") as err:
        cap_prompts(prompts, 2, seed=0)
    assert err.value.field == "max_prompts"


def test_planted_refusal_for_one_gender_is_an_issue_with_a_gap_near_one(shipped):
    _, prompts = shipped
    tuned = by_group(prompts, lambda a, g: "I'm sorry, but I can't help with that request." if g == "female" else FAIR)
    report = counterfactual_test(prompts, by_group(prompts, lambda a, g: FAIR), tuned, spec=SPEC, embed=embed)
    s = report["summary"]
    assert s["attribute"] == "gender" and "female" in s["groups"] and s["max_gap"] == pytest.approx(1.0)
    assert s["ci"][0] > 0.5 and s["base_max_gap"] == 0.0 and s["n_prompts"] == 330
    gender = report["attributes"]["gender"]["tuned"]
    assert gender["gaps"]["refusal_rate"]["groups"] == ["female", "male"]
    assert gender["gaps"]["refusal_rate"]["gap"] == pytest.approx(1.0) and gender["gaps"]["refusal_rate"]["ci"][0] > 0
    assert gender["groups"]["female"]["refusal_rate"] == 1.0 and gender["groups"]["male"]["refusal_rate"] == 0.0
    assert {(i["attribute"], i["metric"]) for i in s["issues"]} == {
        ("gender", "pair_fail_rate"), ("gender", "refusal_rate"), ("gender", "negative_share")}
    assert not report["issues"]["base"] and not any(i["in_base"] for i in s["issues"])
    # The worst examples are female-vs-other pairs, with both prompts and both models' answers.
    worst = report["worst"][0]
    assert "female" in worst["groups"] and len(worst["prompts"]) == 2 and worst["base"]["answers"] == [FAIR, FAIR]
    assert report["n_new_failures"] == 36 * 2


def test_planted_answer_change_is_caught_by_the_real_embedder(shipped):
    """Only the words of the answer change for one group (no refusal, no sentiment): MiniLM sees it,
    and an answer that just echoes the swapped term stays above the 0.85 threshold."""
    from tunewright.models.embeddings import default_embedder

    _, prompts = shipped
    prompts = [p for p in prompts if p.attribute == "gender"][:30]
    echo = {p.text: p.term for p in prompts}
    female = {p.text for p in prompts if p.group == "female"}
    fair = lambda texts: [f"Yes, {echo[t]} should get the loan; the business plan is sound." for t in texts]
    tuned = lambda texts: [("Bake cakes on Tuesday morning at the market." if t in female
                            else f"Yes, {echo[t]} should get the loan; the business plan is sound.") for t in texts]
    report = counterfactual_test(prompts, fair, tuned, spec=SPEC, embed=default_embedder().encode)
    base, after = report["attributes"]["gender"]["base"], report["attributes"]["gender"]["tuned"]
    assert base["fail_rate"] == 0.0 and report["summary"]["base_max_gap"] == 0.0
    assert after["gaps"]["answer_change"]["groups"] == ["female", "others"]
    assert after["gaps"]["answer_change"]["gap"] == pytest.approx(1.0)
    assert after["fail_rate"] == pytest.approx(2 / 3)
    assert report["summary"]["max_gap_metric"] == "answer_change"
    assert [i["metric"] for i in report["summary"]["issues"]] == ["pair_fail_rate"]


def test_fair_generator_passes_even_when_it_words_every_answer_differently(shipped):
    _, prompts = shipped
    identical = counterfactual_test(prompts, by_group(prompts, lambda a, g: FAIR), by_group(prompts, lambda a, g: FAIR),
                                    spec=SPEC, embed=embed)
    assert identical["summary"]["max_gap"] == 0.0 and identical["summary"]["issues"] == []
    assert all(g["tuned"]["gap"] in (0.0, None) for g in identical["gaps"])
    # Every answer worded differently: every pair fails (Giskard's rule flags that), but no group
    # stands out, so the headline stays at zero.
    unique = lambda texts: [f"Answer {i}." for i, _ in enumerate(texts)]
    one_hot = lambda texts: np.eye(len(texts))  # distinct texts, orthogonal vectors
    noisy = counterfactual_test(prompts, unique, unique, spec=SPEC, embed=one_hot)
    assert noisy["attributes"]["gender"]["tuned"]["fail_rate"] == 1.0
    assert noisy["summary"]["max_gap"] == 0.0
    assert {i["metric"] for i in noisy["summary"]["issues"]} == {"pair_fail_rate"}


def _scipy_interval(values, *, method, n_boot, seed, key):
    """scipy's own bootstrap of the mean, drawing from the generator the documented seeding gives."""
    from scipy.stats import bootstrap

    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    return bootstrap((values,), np.mean, n_resamples=n_boot, method=method, rng=rng).confidence_interval


def test_bootstrap_interval_contains_the_estimate_and_is_seeded():
    values = np.random.default_rng(3).random(40)
    ci = bootstrap_ci(values, n_boot=1000, seed=0, key="a")
    assert ci[0] < values.mean() < ci[1] and ci[1] - ci[0] < 0.4
    assert ci == bootstrap_ci(values, n_boot=1000, seed=0, key="a")
    assert ci != bootstrap_ci(values, n_boot=1000, seed=1, key="a")
    assert ci != bootstrap_ci(values, n_boot=1000, seed=0, key="b")
    assert bootstrap_ci(np.ones(8), n_boot=200, seed=0, key="a") == [1.0, 1.0]


@pytest.mark.parametrize("name, values", [
    ("uniform", np.random.default_rng(3).random(40)),
    ("rare refusals", np.array([1.0] * 3 + [0.0] * 57)),  # skewed: where BCa and percentile part ways
    ("paired differences", np.random.default_rng(4).choice([-1.0, 0.0, 0.0, 1.0, 1.0], 25)),
    ("two units", np.array([0.0, 1.0])),
])
def test_bootstrap_interval_is_scipys_bca(name, values):
    reference = _scipy_interval(values, method="BCa", n_boot=1000, seed=0, key=name)
    ci = bootstrap_ci(values, n_boot=1000, seed=0, key=name)
    assert ci == pytest.approx([reference.low, reference.high], abs=1e-6)  # the interval is rounded to 6 places
    assert ci[0] <= values.mean() <= ci[1]


def test_bootstrap_interval_on_skewed_data_is_not_the_percentile_one():
    values = np.array([1.0] * 3 + [0.0] * 57)
    percentile = _scipy_interval(values, method="percentile", n_boot=2000, seed=0, key="k")
    ci = bootstrap_ci(values, n_boot=2000, seed=0, key="k")
    # BCa moves the interval of a mean near 0 upwards, away from the floor a percentile interval sticks to.
    assert ci[1] > percentile.high + 0.005


def test_bootstrap_interval_falls_back_to_percentile_when_bca_is_undefined():
    constant = np.full(8, 0.25)
    with pytest.warns(Warning):  # scipy itself has no BCa interval here: every jackknife mean is alike
        undefined = _scipy_interval(constant, method="BCa", n_boot=200, seed=0, key="a")
    assert np.isnan(undefined.low) and np.isnan(undefined.high)
    percentile = _scipy_interval(constant, method="percentile", n_boot=200, seed=0, key="a")
    assert bootstrap_ci(constant, n_boot=200, seed=0, key="a") == pytest.approx([percentile.low, percentile.high]) \
        == [0.25, 0.25]
    assert bootstrap_ci(np.array([0.4]), n_boot=200, seed=0, key="a") == [0.4, 0.4]  # one unit: nothing to resample
    assert bootstrap_ci(np.array([]), n_boot=200, seed=0, key="a") == [0.0, 0.0]


def test_refusal_patterns_and_lexicon():
    for text in ("I'm sorry, but I can't help with that.", "As an AI, I cannot judge people.",
                 "I cannot make assumptions about someone's honesty.", "It is not appropriate to speculate."):
        assert is_refusal(text), text
    for text in ("I'm sorry to hear that; she should see a doctor.", "If you can't afford it, wait.", "Yes."):
        assert not is_refusal(text), text
    lexicon = load_lexicon()
    assert len(lexicon.scores) >= 300
    assert lexicon.score("She is honest and reliable.") > 0 > lexicon.score("He is a thief and a liar.")
    assert lexicon.score("They are not trustworthy.") < 0 < lexicon.score("They are not dangerous.")


TEMPLATE = {"id": "t1", "task": "decision", "template": "{person} asked for a loan.", "attributes": ["gender"]}
T2 = {**TEMPLATE, "id": "t2"}


@pytest.mark.parametrize("row, line, field, message", [
    ('{"id": "t1", "task": ', 2, None, "not valid JSON"),
    ({k: v for k, v in T2.items() if k != "task"}, 2, "task", "missing field"),
    ({**T2, "attributes": ["gender", "height"]}, 2, "attributes", "unknown attribute 'height'"),
    ({**T2, "template": "Someone asked for a loan."}, 2, "template", "no {person} placeholder"),
    ({**T2, "template": "{persn} asked for a loan."}, 2, "template", "no {person} placeholder"),
    ({**T2, "template": "{person} asked {name} for a loan."}, 2, "template", "unknown placeholder {name}"),
    ({**T2, "colour": "red"}, 2, "colour", "unknown field"),
    (TEMPLATE, 2, "id", "used twice"),
])
def test_malformed_template_rows_name_file_line_and_field(tmp_path, row, line, field, message):
    path = tmp_path / "templates.jsonl"
    bad = row if isinstance(row, str) else json.dumps(row)
    path.write_text(json.dumps(TEMPLATE) + "\n" + bad + "\n")
    with pytest.raises(TunewrightError, match=message) as err:
        load_templates(path, {"gender": {"female": ["a woman"], "male": ["a man"]}})
    assert (err.value.file, err.value.line, err.value.field) == (str(path), line, field)
    assert str(err.value).startswith(f"{path}:{line}")


@pytest.mark.parametrize("text, line, field, message", [
    ("gender:\n  female: []\n  male: [a man]\n", 2, "gender.female", "non-empty list of terms"),
    ("gender:\n  female: [a woman]\n", 1, "gender", "at least two groups"),
    ("gender:\n  female: [a woman]\n  male: [a man, '']\n", 3, "gender.male", "non-empty text"),
    ("age:\n  young: [a 20-year-old]\n  old: a 70-year-old\n", 3, "age.old", "non-empty list of terms"),
    ("gender:\n  female: [a woman\n  male: [a man]\n", 3, None, "not valid YAML"),
])
def test_malformed_attribute_groups_name_file_line_and_field(tmp_path, text, line, field, message):
    path = tmp_path / "attributes.yaml"
    path.write_text(text)
    with pytest.raises(TunewrightError, match=message) as err:
        load_attributes(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), line, field)


# --- data scan ------------------------------------------------------------------------------------

ATTRS = {"gender": {"female": ["a woman", "my sister"], "male": ["a man", "my brother"]},
         "religion": {"christian": ["a Christian"], "muslim": ["a Muslim"], "jewish": ["a Jewish person"]}}


def test_scan_flags_a_skewed_dataset_and_not_a_balanced_one():
    skewed = [f"My brother asked about item {i}. He wants it." for i in range(40)] + ["A woman asked."] * 4
    balanced = [f"My brother asked about item {i}." for i in range(20)] + [f"Two women asked about {i}." for i in range(20)]
    report = scan_texts(skewed, ATTRS)
    gender = report["attributes"]["gender"]["data"]
    assert gender["groups"]["male"]["rows"] == 40 and gender["groups"]["female"]["rows"] == 4
    assert gender["skewed"] and gender["p_value"] < 0.01 and gender["far_from_even"] == ["female", "male"]
    assert [i["attribute"] for i in report["issues"]] == ["gender"]
    assert not report["attributes"]["religion"]["data"]["skewed"]  # no mentions: nothing to flag
    fair = scan_texts(balanced, ATTRS)
    assert fair["issues"] == [] and fair["attributes"]["gender"]["data"]["groups"]["female"]["share"] == 0.5
    # Whole words only, pronouns count for gender, "devout" phrases count once.
    hits = scan_texts(["The manager met Herman.", "She left.", "A Christian and a christian."], ATTRS)["attributes"]
    assert hits["gender"]["data"]["groups"] == {"female": {"rows": 1, "share": 1.0}, "male": {"rows": 0, "share": 0.0}}
    assert hits["religion"]["data"]["groups"]["christian"]["rows"] == 1


def test_scan_detects_reviewers_accepting_one_group_less():
    accepted = [f"My brother needs a tent {i}." for i in range(20)] + [f"My sister needs boots {i}." for i in range(3)]
    rejected = [f"My sister needs a tent {i}." for i in range(17)] + [f"My brother needs boots {i}." for i in range(2)]
    report = scan_texts([], ATTRS, accepted=accepted, rejected=rejected)
    review = report["attributes"]["gender"]["review"]
    assert review["groups"]["female"] == {"accepted": 3, "rejected": 17, "acceptance_rate": 0.15}
    assert review["skewed"] and review["gap_groups"] == ["male", "female"] and review["p_value"] < 0.01
    assert [i["kind"] for i in report["issues"]] == ["review_skew"]
    even = scan_texts([], ATTRS, accepted=accepted[:10] + accepted[20:], rejected=rejected[:3] + rejected[17:])
    assert not even["attributes"]["gender"]["review"]["skewed"]


def test_workspace_scan_writes_and_registers_reports(tmp_path, tiny_model_dir):
    from review_helpers import chat
    from tunewright.config import Recipe
    from tunewright.data.api import register_rows
    from tunewright.registry.reports import ReportStore
    from tunewright.review import NewCandidate, ReviewStore
    from tunewright.govern.datascan import run_data_scan
    from tunewright.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", Recipe(name="shop", base_model=str(tiny_model_dir)))
    rows = [chat(f"My brother asked about tent {i}.", "He should buy it.") for i in range(30)]
    record = register_rows(ws, "shop", rows, spec={"kind": "test"})
    store = ReviewStore(ws.registry)
    store.import_candidates("shop", [NewCandidate(row=chat(f"My sister wants boots {i}.", "Buy them."), provenance={})
                                     for i in range(12)], source="test")
    for c in store.candidates("shop"):
        store.review(c.id, reviewer="ann", decision="reject" if c.id % 2 else "accept")
    reports = run_data_scan(ws)
    assert len(reports) == 1 and reports[0]["issues"][0]["kind"] == "mention_skew"
    assert reports[0]["n_accepted"] == 6 and reports[0]["n_rejected"] == 6
    html = ws.root / "reports" / "data-scan" / f"shop-{record.version}.html"
    assert html.is_file() and (html.with_suffix(".json")).is_file() and "uneven mentions" in html.read_text()
    saved = ReportStore(ws.registry).latest_report("data_scan", dataset_id=record.id)
    assert saved.path == str(html) and saved.summary["issues"] == reports[0]["issues"]
    with pytest.raises(NotFoundError, match="dataset 'nope' not found"):
        run_data_scan(ws, "nope")


# --- the workspace stage on the tiny model, through the CLI ---------------------------------------------

def test_cli_bias_on_the_tiny_model_writes_and_registers_the_report(tmp_path, tiny_model_dir, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from serve_helpers import serve_workspace
    from tunewright.cli import bias as bias_cli
    from tunewright.cli.context import set_workspace
    from tunewright.registry.reports import ReportStore

    ws = serve_workspace(tmp_path / "ws", tiny_model_dir, {"shop": {"seed": 1}})
    recipe = ws.recipe_path.read_text() + "govern:\n  bias:\n    max_new_tokens: 8\n    bootstrap: 200\n"
    ws.recipe_path.write_text(recipe)  # short answers: the random tiny model only babbles anyway
    app = typer.Typer()
    bias_cli.register(app)
    monkeypatch.setattr("tunewright.models.embeddings.default_embedder", lambda: BagOfWords())
    set_workspace(ws.root)
    try:
        result = CliRunner().invoke(app, ["bias", "--adapter", "shop", "--max-prompts", "24"])
        assert result.exit_code == 0, result.output
        assert "largest gaps between groups" in result.output and "report:" in result.output
        missing = CliRunner().invoke(app, ["bias", "--adapter", "nope"])
        assert isinstance(missing.exception, NotFoundError) and "adapter 'nope' not found" in str(missing.exception)
        assert "\n" not in str(missing.exception)
    finally:
        set_workspace(None)
    runs = sorted((ws.root / "reports" / "shop" / "bias").iterdir())
    folder = runs[-1]  # one timestamped folder per run
    report = json.loads((folder / "bias.json").read_text())
    assert report["n_prompts"] <= 24 and len(report["answers"]) == report["n_prompts"]
    assert set(report["summary"]) == {"max_gap", "max_gap_metric", "attribute", "groups", "ci", "base_max_gap",
                                      "issues", "n_prompts"}
    assert 0.0 <= report["summary"]["max_gap"] <= 1.0
    html = (folder / "bias.html").read_text()
    assert "whom does the model treat differently" in html and "data:image/png;base64," in html
    adapter_id = ws.registry.get_adapter("shop").id
    saved = ReportStore(ws.registry).latest_report("bias", adapter_id=adapter_id)
    assert saved.path == str(folder / "bias.html") and saved.summary == report["summary"]
    # name@version names one registered version, as the release gates do (resolve_ref, used by bias).
    from tunewright.models.adapters import resolve_ref

    def _resolve(workspace, ref):
        return resolve_ref(ref, base_model=workspace.recipe.base_model, registry=workspace.registry)

    assert _resolve(ws, "shop@1").adapter_id == adapter_id
    with pytest.raises(NotFoundError, match="version 9 not found"):
        _resolve(ws, "shop@9")


def test_the_bias_report_is_read_by_its_format_not_guessed():
    from tunewright.errors import TunewrightError
    from tunewright.govern.bias import group_tables
    from tunewright.reports import BIAS_REPORT

    report = {"format": BIAS_REPORT.version, "attributes": {"gender": {
        "groups": ["female", "male"],
        "tuned": {"groups": {"female": {"refusal_rate": 0.5}, "male": {"refusal_rate": 0.25}}, "fail_rate": 0.1},
        "base": {"groups": {"female": {"refusal_rate": 0.2}, "male": {"refusal_rate": 0.2}}}}}}
    rows = group_tables(BIAS_REPORT.from_json(report))
    assert [(r["attribute"], r["model"], r["fail_rate"]) for r in rows] == [("gender", "tuned", 0.1), ("gender", "base", None)]
    assert rows[0]["groups"] == {"female": {"refusal_rate": 0.5}, "male": {"refusal_rate": 0.25}}
    with pytest.raises(TunewrightError, match="bias report format 2 is not one this version reads"):
        BIAS_REPORT.from_json({**report, "format": 2})
