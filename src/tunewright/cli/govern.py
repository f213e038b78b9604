"""Governance commands: audit verify/anchor, lineage, history, sign-off, PII scans."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.tree import Tree

from .context import console, err_console, open_workspace

govern_app = typer.Typer(no_args_is_help=True, help="Bias tests, data and PII scans.")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log: verify it, anchor its head.")


@audit_app.command("verify")
def audit_verify(
    anchor: Optional[Path] = typer.Option(None, help="An anchor file from 'audit anchor': the log up to it must be intact."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Recompute every event's hash and link; name each edited, inserted, deleted or reordered event."""
    from ..govern.audit import read_anchor, verify_workspace

    anchor_data = read_anchor(anchor) if anchor is not None else None
    result = verify_workspace(open_workspace(), anchor_data)
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
    elif result.ok:
        head = f"head event {result.head_id} {str(result.head_hash)[:16]}" if result.head_id else "empty log"
        console.print(f"audit log intact: {result.n_events} events, {head}"
                      + (" (matches the anchor)" if result.anchor_checked else ""))
    else:
        err_console.print(f"[red]audit log damaged[/red]: {len(result.damage)} problem(s) in {result.n_events} events")
        for damage in result.damage:
            err_console.print(f"  {damage.line()}", highlight=False)
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("anchor")
def audit_anchor(output: Path = typer.Option(Path("audit-anchor.json"), "--output", "-o",
                                             help="Where to write it; keep a copy outside this machine.")) -> None:
    """Write the verified head of the log (event id and hash) to a file."""
    from ..govern.audit import write_anchor

    anchor = write_anchor(open_workspace().registry, output)
    console.print(f"anchored event {anchor['event_id']} ({anchor['hash'][:16]}, {anchor['n_events']} events) in {output}")


def _brief(details: dict) -> str:
    keys = ("sha256", "content_sha256", "weights_sha256", "teacher_model", "decisions", "reviewers", "n_train",
            "n_eval", "seed", "method", "peft_type", "split", "n_examples", "kind", "person", "signed_on", "actor", "reason",
            "formats", "subject")
    parts = []
    for key in keys:
        value = details.get(key)
        if value in (None, {}, []):
            continue
        if isinstance(value, str) and len(value) == 64:
            value = value[:12]
        parts.append(f"{key}={value}")
    return ", ".join(parts)


def lineage(
    adapter: str = typer.Argument(..., help="Adapter name or name@version."),
    as_json: bool = typer.Option(False, "--json", help="Print nodes and edges as JSON."),
) -> None:
    """Where an adapter came from and where it went: files, rounds, reviews, data, run, evaluations, deployments."""
    from ..govern.lineage import build_lineage

    graph = build_lineage(open_workspace().registry, adapter)
    if as_json:
        console.print_json(json.dumps({"nodes": [{"kind": n.kind, "id": n.id, "label": n.label, "details": n.details}
                                                 for n in graph.nodes],
                                       "edges": [list(e) for e in graph.edges]}, default=str))
        return
    tree = Tree(f"[bold]{graph.adapter.name} v{graph.adapter.version}[/bold] lineage")
    for stage, nodes in graph.by_stage().items():
        branch = tree.add(f"[cyan]{stage.replace('_', ' ')}[/cyan]")
        for node in nodes:
            branch.add(f"{node.label}  [dim]{_brief(node.details)}[/dim]")
        if stage == "run":
            run = graph.run
            versions = ", ".join(f"{k} {v}" for k, v in (run.library_versions or {}).items())
            branch.add(f"[dim]code and libraries: {versions}[/dim]")
            branch.add(f"[dim]hardware: {json.dumps(run.hardware)}[/dim]")
    console.print(tree)


