"""Strategies side by side on an example recipe, in a fresh workspace, as a Markdown table.

The same comparison as `tunewright compare --strategies` (``tunewright.strategies``), run on an
example folder in a temporary workspace so the example is untouched, and printed in the README's
table layout. Strategies run one after another in this process, so their timings compare within
one run on one machine.

Usage: python benchmarks/strategies.py EXAMPLE_FOLDER [--only closed,open-book+kl] [--out results.json]
       [--workspace DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from tunewright.strategies import DEFAULT_STRATEGIES, compare_strategies, get_strategy
    from tunewright.workspace import Workspace, init_workspace

    parser = argparse.ArgumentParser()
    parser.add_argument("example", type=Path)
    parser.add_argument("--only", default=",".join(DEFAULT_STRATEGIES))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--workspace", type=Path, default=None, help="keep the workspace here (default: a temp dir)")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    for name in names:
        get_strategy(name)  # an unknown name fails before anything trains

    with tempfile.TemporaryDirectory() as tmp:
        root = args.workspace or Path(tmp) / "ws"
        if not (root / "tunewright.yaml").is_file():
            init_workspace(root, template=args.example)
        report = compare_strategies(Workspace.open(root), names,
                                    on_row=lambda row: print(json.dumps(row), flush=True))
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    print("\n| strategy | customer questions | held-out | KL | retention | train rows | train s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in report["strategies"]:
        kl = "-" if r["kl"] is None else f"{r['kl']:.3f}"
        print(f"| {r['strategy']} | {pct(r['questions'])} | {pct(r['held_out'])} | {kl} | {pct(r['retention'])} | "
              f"{r['train_rows']} | {r['train_seconds']} |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
