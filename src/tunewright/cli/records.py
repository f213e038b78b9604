"""`tunewright registry ...`: read what the registry recorded."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from .context import console, open_workspace

app = typer.Typer(no_args_is_help=True)


@app.command("adapters")
def adapters() -> None:
    """Registered adapters with their weights hash and run."""
    table = Table("name", "version", "method", "run", "sha256", "path")
    for a in open_workspace().registry.list_adapters():
        table.add_row(a.name, str(a.version), a.method, str(a.run_id), a.weights_sha256[:12], a.path)
    console.print(table)


@app.command("runs")
def runs() -> None:
    """Training runs with status and final metrics."""
    table = Table("id", "name", "kind", "status", "seed", "final loss", "tokens/s", "started")
    for r in open_workspace().registry.list_runs():
        m = r.metrics or {}
        loss = f"{m['final_loss']:.3f}" if m.get("final_loss") is not None else "-"
        tps = f"{m['tokens_per_second']:.0f}" if m.get("tokens_per_second") else "-"
        table.add_row(str(r.id), r.name, r.kind, r.status, str(r.seed), loss, tps, str(r.started_at)[:19])
    console.print(table)


@app.command("events")
def events(limit: Optional[int] = typer.Option(20, help="Most recent N events.")) -> None:
    """The append-only event log, and whether its hash chain verifies."""
    registry = open_workspace().registry
    table = Table("id", "time", "actor")
    for column in ("action", "subject", "payload"):
        table.add_column(column, overflow="fold")
    for e in registry.events(limit=limit):
        table.add_row(str(e.id), str(e.ts)[:19], e.actor, e.action, f"{e.subject_kind}:{e.subject_id}", json.dumps(e.payload)[:80])
    console.print(table)
    ok, bad = registry.verify_events()
    console.print("hash chain verifies" if ok else f"[red]hash chain broken at event {bad}[/red]")
