"""Several PEFT methods on one dataset and one token budget: accuracy, cost, and whether they reload.

Each method trains through the normal training API (so runs and adapters are registered like any
other), is evaluated base vs tuned through the evaluation API, and is then reloaded from its saved
files into a fresh base to check that the greedy answers match the model that was trained. By
default every method runs in its own fresh process so that its peak memory is its own.
"""

from __future__ import annotations

import base64
import datetime as dt
import multiprocessing
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

from ..config import Recipe, TrainSpec
from ..errors import TunewrightError
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..methods import METHODS, check_method
from ..methods.checks import LORA_OPTIONS

DEFAULT_METHODS = ("lora", "dora", "ia3", "prefix-tuning", "prompt-tuning", "bottleneck")
RELOAD_PROMPTS = 3
RELOAD_MAX_NEW_TOKENS = 16


def method_spec(spec: TrainSpec, method: str, max_steps: int | None = None) -> TrainSpec:
    """The recipe's training settings for ``method``: same data, batch, steps, seed and learning rate.

    Options of another method family are left out (a LoRA rank means nothing to prompt tuning and
    would be refused), and the recipe's ``method_settings`` belong to the recipe's own method only.
    """
    keep = set(spec.model_fields_set) - {"method", "method_settings", "adapter"}
    if not METHODS.get_class(method).uses_lora_options:
        keep -= set(LORA_OPTIONS)
    data = {name: getattr(spec, name) for name in keep}
    data.update(method=method, method_settings=spec.method_settings if method == spec.method else {})
    if max_steps is not None:
        data["max_steps"] = max_steps
    return TrainSpec.model_validate(data)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


@contextmanager
def _keep_trained_model(method_name: str):
    """Hand back the model the loop trains; the reload check compares the saved adapter against it.

    The loop keeps its model to itself, so the method class's ``wrap`` is wrapped for the duration.
    Its frozen weights stay fp32 meanwhile: stored in bf16 they would be rounded, and the check
    generates outside autocast. Training's arithmetic is the same either way (bit for bit,
    tests/test_precision.py); only the peak memory reported for the method is fp32 storage's.
    """
    from .precision import TrainingPrecision

    cls = METHODS.get_class(method_name)
    own, inherited = cls.__dict__.get("wrap"), cls.wrap
    store = TrainingPrecision.store_frozen_weights
    kept: list = []

    def wrap(self, model, spec):
        kept.append(wrapped := inherited(self, model, spec))
        return wrapped

    cls.wrap = wrap
    TrainingPrecision.store_frozen_weights = lambda self, model: 0
    try:
        yield kept
    finally:
        TrainingPrecision.store_frozen_weights = store
        if own is None:
            del cls.wrap
        else:
            cls.wrap = own


def _reload_check(trained, adapter_path: Path, base, rows) -> tuple[bool, bool]:
    """(greedy answers of the reloaded adapter equal the trained model's, whether it was merged)."""
    from ..models.generation import generate_responses
    from ..models import load_model, load_tokenizer
    from ..methods.attach import load_adapter

    tokenizer = load_tokenizer(base, padding_side="left")
    conversations = [row.prompt_messages for row in rows[:RELOAD_PROMPTS]]
    trained.eval()
    expected = generate_responses(trained, tokenizer, conversations, max_new_tokens=RELOAD_MAX_NEW_TOKENS)
    attached = load_adapter(load_model(base), adapter_path)
    got = generate_responses(attached.model, tokenizer, conversations, max_new_tokens=RELOAD_MAX_NEW_TOKENS)
    return expected == got, attached.merged


