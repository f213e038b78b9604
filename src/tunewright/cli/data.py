"""`tunewright data ...`: import, build, list and inspect datasets."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .context import console, open_workspace

app = typer.Typer(no_args_is_help=True)


def print_dataset(record) -> None:
    console.print(
        f"dataset [bold]{record.name}[/bold]@{record.version}: {record.n_train} train, {record.n_eval} eval, "
        f"{record.n_duplicates} exact duplicates removed"
    )


@app.command("import")
def import_(
    files: List[Path] = typer.Argument(..., help="JSONL, CSV or Parquet files."),
    name: Optional[str] = typer.Option(None, help="Dataset name (default: the recipe's name)."),
    eval_fraction: Optional[float] = typer.Option(None, help="Share of rows held out (default: recipe data.eval_fraction)."),
    seed: Optional[int] = typer.Option(None, help="Split seed (default: recipe data.seed)."),
) -> None:
    """Validate and import files as one new dataset version."""
    from ..data.api import import_files

    print_dataset(import_files(open_workspace(), files, name=name, eval_fraction=eval_fraction, seed=seed))


@app.command("build")
def build() -> None:
    """Build question/answer rows from the recipe's tables and documents."""
    from ..synth.build import build_dataset

    print_dataset(build_dataset(open_workspace()))


@app.command("list")
def list_() -> None:
    """Registered dataset versions."""
    table = Table("name", "version", "train", "eval", "duplicates", "created")
    for record in open_workspace().registry.list_datasets():
        table.add_row(record.name, record.version, str(record.n_train), str(record.n_eval), str(record.n_duplicates), str(record.created_at)[:19])
    console.print(table)


@app.command("stats")
def stats(
    dataset: Optional[str] = typer.Option(None, help="Dataset name[@version] (default: the recipe's)."),
    split: str = typer.Option("train", help="train or eval."),
) -> None:
    """Rows, token lengths with the base model's tokenizer, and a length histogram."""
    from ..data.api import load_split
    from ..data.stats import dataset_stats, render_stats
    from ..models import load_tokenizer, prepare_base_model

    workspace = open_workspace()
    record, rows = load_split(workspace, dataset, split)
    tokenizer = load_tokenizer(prepare_base_model(workspace.recipe.base_model))
    console.print(f"dataset {record.name}@{record.version}, {split} split")
    render_stats(dataset_stats(rows, tokenizer), console)
