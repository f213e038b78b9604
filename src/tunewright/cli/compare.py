"""`tunewright compare`: train several PEFT methods on one budget, or several strategies on one recipe,
and print one table."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from .context import console, err_console, open_workspace

DEFAULT = "lora,dora,ia3,prefix-tuning,prompt-tuning,bottleneck"


def print_comparison(report: dict) -> None:
    from ..evaluate.metrics import get_metric

    budget = report["budget"]
    table = Table(title=f"{report['dataset']['name']}@{report['dataset']['version']}: {budget['steps']} steps × "
                        f"{budget['batch_size'] * budget['grad_accum']} rows per method")
    columns = ("method", f"{get_metric(report['metric']).label} base → tuned", "trainable", "train time", "tokens/s",
               "peak memory", "merged", "reload")
    for column in columns:
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in report["methods"]:
        if row["status"] != "ok":
            table.add_row(row["method"], f"[red]failed: {row['error']}[/]", *[""] * (len(columns) - 2))
            continue
        style = "green" if row["after"] > row["before"] else ("red" if row["after"] < row["before"] else "default")
        memory = f"{row['peak_rss_mb']:.0f} MB" + (" (+)" if row["peak_rss_scope"] == "increase" else "")
        table.add_row(
            row["method"], f"{row['before']:.1%} → [{style}]{row['after']:.1%}[/]", f"{row['trainable_share']:.3%}",
            f"{row['train_seconds']:.1f} s", f"{row['tokens_per_second']:.0f}", memory,
            "yes" if row["merged"] else "no", "[green]identical[/]" if row["reload_identical"] else "[red]DIFFERS[/]",
        )
    console.print(table)
    console.print(f"report: {report['paths']['html']}")


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def print_strategy_rows(rows: list[dict], title: str) -> None:
    """Strategies side by side: the headline numbers, then customer-question accuracy by kind
    (kinds down the side, so a 9-kind table stays readable in 80 columns)."""
    table = Table(title=title)
    for column in ("strategy", "questions", "held-out", "KL", "retention", "rows", "train"):
        table.add_column(column, justify="left" if column == "strategy" else "right", no_wrap=column == "strategy")
    for row in rows:
        kl = "-" if row["kl"] is None else f"{row['kl']:.3f}"
        table.add_row(row["strategy"], _pct(row["questions"]), _pct(row["held_out"]), kl, _pct(row["retention"]),
                      str(row["train_rows"]), f"{row['train_seconds']:.0f} s {row['precision'] or ''}".strip())
    console.print(table)
    kinds = list(dict.fromkeys(kind for row in rows for kind in row["questions_by_kind"]))
    if not kinds:
        return
    by_kind = Table(title="customer questions by kind (tuned)")
    by_kind.add_column("kind", no_wrap=True)
    for row in rows:
        by_kind.add_column(row["strategy"], justify="right")
    for kind in kinds:
        cells = []
        for row in rows:
            tally = row["questions_by_kind"].get(kind)
            cells.append(f"{tally[0]}/{tally[1]}" if tally else "-")
        by_kind.add_row(kind, *cells)
    console.print(by_kind)


def _compare_strategies(names: str) -> None:
    from ..strategies import DEFAULT_STRATEGIES, compare_strategies

    chosen = DEFAULT_STRATEGIES if names == "default" else [n.strip() for n in names.split(",") if n.strip()]
    workspace = open_workspace()

    def started(strategy) -> None:
        err_console.print(f"[bold]{strategy.name}[/bold]: {strategy.description}", highlight=False)

    def finished(row: dict) -> None:
        print_strategy_rows([row], f"{row['strategy']} ({row['adapter']})")

    # One line per strategy rather than progress bars: each strategy is a whole train + eval.
    report = compare_strategies(workspace, chosen, on_start=started, on_row=finished)
    print_strategy_rows(report["strategies"], f"strategies on {report['recipe']} (the recipe runs "
                                              f"{report['recipe_strategy']})")
    console.print(f"report: {report['path']}")


def compare_command(
    methods: str = typer.Option(DEFAULT, "--methods", help="Comma-separated PEFT methods to train and compare."),
    strategies: Optional[str] = typer.Option(
        None, "--strategies", help="Compare strategies instead of methods: 'default' (closed, closed-augmented, "
                                   "open-book, each without and with the KL remedy) or a comma-separated list "
                                   "(add +replay or +kl to a shape)."),
    dataset: Optional[str] = typer.Option(None, help="Dataset name[@version] (default: the recipe's)."),
    max_steps: Optional[int] = typer.Option(None, min=1, help="Steps per method (default: the recipe's budget)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Evaluate on the first N eval rows only."),
    in_process: bool = typer.Option(
        False, "--in-process", help="Train every method in this process (faster start; memory shows increases only)."),
) -> None:
    """Train several PEFT methods on the same data and token budget; compare accuracy, cost and reload.
    With --strategies: build, train and evaluate each strategy on the recipe's data instead."""
    if strategies is not None:
        _compare_strategies(strategies)
        return
    from ..train.compare import compare_methods

    names = [name.strip() for name in methods.split(",") if name.strip()]
    workspace = open_workspace()

    def started(name: str) -> None:
        err_console.print(f"training and evaluating [bold]{name}[/bold] …")

    def finished(row: dict) -> None:
        if row["status"] != "ok":
            err_console.print(f"  [red]{row['method']} failed:[/red] {row['error']}", highlight=False)

    report = compare_methods(workspace, methods=names, dataset=dataset, max_steps=max_steps, limit=limit,
                             isolated=not in_process, on_method=started, on_result=finished)
    print_comparison(report)
