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
    left_out = (record.spec or {}).get("questions_left_out")
    if left_out:
        lines = sorted({r["question_line"] for r in left_out["rows"]})
        console.print(f"left out {len(left_out['rows'])} training row(s) that ask {left_out['questions']} "
                      f"line(s) {', '.join(map(str, lines))}: evaluation questions are never trained on")


def print_media(record) -> None:
    from ..data.media import media_in_version

    media = media_in_version(record.path)
    if media:
        kinds = [m.modality for m in media.values()]
        images, audio = kinds.count("image"), kinds.count("audio")
        console.print(f"media stored: {images} image{'s' * (images != 1)}, {audio} audio file{'s' * (audio != 1)} "
                      f"(in {record.path}/media)")


@app.command("import")
def import_(
    files: List[Path] = typer.Argument(..., help="JSONL, CSV or Parquet files (chat rows may hold image and "
                                             "audio parts; relative media paths are read from the file's folder)."),
    name: Optional[str] = typer.Option(None, help="Dataset name (default: the recipe's name)."),
    eval_fraction: Optional[float] = typer.Option(None, help="Share of rows held out (default: recipe data.eval_fraction)."),
    seed: Optional[int] = typer.Option(None, help="Split seed (default: recipe data.seed)."),
) -> None:
    """Validate and import files as one new dataset version."""
    from ..data.api import import_files

    record = import_files(open_workspace(), files, name=name, eval_fraction=eval_fraction, seed=seed)
    print_dataset(record)
    print_media(record)


@app.command("build")
def build() -> None:
    """Build question/answer rows from the recipe's tables and documents."""
    from ..synth.build import build_dataset

    print_dataset(build_dataset(open_workspace()))


@app.command("align")
def align(
    dataset: Optional[str] = typer.Argument(None, help="Dataset name[@version] with image or audio parts "
                                                       "(default: the recipe's)."),
    name: Optional[str] = typer.Option(None, help="Name of the aligned dataset (default: <dataset>-aligned)."),
) -> None:
    """Turn image and audio parts into their text (OCR, transcription; layout aligned-v1) and register
    the rows as a new text dataset version, its parent the media version. Results are cached under
    cache/align/, where reviewers' corrections win over the engines."""
    from ..align.dataset import align_dataset
    from .progress import count_progress

    def on_media(done: int, total: int) -> None:
        if done == 0:
            on_phase("media files", total)
        else:
            on_batch(1)

    with count_progress("aligning") as (on_phase, on_batch):
        result = align_dataset(open_workspace(), dataset, name=name, on_media=on_media)
    source, media = result.source, ", ".join(f"{n} {kind} file{'s' * (n != 1)}" for kind, n in result.media.items())
    console.print(f"aligned {source.name}@{source.version}: {media} ({result.corrected} corrected by reviewers)")
    print_dataset(result.record)
    if not result.created:
        console.print("nothing changed: this aligned version was already registered")


@app.command("open-book")
def open_book(
    dataset: Optional[str] = typer.Argument(None, help="Dataset name[@version] of text rows, imported or aligned "
                                                       "(default: the recipe's)."),
    name: Optional[str] = typer.Option(None, help="Name of the new dataset (default: <dataset>-open-book)."),
) -> None:
    """Put the top retrieval.k records of the workspace's index (retrieval.sources) in every row's
    prompt and register the rows as a new version: an adapter trained on it answers open-book, and
    eval, generate and serve retrieve for it the same way."""
    from ..synth.build import open_book_dataset

    result = open_book_dataset(open_workspace(), dataset, name=name)
    index = result.record.spec["open_book"]["index"]
    console.print(f"records from index {index} in the rows of {result.source.name}@{result.source.version}")
    print_dataset(result.record)
    if not result.created:
        console.print("nothing changed: this open-book version was already registered")


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
    """Rows, token lengths with the base model's tokenizer, and a length histogram; for rows with
    images or audio, parts per modality, image sizes and audio durations."""
    from ..data.api import load_split
    from ..data.media import media_in_version
    from ..data.stats import dataset_stats, media_stats, render_media_stats, render_stats
    from ..models import load_tokenizer, prepare_base_model

    workspace = open_workspace()
    record, rows = load_split(workspace, dataset, split, text_only=False)
    console.print(f"dataset {record.name}@{record.version}, {split} split")
    text_rows = [row for row in rows if not row.has_media]
    if len(text_rows) < len(rows):
        render_media_stats(media_stats(rows, media_in_version(record.path)), console)
    if not text_rows:
        console.print("every row has image or audio parts: token lengths are measured once they are aligned to text")
        return
    title = "Dataset" if len(text_rows) == len(rows) else f"Text rows ({len(text_rows):,} of {len(rows):,})"
    tokenizer = load_tokenizer(prepare_base_model(workspace.recipe.base_model))
    render_stats(dataset_stats(text_rows, tokenizer), console, title)
