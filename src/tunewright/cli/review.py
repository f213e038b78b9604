"""`tunewright review ...`: reviewers, the web UI, agreement, corrections, import/export, datasets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ..errors import TunewrightError
from .context import console, open_workspace

app = typer.Typer(no_args_is_help=True)


def _queue(workspace, queue: str | None) -> str:
    return queue or workspace.recipe.dataset_name


def _password(password_env: str | None) -> str:
    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise TunewrightError(f"environment variable {password_env} is not set", field="password_env")
        return password
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8765, help="Port."),
    queue: Optional[str] = typer.Option(None, help="Queue to open first."),
) -> None:
    """Serve the review web UI."""
    from ..review.serve import serve_review

    serve_review(open_workspace(), host=host, port=port, queue=queue)


@app.command("add-reviewer")
def add_reviewer(
    name: str = typer.Argument(..., help="Log-in name."),
    password_env: Optional[str] = typer.Option(None, help="Read the password from this environment variable."),
) -> None:
    """Create a reviewer account (password asked for, or read from --password-env)."""
    from ..review.reviewers import add_reviewer as add

    add(open_workspace().registry, name, _password(password_env))
    console.print(f"reviewer [bold]{name}[/bold] added")


@app.command("remove-reviewer")
def remove_reviewer(name: str = typer.Argument(..., help="Log-in name.")) -> None:
    """Delete a reviewer account and end its web sessions at once; their decisions stay recorded."""
    from ..review.reviewers import remove_reviewer as remove

    remove(open_workspace().registry, name)
    console.print(f"reviewer [bold]{name}[/bold] removed; their sessions have ended")


@app.command("revoke-sessions")
def revoke_sessions(name: str = typer.Argument(..., help="Log-in name.")) -> None:
    """Log a reviewer out of the web UI everywhere; their password still works for a new log-in."""
    from ..review.reviewers import revoke_sessions as revoke

    revoke(open_workspace().registry, name)
    console.print(f"sessions of reviewer [bold]{name}[/bold] ended")


@app.command("set-password")
def set_password(
    name: str = typer.Argument(..., help="Log-in name."),
    password_env: Optional[str] = typer.Option(None, help="Read the password from this environment variable."),
) -> None:
    """Give a reviewer a new password (asked for, or read from --password-env); their sessions end."""
    from ..review.reviewers import set_password as set_

    set_(open_workspace().registry, name, _password(password_env))
    console.print(f"password of reviewer [bold]{name}[/bold] changed; their sessions have ended")


@app.command("assign")
def assign(
    reviewers: List[str] = typer.Argument(..., help="Reviewer names."),
    per_item: Optional[int] = typer.Option(None, help="Reviewers per item (default: synth.review.reviewers_per_item)."),
    queue: Optional[str] = typer.Option(None),
) -> None:
    """Assign undecided items to reviewers, blind to each other, spreading the load evenly."""
    from ..review.reviewers import reviewer_names
    from ..review.store import ReviewStore

    workspace = open_workspace()
    known = set(reviewer_names(workspace.registry))
    unknown = [r for r in reviewers if r not in known]
    if unknown:
        raise TunewrightError(f"unknown reviewer '{unknown[0]}' (known: {', '.join(sorted(known)) or 'none'})")
    spec = workspace.recipe.synth
    n = per_item or (spec.review.reviewers_per_item if spec else 1)
    made = ReviewStore(workspace.registry).assign(_queue(workspace, queue), reviewers, n)
    console.print("assigned: " + (", ".join(f"{k} {v}" for k, v in made.items()) or "nothing new"))


@app.command("stats")
def stats(queue: Optional[str] = typer.Option(None)) -> None:
    """Progress, inter-reviewer agreement (Cohen's or Fleiss' kappa) and per-reviewer statistics."""
    from ..review.agreement import agreement_report
    from ..review.store import ReviewStore

    workspace = open_workspace()
    store = ReviewStore(workspace.registry)
    name = _queue(workspace, queue)
    progress = store.progress(name)
    console.print(f"queue {name}: " + ", ".join(f"{k} {v}" for k, v in progress.items()))
    report = agreement_report(store.reviews(name))
    kappa = "n/a" if report.kappa is None else f"{report.kappa:.3f}"
    console.print(f"agreement: {report.statistic or 'n/a'} kappa = {kappa} over {report.n_items} items")

    def fmt(value, pattern="{:.2f}"):
        return "-" if value is None else pattern.format(value)

    table = Table("reviewer", "decisions", "accept rate", "median s/item", "mean rating", "agrees with majority",
                  "edits")
    for r in report.reviewers:
        table.add_row(r.reviewer, str(r.decisions), fmt(r.accept_rate, "{:.0%}"), fmt(r.median_seconds, "{:.1f}"),
                      fmt(r.mean_rating), fmt(r.majority_agreement, "{:.0%}"), str(r.edits))
    console.print(table)


@app.command("correct")
def correct(
    item: int = typer.Argument(..., help="The item whose edit should be applied to similar rows."),
    apply: bool = typer.Option(False, "--apply", help="Apply the previewed changes (default: preview only)."),
    min_similarity: float = typer.Option(0.6, help="Cosine similarity a row needs to count as similar."),
    k: int = typer.Option(20, help="Nearest neighbours to consider."),
    reviewer: str = typer.Option(..., envvar="TUNEWRIGHT_ACTOR", help="Who applies the correction."),
) -> None:
    """Preview (and with --apply, make) one correction on every similar pending row."""
    from ..models.embeddings import default_embedder
    from ..review.corrections import apply_correction, preview_correction
    from ..review.store import ReviewStore

    store = ReviewStore(open_workspace().registry)
    preview = preview_correction(store, item, embedder=default_embedder(), k=k, min_similarity=min_similarity)
    table = Table("item", "similarity", "before", "after")
    for row in preview:
        table.add_row(str(row.candidate_id), f"{row.similarity:.2f}", row.before, row.after)
    console.print(table)
    if apply and preview:
        console.print(f"applied to {apply_correction(store, item, preview, reviewer=reviewer)} rows (still pending review)")
    elif not preview:
        console.print("no similar pending row contains the corrected text")


@app.command("export")
def export(
    path: Path = typer.Argument(..., help="Output file."),
    format: str = typer.Option("jsonl", "--format", help="label-studio, argilla, jsonl or parquet."),
    status: Optional[str] = typer.Option(None, help="Only items with this status."),
    queue: Optional[str] = typer.Option(None),
) -> None:
    """Export the queue with its review decisions."""
    from ..review.interop import export_candidates
    from ..review.store import QueueFilter, ReviewStore

    workspace = open_workspace()
    store = ReviewStore(workspace.registry)
    name = _queue(workspace, queue)
    candidates = store.candidates(name, QueueFilter(status=status))
    export_candidates(candidates, store.reviews(name), path, format)
    console.print(f"wrote {len(candidates)} items to {path}")


@app.command("import")
def import_(
    path: Path = typer.Argument(..., help="A Label Studio export, Argilla records, chat JSONL or Parquet file."),
    format: str = typer.Option("jsonl", "--format", help="label-studio, argilla, jsonl or parquet."),
    queue: Optional[str] = typer.Option(None),
) -> None:
    """Import items (and any decisions they carry) into the review queue."""
    from ..review.importing import import_into_queue

    workspace = open_workspace()
    added, decisions = import_into_queue(workspace, path, format, queue=_queue(workspace, queue))
    console.print(f"imported {added} new items and {decisions} review decisions")


@app.command("dataset")
def dataset(
    queue: Optional[str] = typer.Option(None),
    name: Optional[str] = typer.Option(None, help="Dataset name (default: the queue name)."),
) -> None:
    """Register a dataset version from the accepted rows, recording the decisions it holds."""
    from ..review.dataset import build_reviewed_dataset
    from .data import print_dataset

    print_dataset(build_reviewed_dataset(open_workspace(), queue, name=name))