def run_method(root: str, recipe_json: dict, spec_json: dict, dataset: str, limit: int | None,
               isolated: bool) -> dict:
    """Train, evaluate and reload one method; a failure becomes the row's error, not an exception."""
    from ..workspace import Workspace
    from .api import train

    if isolated:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    spec = TrainSpec.model_validate(spec_json)
    recipe = Recipe.model_validate(recipe_json).model_copy(update={"train": spec})
    workspace = Workspace(Path(root), recipe)
    adapter = f"compare-{spec.method}"
    row: dict = {"method": spec.method, "adapter": adapter, "status": "failed", "error": None}
    try:
        peak_before = _peak_rss_mb()
        with _keep_trained_model(spec.method) as kept:
            run, record, result = train(workspace, adapter=adapter, dataset=dataset)
        peak = _peak_rss_mb()
        row.update(
            adapter_path=record.path, run_id=run.id, steps=result.steps, losses=result.losses,
            final_loss=result.losses[-1] if result.losses else None, tokens_seen=result.tokens_seen,
            train_seconds=result.train_seconds, tokens_per_second=result.tokens_per_second,
            trainable_params=result.extra.get("trainable_params"), total_params=result.extra.get("total_params"),
            trainable_share=result.extra.get("trainable_share"),
            # A fresh process's peak is the method's own; in a shared one only its increase is.
            peak_rss_mb=peak if isolated else max(peak - peak_before, 0.0),
            peak_rss_scope="process" if isolated else "increase",
        )
        from ..evaluate.api import evaluate

        report = evaluate(workspace, adapter=adapter, dataset=dataset, limit=limit)
        metric = recipe.eval.metrics[0]
        row.update(metric=metric, before=report["before"]["metrics"][metric], after=report["after"]["metrics"][metric],
                   eval_examples=report["n_examples"], report=report["paths"]["html"])
        from ..data.api import load_split

        _, eval_rows = load_split(workspace, dataset, recipe.eval.split)
        from ..models import prepare_base_model

        row["reload_identical"], row["merged"] = _reload_check(
            kept[-1], Path(record.path), prepare_base_model(recipe.base_model), eval_rows)
        row["status"] = "ok"
    except TunewrightError as exc:
        row["error"] = str(exc)
    except Exception as exc:  # one method's bug must not lose the others' results
        row["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if "registry" in workspace.__dict__:
            workspace.registry.close()
    return row


def compare_methods(
    workspace,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    dataset: str | None = None,
    max_steps: int | None = None,
    limit: int | None = None,
    isolated: bool = True,
    on_method: Callable[[str], None] | None = None,
    on_result: Callable[[dict], None] | None = None,
) -> dict:
    """Train and evaluate each method; write compare.json, compare.png and compare.html."""
    from ..data.api import load_split

    if not methods:
        raise TunewrightError("no methods to compare", field="--methods")
    if len(set(methods)) != len(methods):
        raise TunewrightError("a method is listed twice", field="--methods")
    recipe = workspace.recipe
    specs = {name: method_spec(recipe.train, name, max_steps) for name in methods}
    for spec in specs.values():
        check_method(spec)  # every method's options, before the first one trains for minutes
    record, _ = load_split(workspace, dataset or recipe.train.dataset, "train")
    dataset_ref = f"{record.name}@{record.version}"  # pinned: every method sees the same rows

    recipe_json = recipe.model_dump(mode="json")
    rows = []
    for name, spec in specs.items():
        if on_method:
            on_method(name)
        args = (str(workspace.root), recipe_json, spec.model_dump(mode="json", exclude_unset=True), dataset_ref, limit)
        started = time.perf_counter()
        if isolated:
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
                row = pool.submit(run_method, *args, True).result()
        else:
            row = run_method(*args, False)
        row["description"] = METHODS.get_class(name).description
        row["wall_seconds"] = time.perf_counter() - started
        rows.append(row)
        if on_result:
            on_result(row)

    first = next((r for r in rows if r["status"] == "ok"), {})
    report = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "base_model": recipe.base_model,
        "dataset": {"name": record.name, "version": record.version},
        "budget": {"steps": first.get("steps"), "batch_size": recipe.train.batch_size,
                   "grad_accum": recipe.train.grad_accum, "learning_rate": recipe.train.learning_rate,
                   "seed": recipe.train.seed},
        "metric": recipe.eval.metrics[0],
        "split": recipe.eval.split,
        "isolated": isolated,
        "methods": rows,
    }
    report["paths"] = write_compare_report(workspace.dir("reports") / "compare", report)
    return report


def _chart(report: dict, label: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")  # headless: no display on a server
    import matplotlib.pyplot as plt

    rows = [r for r in report["methods"] if r["status"] == "ok"]
    names = [r["method"] for r in rows]
    xs = range(len(names))
    fig, (acc, speed) = plt.subplots(1, 2, figsize=(10, 3.4))
    acc.bar([x - 0.2 for x in xs], [r["before"] * 100 for r in rows], 0.4, label="base", color="#adb5bd")
    acc.bar([x + 0.2 for x in xs], [r["after"] * 100 for r in rows], 0.4, label="tuned", color="#2a9d8f")
    acc.set_ylabel(f"% {label}")
    acc.set_ylim(0, 100)
    acc.legend()
    speed.bar(list(xs), [r["tokens_per_second"] for r in rows], 0.6, color="#2a6f97")
    speed.set_ylabel("training tokens/s")
    for ax in (acc, speed):
        ax.set_xticks(list(xs), names, rotation=30, ha="right")
        ax.grid(axis="y", alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def write_compare_report(folder: Path, report: dict) -> dict:
    from ..evaluate.metrics import get_metric
    from ..evaluate.report import render_template

    paths = {"json": folder / "compare.json", "png": folder / "compare.png", "html": folder / "compare.html"}
    label = get_metric(report["metric"]).label
    png = _chart(report, label)
    atomic_write_bytes(paths["png"], png)
    html = render_template("compare.html", report=report, chart=base64.b64encode(png).decode("ascii"), label=label)
    atomic_write_text(paths["html"], html)
    paths = {key: str(path) for key, path in paths.items()}
    atomic_write_json(paths["json"], {**report, "paths": paths})
    return paths
