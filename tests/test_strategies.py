"""Strategies as recipe overlays, compared by the normal build/train/eval APIs."""

from __future__ import annotations

import json

import pytest

from tunewright.config import BuildSpec, EvalSpec, Recipe, ReplaySpec, TrainSpec
from tunewright.errors import TunewrightError
from tunewright.strategies import STRATEGIES, compare_strategies, get_strategy, overlay, strategy_of

from helpers import run_cli

TABLE = "sku,label,price\nA-1,Blue Kettle,20\nB-2,Red Pan,35\n"
RULES = "# Rules\n\n## Returns\n- Returns are accepted within 30 days.\n"
QUESTIONS = [{"question": "so what do you charge for that red pan", "accept": ["$35"], "kind": "price"},
             {"question": "item A-1, what's it called?", "accept": ["Blue Kettle"], "kind": "code to name"}]


def _recipe(base_model="smollm2-135m-instruct") -> Recipe:
    build = BuildSpec(
        tables=[{"path": "shop.csv",
                 "columns": {"price": {"questions": ["Price of {label}?", "Cost of {label}?", "What is {label} priced at?"],
                                       "answer": "{label} costs ${price}.", "reference": "${price}"}},
                 "records": [{"questions": ["What is {sku}?", "Which item is {sku}?", "Name of {sku}?"],
                              "answer": "{sku} is the {label}.", "reference": "{label}"}]}],
        documents=[{"path": "rules.md", "seeds": [{"questions": ["Return window?", "How long to return?", "Returns deadline?"],
                                                   "answer": "Within 30 days.", "reference": "30 days"}]}],
        absent={"items": ["boats", "bikes"], "questions": ["Do you sell {item}?", "Any {item}?"],
                "answer": "Sorry, we don't sell {item}."})
    return Recipe(name="shop", base_model=base_model, build=build, retrieval={"k": 2},
                  train=TrainSpec(r=4, alpha=8, batch_size=4, max_steps=2, max_length=512, precision="fp32",
                                  replay=ReplaySpec(rows=3, max_new_tokens=8)),
                  eval=EvalSpec(max_new_tokens=8, questions="questions.jsonl"))


def test_every_strategy_overlays_the_recipe_it_names():
    recipe = _recipe()
    for name, strategy in STRATEGIES.items():
        changed = overlay(recipe, strategy)
        assert strategy_of(changed) == name
        assert changed.train.adapter == "shop-" + name.replace("+", "-plus-")
        assert changed.build.dataset == f"{recipe.dataset_name}-" + name.replace("+", "-plus-")
        assert bool(changed.build.absent) == strategy.augmented
        assert all(bool(t.records) == strategy.augmented for t in changed.build.tables)
        if strategy.remedy:  # the recipe's replay settings, with the strategy's loss
            assert changed.train.replay.rows == 3 and changed.train.replay.loss == {"kl": "kl", "replay": "tokens"}[strategy.remedy]
    assert recipe.train.replay.loss == "kl" and recipe.build.open_book is None  # the recipe itself is untouched
    assert strategy_of(recipe) == "closed-augmented+kl"
    assert strategy_of(recipe.model_copy(update={"train": recipe.train.model_copy(update={"replay": None})})) == \
        "closed-augmented"


def test_unknown_strategy_and_a_recipe_without_questions_are_refused_before_training(tmp_path, capsys):
    from tunewright.workspace import Workspace

    with pytest.raises(TunewrightError, match="unknown strategy 'open-bok'.*known: closed, closed\\+replay"):
        get_strategy("open-bok")
    workspace = Workspace.init(tmp_path / "ws", _recipe().model_copy(update={"eval": EvalSpec()}))
    with pytest.raises(TunewrightError, match="needs eval.questions"):
        compare_strategies(workspace, ["closed"])
    code, _, err = run_cli(["-w", str(workspace.root), "compare", "--strategies", "closed,open-bok"], capsys)
    assert code != 0 and "unknown strategy 'open-bok'" in err and len(err.strip().splitlines()) == 1
    assert not workspace.registry.list_runs()  # nothing half-done


