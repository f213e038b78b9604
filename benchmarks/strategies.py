"""Strategies side by side on one recipe: closed-book, closed-book augmented, open-book, each with
and without replay against forgetting.

For each strategy the recipe is overlaid (builder features on or off, open-book on or off, replay on
or off), a dataset is built and an adapter trained under the strategy's own name in one workspace,
and `tunewright eval` measures it: the customer questions by kind, the held-out phrasings, KL and
retention. Training time is the run's own. Runs one strategy after another in this process, so the
timings compare within one run on one machine.

Usage: python benchmarks/strategies.py EXAMPLE_FOLDER [--only open-book+replay,closed-augmented]
       [--epochs N] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# name -> (builder augmentations, open book, replay)
STRATEGIES = {
    "closed": (False, False, False),
    "closed+replay": (False, False, True),
    "closed-augmented": (True, False, False),
    "closed-augmented+replay": (True, False, True),
    "open-book": (True, True, False),
    "open-book+replay": (True, True, True),
}


def overlay(recipe, name: str, epochs: float | None):
    augmented, open_book, replay = STRATEGIES[name]
    build = recipe.build.model_copy(deep=True)
    if not augmented:
        for table in build.tables:
            table.records, table.groups = [], None
        build.absent = None
    if not open_book:
        build.open_book = None
    elif build.open_book is None:
        from tunewright.config import OpenBookSpec

        build.open_book = OpenBookSpec()
    slug = name.replace("+", "-plus-")  # names become folder names and name@version references
    build.dataset = f"{recipe.dataset_name}-{slug}"
    train = recipe.train.model_copy(deep=True)
    train.adapter = f"{recipe.name}-{slug}"
    if not replay:
        train.replay = None
    elif train.replay is None:
        from tunewright.config import ReplaySpec

        train.replay = ReplaySpec()
    if epochs is not None:
        train.epochs = epochs
    return recipe.model_copy(update={"build": build, "train": train})


def run_one(root: Path, name: str, epochs: float | None) -> dict:
    from tunewright.data.api import build_dataset
    from tunewright.evaluate.api import evaluate
    from tunewright.train.api import train
    from tunewright.workspace import Workspace

    workspace = Workspace.open(root)
    workspace.recipe = overlay(workspace.recipe, name, epochs)
    started = time.perf_counter()
    dataset = build_dataset(workspace)
    _, adapter, result = train(workspace, dataset=f"{dataset.name}@{dataset.version}")
    report = evaluate(workspace, adapter=f"{adapter.name}@{adapter.version}",
                      dataset=f"{dataset.name}@{dataset.version}")
    questions = report.get("questions") or {}
    forgetting = report.get("forgetting") or {}
    return {
        "strategy": name, "train_rows": dataset.n_train, "steps": result.steps,
        "train_seconds": round(result.train_seconds, 1), "tokens_per_second": round(result.tokens_per_second, 1),
        "questions": questions.get("tuned", {}).get("accuracy"),
        "questions_base": questions.get("base", {}).get("accuracy"),
        "by_kind": {k: f"{v['correct']}/{v['n']}" for k, v in questions.get("tuned", {}).get("by_kind", {}).items()},
        "held_out_contains": report["after"]["metrics"].get("contains"),
        "kl": forgetting.get("kl"),
        "retention": forgetting.get("retention"),
        "total_seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("example", type=Path)
    parser.add_argument("--only", default=",".join(STRATEGIES))
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--workspace", type=Path, default=None, help="keep the workspace here (default: a temp dir)")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(STRATEGIES))
    if unknown:
        sys.exit(f"unknown strategies: {', '.join(unknown)} (known: {', '.join(STRATEGIES)})")

    from tunewright.workspace import init_workspace

    with tempfile.TemporaryDirectory() as tmp:
        root = args.workspace or Path(tmp) / "ws"
        if not (root / "tunewright.yaml").is_file():
            init_workspace(root, template=args.example)
        rows = []
        for name in names:
            rows.append(run_one(root, name, args.epochs))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n| strategy | customer questions | held-out | KL | retention | train rows | train s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        kl = "-" if r["kl"] is None else f"{r['kl']:.3f}"
        print(f"| {r['strategy']} | {pct(r['questions'])} | {pct(r['held_out_contains'])} | {kl} | "
              f"{pct(r['retention'])} | {r['train_rows']} | {r['train_seconds']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