def history(
    adapter: Optional[str] = typer.Argument(None, help="Adapter name or name@version: its periods in each alias."),
    at: Optional[str] = typer.Option(None, "--at", help="A date (YYYY-MM-DD, end of that day UTC) or time: what served then."),
    alias: str = typer.Option("production", help="The alias --at asks about."),
) -> None:
    """Which adapter served production (or staging) when, who moved it, and why."""
    from ..govern.history import adapter_periods, changes_between, parse_moment, serving_at
    from ..registry.deploy import check_alias

    if adapter is None and at is None:
        raise typer.BadParameter("give an ADAPTER, --at DATE, or both")
    registry = open_workspace().registry
    if at is not None:
        check_alias(alias)
        moment, whole_day = parse_moment(at)
        state = serving_at(registry, alias, moment)
        served = "nothing" if state is None or state.adapter is None else \
            f"{state.adapter.name}@{state.adapter.version}" + (
                f" with {state.split_percent}% to {state.split_adapter.name}@{state.split_adapter.version}"
                if state.split_adapter else "")
        since = f" (since change {state.change_id}: {state.action} by {state.actor} at {state.created_at:%Y-%m-%d %H:%M} UTC)" \
            if state else ""
        console.print(f"{alias} on {at}{' (end of day, UTC)' if whole_day else ''}: {served}{since}")
        if whole_day:
            start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
            for change in changes_between(registry, alias, start, moment):
                target = change.adapter.name + f"@{change.adapter.version}" if change.adapter else "nothing"
                console.print(f"  that day: {change.created_at:%H:%M} {change.action} -> {target} by {change.actor}")
    if adapter is not None:
        table = Table("alias", "role", "from", "by", "why", "until", "by ")
        for period in adapter_periods(registry, adapter):
            end = period.end
            table.add_row(period.alias, period.role, f"{period.start.created_at:%Y-%m-%d %H:%M}", period.start.actor,
                          period.start.reason or "-", f"{end.created_at:%Y-%m-%d %H:%M}" if end else "now",
                          end.actor if end else "-")
        console.print(table)


def signoff(
    subject: str = typer.Argument(..., help="evaluation or report"),
    subject_id: int = typer.Argument(..., help="Its id (see 'tunewright lineage ADAPTER')."),
    person: str = typer.Option(..., "--by", help="The responsible person signing."),
    statement: str = typer.Option(..., help="What they checked and approve."),
    role: Optional[str] = typer.Option(None, help="Their role, e.g. 'QA lead'."),
    date: Optional[str] = typer.Option(None, help="Date of signature (YYYY-MM-DD; default today, UTC)."),
) -> None:
    """Sign off an evaluation or report: a named, dated approval recorded in the audit chain."""
    from ..registry.reports import ReportStore

    signed_on = date or dt.datetime.now(dt.timezone.utc).date().isoformat()
    record = ReportStore(open_workspace().registry).sign_off(subject, subject_id, person=person, role=role,
                                                             signed_on=signed_on, statement=statement)
    console.print(f"{subject} {subject_id} signed off by {record.person} on {record.signed_on} "
                  f"(sign-off {record.id}, content {record.subject_sha256[:12]})")


@govern_app.command("pii")
def pii_scan(dataset: Optional[str] = typer.Option(None, help="Dataset name[@version] (default: the recipe's).")) -> None:
    """Scan a dataset version for personal data; findings the recipe does not allow block training."""
    from ..data.api import get_dataset
    from ..data.pii_scan import scan_dataset

    workspace = open_workspace()
    record = get_dataset(workspace, dataset)
    report = scan_dataset(workspace, record)
    summary = report.summary
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(summary["by_kind"].items())) or "none"
    console.print(f"{record.name}@{record.version}: {summary['n_rows']} rows, {summary['n_findings']} findings "
                  f"({kinds}), {summary['n_allowed']} allowed by the recipe, {summary['n_unresolved']} unresolved "
                  f"-> {summary['status']}\nreport {report.id}: {report.path}")


def register(app: typer.Typer) -> None:
    from . import bias as bias_cli

    bias_cli.register(govern_app)
    app.add_typer(govern_app, name="govern")
    app.add_typer(audit_app, name="audit")
    app.command("lineage")(lineage)
    app.command("history")(history)
    app.command("signoff")(signoff)
