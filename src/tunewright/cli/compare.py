"""`tunewright compare`: train several PEFT methods on one budget and print one table."""

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


def compare_command(
    methods: str = typer.Option(DEFAULT, "--methods", help="Comma-separated PEFT methods to train and compare."),
    dataset: Optional[str] = typer.Option(None, help="Dataset name[@version] (default: the recipe's)."),
    max_steps: Optional[int] = typer.Option(None, min=1, help="Steps per method (default: the recipe's budget)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Evaluate on the first N eval rows only."),
    in_process: bool = typer.Option(
        False, "--in-process", help="Train every method in this process (faster start; memory shows increases only)."),
) -> None:
    """Train several PEFT methods on the same data and token budget; compare accuracy, cost and reload."""
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
