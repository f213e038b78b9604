"""`tunewright govern bias` and `tunewright govern scan`: whom the model, and the data, treat differently."""

from __future__ import annotations

from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .context import console, open_workspace

SHOW_GAPS = 10


def _gap(gap: dict) -> str:
    if gap["gap"] is None:
        return "n/a"
    return f"{gap['gap'] * 100:.1f} [{gap['ci'][0] * 100:.1f}, {gap['ci'][1] * 100:.1f}]"


def bias_command(
    adapter: Optional[str] = typer.Option(None, help="Adapter name[@version] or folder (default: recipe train.adapter)."),
    max_prompts: Optional[int] = typer.Option(None, min=1, help="Cap the counterfactual prompts (recipe: govern.bias.max_prompts)."),
) -> None:
    """Counterfactual bias test: swap group terms in prompts and compare base and tuned answers by group."""
    from ..govern.bias import run_bias_test
    from .progress import count_progress

    workspace = open_workspace()
    with count_progress("answering") as (on_phase, on_batch):
        report = run_bias_test(workspace, adapter, max_prompts=max_prompts, on_phase=on_phase, on_batch=on_batch)
    s = report["summary"]
    table = Table(title=f"{report['adapter']}: largest gaps between groups (points, 95% CI)")
    for column in ("attribute", "measure", "base", "tuned", "tuned groups"):
        table.add_column(column, justify="right" if column in ("base", "tuned") else "left")
    for g in [g for g in report["gaps"] if g["rate"]][:SHOW_GAPS]:
        worse = (g["tuned"]["gap"] or 0) > (g["base"]["gap"] or 0) + 0.005
        table.add_row(g["attribute"], g["metric"].replace("_", " "), _gap(g["base"]),
                      f"[{'red' if worse else 'default'}]{_gap(g['tuned'])}[/]", " vs ".join(g["tuned"]["groups"]))
    console.print(table)
    console.print(f"largest gap: {s['max_gap'] * 100:.1f} points ({s['max_gap_metric'].replace('_', ' ')}, "
                  f"{s['attribute']}: {' vs '.join(s['groups'])}); base model {s['base_max_gap'] * 100:.1f} · "
                  f"{s['n_prompts']} prompts, {report['seconds']['total']:.0f} s", highlight=False)
    for issue in s["issues"]:
        seen = " [dim](base model too)[/dim]" if issue.get("in_base") else ""
        console.print(f"[red]issue[/red] {escape(issue['message'])}{seen}", highlight=False)
    if not s["issues"]:
        console.print("[green]no issues[/green] in the tuned model")
    console.print(f"report: {escape(report['paths']['html'])}", soft_wrap=True, highlight=False)


def scan_command(
    dataset: Optional[str] = typer.Option(None, help="Dataset name[@version] (default: every registered version)."),
) -> None:
    """Group mentions in dataset rows, and acceptance by group in review decisions; flags skew."""
    from ..govern.datascan import run_data_scan

    reports = run_data_scan(open_workspace(), dataset)
    if not reports:
        console.print("nothing to scan: no datasets and no review queues registered")
    for report in reports:
        title = f"{report['dataset']}@{report['version']}" if report["dataset"] else f"review queue {report['queue']}"
        table = Table(title=f"{title}: {report['n_rows']} rows", title_justify="left")
        review = report["queue"] is not None
        for column in ("attribute", "group", "rows", "share") + (("accepted", "rejected") if review else ()):
            table.add_column(column, justify="left" if column in ("attribute", "group") else "right")
        for name, entry in report["attributes"].items():
            decided = sum(r["accepted"] + r["rejected"] for r in entry["review"]["groups"].values()) if review else 0
            if not entry["data"]["mentions"] and not decided:
                table.add_row(name, "[dim](no group mentioned)[/dim]", "0", "", *(("", "") if review else ()))
                continue
            for i, (group, g) in enumerate(entry["data"]["groups"].items()):
                cells = [name if i == 0 else "", group, str(g["rows"]), f"{g['share']:.0%}"]
                if review:
                    r = entry["review"]["groups"][group]
                    cells += [str(r["accepted"]), str(r["rejected"])]
                table.add_row(*cells)
        console.print(table)
        for issue in report["issues"]:
            console.print(f"[red]skew[/red] {escape(issue['message'])}", highlight=False)
        if not report["issues"]:
            console.print("[green]no skew found[/green]")
        console.print(f"report: {escape(report['paths']['html'])}", soft_wrap=True, highlight=False)


def register(govern_app: typer.Typer) -> None:
    govern_app.command("bias")(bias_command)
    govern_app.command("scan")(scan_command)
