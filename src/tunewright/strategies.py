"""Ways to turn a recipe into a specialist, measured side by side on the same data.

A strategy is an overlay on the recipe: which builder augmentations are on (row-level records,
facts across rows, "we don't sell that"), whether rows are open-book (retrieved records in the
prompt, RAFT), and which remedy against forgetting runs (none, replay rows trained on the base's
greedy answers, or replay rows trained on the base's distributions: a KL penalty to the base).
Each one builds its own dataset version, trains its own adapter under its own name and is
evaluated by the normal evaluation API, so every number here is one ``tunewright eval`` also gives.

This sits above data, train and evaluate (it calls all three), beside ``cli``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from .config import OpenBookSpec, Recipe, ReplaySpec
from .errors import TunewrightError
from .io import atomic_write_json
from .reports import EvalReport


@dataclass(frozen=True)
class Strategy:
    name: str
    augmented: bool  # records, groups and absent items as the recipe writes them
    open_book: bool
    remedy: str | None  # None, "replay" (tokens) or "kl"
    description: str


def _strategies() -> dict[str, Strategy]:
    shapes = {
        "closed": (False, False, "closed-book: the recipe's per-column questions only"),
        "closed-augmented": (True, False, "closed-book plus row records, codes both ways, facts across rows, absent items"),
        "open-book": (True, True, "augmented rows with the top-k retrieved records in the prompt (RAFT)"),
    }
    remedies = {None: "", "replay": "; replay rows on the base's answers", "kl": "; replay rows on the base's "
                                                                                 "distributions (KL to the base)"}
    out = {}
    for shape, (augmented, open_book, text) in shapes.items():
        for remedy, extra in remedies.items():
            name = shape if remedy is None else f"{shape}+{remedy}"
            out[name] = Strategy(name, augmented, open_book, remedy, text + extra)
    return out


STRATEGIES = _strategies()
# What `compare --strategies` runs by default: the three shapes, without and with the default remedy.
DEFAULT_STRATEGIES = ("closed", "closed+kl", "closed-augmented", "closed-augmented+kl", "open-book", "open-book+kl")


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise TunewrightError(f"unknown strategy '{name}' (known: {', '.join(STRATEGIES)})", field="--strategies")
    return STRATEGIES[name]


def strategy_of(recipe: Recipe) -> str:
    """The strategy a recipe runs as written (its row in the comparison)."""
    build = recipe.build
    augmented = build is not None and bool(build.absent or any(t.records or t.groups for t in build.tables))
    shape = "open-book" if build is not None and build.open_book else (
        "closed-augmented" if augmented else "closed")
    replay = recipe.train.replay
    return shape if replay is None else f"{shape}+{'kl' if replay.loss == 'kl' else 'replay'}"


def overlay(recipe: Recipe, strategy: Strategy) -> Recipe:
    """The recipe as ``strategy`` runs it, with dataset and adapter named after the strategy."""
    if recipe.build is None:
        raise TunewrightError("strategies overlay the recipe's build section; this recipe imports its data",
                              field="build")
    build = recipe.build.model_copy(deep=True)
    if not strategy.augmented:
        for table in build.tables:
            table.records, table.groups = [], None
        build.absent = None
    if not strategy.open_book:
        build.open_book = None
    elif build.open_book is None:
        build.open_book = OpenBookSpec()
    slug = strategy.name.replace("+", "-plus-")  # names become folder names and name@version references
    build.dataset = f"{recipe.dataset_name}-{slug}"
    train = recipe.train.model_copy(deep=True)
    train.adapter = f"{train.adapter or recipe.name}-{slug}"
    if strategy.remedy is None:
        train.replay = None
    else:
        base = train.replay or ReplaySpec()
        train.replay = base.model_copy(update={"loss": "kl" if strategy.remedy == "kl" else "tokens"})
    return recipe.model_copy(update={"build": build, "train": train})


def result_row(strategy: str, dataset, result, report: EvalReport) -> dict:
    """One strategy's line: what the comparison table, `run` and the README show."""
    questions = report.get("questions") or {}
    tuned = questions.get("tuned", {})
    forgetting = report.get("forgetting") or {}
    return {
        "strategy": strategy,
        "dataset": f"{dataset.name}@{dataset.version}", "train_rows": dataset.n_train,
        "adapter": report.get("adapter"),
        "questions": tuned.get("accuracy"), "questions_base": questions.get("base", {}).get("accuracy"),
        "questions_by_kind": {k: [v["correct"], v["n"]] for k, v in tuned.get("by_kind", {}).items()},
        "held_out": report["after"]["metrics"].get("contains"),
        "kl": forgetting.get("kl"), "retention": forgetting.get("retention"),
        "steps": result.steps, "train_seconds": round(result.train_seconds, 1),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "precision": result.extra.get("precision"),
    }