def test_compare_trains_and_evaluates_each_strategy_under_its_own_name(tmp_path, tiny_model_dir, capsys):
    from tunewright.workspace import Workspace

    workspace = Workspace.init(tmp_path / "ws", _recipe(str(tiny_model_dir)))
    (workspace.root / "shop.csv").write_text(TABLE)
    (workspace.root / "rules.md").write_text(RULES)
    (workspace.root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    code, out, err = run_cli(["-w", str(workspace.root), "compare", "--strategies", "closed,open-book+kl"], capsys)
    assert code == 0, err
    report = json.loads((workspace.root / "reports" / "strategies.json").read_text())
    rows = {r["strategy"]: r for r in report["strategies"]}
    assert list(rows) == ["closed", "open-book+kl"] and report["recipe_strategy"] == "closed-augmented+kl"
    # Each row is what the registry holds for that strategy's own adapter and dataset.
    runs = {r.name: r for r in workspace.registry.list_runs() if r.kind == "train"}
    assert set(runs) == {"shop-closed", "shop-open-book-plus-kl"}
    assert runs["shop-open-book-plus-kl"].config["train"]["replay"]["loss"] == "kl"
    assert runs["shop-closed"].config["train"]["replay"] is None
    assert rows["closed"]["train_rows"] < rows["open-book+kl"]["train_rows"]  # records and absent items added rows
    for name, row in rows.items():
        assert row["questions_by_kind"].keys() == {"price", "code to name"}
        assert row["steps"] == 2 and 0.0 <= row["questions"] <= 1.0
        adapter = workspace.registry.get_adapter(row["adapter"])
        evaluation = [e for e in workspace.registry.list_evaluations() if e.adapter_id == adapter.id]
        assert evaluation and evaluation[-1].metrics["questions"]["accuracy"] == row["questions"]
    assert "open-book+kl" in out and "customer questions by kind" in out


def test_run_is_an_api_the_cli_prints(tmp_path, tiny_model_dir, capsys):
    """`tunewright run` is run_recipe plus printing: the CLI's stage displays are entered one at a
    time in order, and what the API returns is what the registry holds."""
    from tunewright.strategies import RunProgress, run_recipe
    from tunewright.workspace import Workspace

    workspace = Workspace.init(tmp_path / "ws", _recipe(str(tiny_model_dir)))
    (workspace.root / "shop.csv").write_text(TABLE)
    (workspace.root / "rules.md").write_text(RULES)
    (workspace.root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    seen = []

    class Watch(RunProgress):
        def dataset(self, record):
            seen.append(("dataset", record.version))

        def training(self):
            seen.append("training")
            return super().training()

        def evaluating(self):
            seen.append("evaluating")
            return super().evaluating()

    done = run_recipe(workspace, Watch())
    assert seen == [("dataset", done.dataset.version), "training", "evaluating"]
    assert workspace.registry.get_adapter(done.adapter.name).id == done.adapter.id
    assert done.report["adapter"] == done.adapter.name and done.result.steps == 2
    assert set(done.seconds) == {"dataset", "train", "eval", "total"}
    assert done.seconds["total"] >= done.seconds["train"] > 0
    code, out, err = run_cli(["-w", str(workspace.root), "run"], capsys)
    assert code == 0, err
    assert "time: dataset" in out and "strategy closed-augmented+kl (this run)" in out


def test_a_built_row_that_asks_a_recipe_question_is_left_out_and_named(tmp_path, tiny_model_dir, capsys):
    """A template can write a customer's question word for word: the build leaves those training rows
    out (and only those), names them in the dataset's spec, and the run's leak check then passes."""
    from tunewright.evaluate.api import checked_questions
    from tunewright.evaluate.questions import normalise_question
    from tunewright.synth.build import build_dataset
    from tunewright.synth.grounded import build_rows
    from tunewright.workspace import Workspace

    workspace = Workspace.init(tmp_path / "ws", _recipe(str(tiny_model_dir)))
    (workspace.root / "shop.csv").write_text(TABLE)
    (workspace.root / "rules.md").write_text(RULES)
    # Every training question about the kettle's price names it, whichever phrasing is held out.
    leaked = [*QUESTIONS, {"question": "blue kettle?", "accept": ["$20"], "kind": "price"}]
    (workspace.root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in leaked))
    built = [g.row.messages[-2].content for g in build_rows(workspace.recipe.build, workspace.path) if g.split == "train"]
    expected_out = [q for q in built if " blue kettle " in f" {normalise_question(q)} "]
    assert expected_out  # the template really does write the question

    record = build_dataset(workspace)
    kept = [r.messages[-2].content for r in _split_rows(record, "train")]
    assert sorted(kept) == sorted(q for q in built if q not in expected_out)
    left = record.spec["questions_left_out"]
    assert left["questions"] == "questions.jsonl" and {r["question_line"] for r in left["rows"]} == {3}
    assert len(left["rows"]) == len(expected_out)
    assert checked_questions(workspace, f"{record.name}@{record.version}") is not None
    code, out, err = run_cli(["-w", str(workspace.root), "data", "build"], capsys)
    assert code == 0, err
    assert f"left out {len(expected_out)} training row(s) that ask questions.jsonl line(s) 3" in " ".join(out.split())


def test_run_refuses_a_question_an_imported_row_asks_before_it_trains(tmp_path, tiny_model_dir, capsys):
    """Imported rows are the user's own and are not pruned: a leak there fails before training."""
    from tunewright.workspace import Workspace

    recipe = _recipe(str(tiny_model_dir)).model_copy(update={"build": None})
    recipe = Recipe.model_validate({**recipe.model_dump(mode="json"), "data": {"sources": [{"path": "chats.jsonl"}]}})
    workspace = Workspace.init(tmp_path / "ws", recipe)
    chats = [{"messages": [{"role": "user", "content": f"Question {i}: so what do you charge for that red pan"},
                           {"role": "assistant", "content": "$35."}]} for i in range(12)]
    (workspace.root / "chats.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    (workspace.root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    code, _, err = run_cli(["-w", str(workspace.root), "run"], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert "questions.jsonl:1: field 'question': question is contained in training row" in err
    assert not workspace.registry.list_runs()  # refused before any training run was registered


def _split_rows(record, split):
    from pathlib import Path

    from tunewright.data.prepare import read_split

    return read_split(Path(record.path), split)