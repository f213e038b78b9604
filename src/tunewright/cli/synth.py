"""`tunewright synth ...`: run a generation round and see whether the review loop is working."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from .context import console, open_workspace

app = typer.Typer(no_args_is_help=True)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def print_rounds(summaries, target: int | None = None) -> None:
    table = Table("round", "rows", "flagged", "accepted", "rejected", "open", "accept %", "calls", "cached", "tokens",
                  "USD", "failed", title="rounds (accept % = accepted / decided)")
    for s in summaries:
        u = s.usage or {}
        table.add_row(str(s.number), str(s.n_candidates), str(s.n_flagged), str(s.n_accepted), str(s.n_rejected),
                      str(s.n_undecided), _rate(s.acceptance_rate), str(u.get("calls", 0)), str(u.get("cached_calls", 0)),
                      str(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)), f"{u.get('cost_usd', 0.0):.2f}",
                      str(s.n_failures))
    console.print(table)
    if target:
        accepted = sum(s.n_accepted for s in summaries)
        console.print(f"accepted so far: {accepted} of the spec's target {target} rows")


@app.command("run")
def run(
    rows: Optional[int] = typer.Option(None, help="Rows to generate this round (default: synth.rows_per_round)."),
    queue: Optional[str] = typer.Option(None, help="Review queue (default: the recipe's dataset name)."),
    new_round: bool = typer.Option(False, "--new-round", help="Start a new round even if the last one has failed calls."),
) -> None:
    """Generate one round with the teacher, filter it, and queue it for review."""
    from ..synth.rounds import run_round

    workspace = open_workspace()
    result = run_round(workspace, rows=rows, queue=queue, new_round=new_round)
    verb = "resumed" if result.resumed else "ran"
    console.print(f"{verb} round {result.round.number}: {result.n_generated} rows generated, "
                  f"{result.n_added} new in the queue")
    if result.filter_counts:
        console.print("flagged per filter: " + ", ".join(f"{k} {v}" for k, v in result.filter_counts.items()))
    for failure in result.failures[:10]:
        console.print(f"[yellow]{failure['generator']}: {failure['kind']}: {failure['message']}[/yellow]")
    if len(result.failures) > 10:
        console.print(f"[yellow]... and {len(result.failures) - 10} more failures[/yellow]")
    if result.round.status == "incomplete":
        console.print("[yellow]some teacher calls failed; run again to retry only those (paid calls are cached), "
                      "or --new-round to move on[/yellow]")
    print_rounds(result.summaries, workspace.recipe.synth.target)


@app.command("rounds")
def rounds(queue: Optional[str] = typer.Option(None, help="Review queue (default: the recipe's dataset name).")) -> None:
    """Per-round counts, acceptance rate and teacher usage."""
    from ..review.store import ReviewStore

    workspace = open_workspace()
    target = workspace.recipe.synth.target if workspace.recipe.synth else None
    print_rounds(ReviewStore(workspace.registry).round_summaries(queue or workspace.recipe.dataset_name), target)