@dataclass(frozen=True)
class RecipeRun:
    """What `tunewright run` did: the dataset version, the training run, its adapter, the evaluation,
    and where the time went (seconds per stage)."""

    dataset: object
    run: object
    adapter: object
    result: object
    report: EvalReport
    seconds: dict[str, float]


class RunProgress:
    """How a caller watches `run_recipe`: one context per stage, so a terminal can show one progress
    display at a time (two live displays on one console refuse each other). The default shows nothing."""

    def dataset(self, record) -> None:
        pass

    @contextmanager
    def training(self) -> Iterator[Callable | None]:
        yield None  # or a training-step callback

    @contextmanager
    def evaluating(self) -> Iterator[tuple[Callable | None, Callable | None]]:
        yield None, None  # or (on_phase, on_batch)


def run_recipe(workspace, progress: RunProgress | None = None) -> RecipeRun:
    """The whole recipe as it stands: build the dataset (or import the recipe's data sources), train,
    evaluate. `tunewright run` and every strategy of a comparison go through here."""
    from .data.api import import_files
    from .evaluate.api import checked_questions, evaluate
    from .synth.build import build_dataset
    from .train.api import train

    progress = progress or RunProgress()
    recipe = workspace.recipe
    clock = [time.perf_counter()]
    if recipe.build is not None:
        dataset = build_dataset(workspace)
    else:
        dataset = import_files(workspace, [s.path for s in recipe.data.sources])
    clock.append(time.perf_counter())
    progress.dataset(dataset)
    ref = f"{dataset.name}@{dataset.version}"
    checked_questions(workspace, ref)  # a leaked question fails now, before the training it would waste
    with progress.training() as on_step:
        run, adapter, result = train(workspace, dataset=ref, callbacks=[on_step] if on_step else ())
    clock.append(time.perf_counter())
    with progress.evaluating() as (on_phase, on_batch):
        report = evaluate(workspace, adapter=adapter.name, dataset=ref, on_batch=on_batch, on_phase=on_phase)
    clock.append(time.perf_counter())
    dataset_s, train_s, eval_s = (b - a for a, b in zip(clock, clock[1:]))
    return RecipeRun(dataset, run, adapter, result, report,
                     {"dataset": dataset_s, "train": train_s, "eval": eval_s, "total": clock[-1] - clock[0]})


def run_strategy(workspace, strategy: Strategy, progress: RunProgress | None = None) -> dict:
    original = workspace.recipe
    workspace.recipe = overlay(original, strategy)
    try:
        done = run_recipe(workspace, progress)
    finally:
        workspace.recipe = original
    return {**result_row(strategy.name, done.dataset, done.result, done.report),
            "total_seconds": round(done.seconds["total"], 1)}


def compare_strategies(workspace, names: Sequence[str] = DEFAULT_STRATEGIES, *,
                       on_start: Callable[[Strategy], None] | None = None,
                       on_row: Callable[[dict], None] | None = None, progress: RunProgress | None = None) -> dict:
    """Run each strategy in turn in this workspace; write reports/strategies.json and return it."""
    strategies = [get_strategy(name) for name in names]  # every name checked before anything trains
    if workspace.recipe.eval.questions is None:
        raise TunewrightError("comparing strategies needs eval.questions (independently written customer "
                              "questions): held-out phrasings alone reward recall of the templates",
                              field="eval.questions")
    rows = []
    for strategy in strategies:
        if on_start:
            on_start(strategy)
        rows.append(run_strategy(workspace, strategy, progress))
        if on_row:
            on_row(rows[-1])
    report = {"recipe": workspace.recipe.name, "strategies": rows,
              "recipe_strategy": strategy_of(workspace.recipe)}
    path = workspace.dir("reports") / "strategies.json"
    atomic_write_json(path, report)
    report["path"] = str(path)
    return report
