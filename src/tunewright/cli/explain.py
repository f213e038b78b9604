"""`tunewright explain`: which parts of a prompt the base and the tuned model based their answers on."""

from __future__ import annotations

from typing import Optional

import typer
from rich.markup import escape

from .context import console, err_console, open_workspace


def explain_command(
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user message to explain the answers to."),
    adapter: Optional[str] = typer.Option(None, help="Adapter name or folder (default: recipe train.adapter)."),
    method: str = typer.Option("ablation", help="ablation (segment removal, fast) | gradient (integrated gradients)."),
    max_new_tokens: int = typer.Option(48, min=1, help="Longest answer to generate and explain, in tokens."),
    system: Optional[str] = typer.Option(None, help="System prompt (default: the chat template's own, if any)."),
    steps: int = typer.Option(8, min=2, help="Integrated-gradients steps (gradient only); each costs one pass per answer token."),
    top: int = typer.Option(3, min=1, help="Print this many segments per model."),
) -> None:
    """Explain base vs tuned answers: attribute each answer to the prompt's segments; write an HTML heatmap."""
    from ..govern.explain import check_method, explain

    check_method(method)  # a typo fails before any model is loaded
    workspace = open_workspace()
    with err_console.status(f"explaining with {method} …"):
        report = explain(workspace, prompt, adapter, method=method, max_new_tokens=max_new_tokens, system=system,
                         n_steps=steps)
    for model in report["models"] + ([report["cross"]] if report["cross"] else []):
        console.print(f"[bold]{escape(model['title'])}[/bold] ({model['seconds']:.1f} s)", highlight=False)
        if model["key"] != "cross":
            console.print(f"  answer: {escape(model['answer']) or '(empty)'}", highlight=False, soft_wrap=True)
        ranked = sorted(zip(report["segments"], model["seq_attr"]), key=lambda pair: -abs(pair[1]))[:top]
        for segment, value in ranked:
            style = "blue" if value >= 0 else "red"
            console.print(f"  [{style}]{value:+8.3f}[/]  {escape(segment['label'])}", highlight=False)
        if model["completeness_gap"] is not None:
            console.print(f"  attributions sum to {model['logprob_change'] + model['completeness_gap']:.2f}; "
                          f"log p changed by {model['logprob_change']:.2f} from the baseline prompt", highlight=False)
    console.print(escape(report["changes"]["note"]), highlight=False, soft_wrap=True)
    seconds = report["seconds"]
    console.print(f"{seconds['total']:.1f} s in all ({seconds['load']:.1f} s loading the models)")
    console.print(f"report: {escape(report['paths']['html'])}", soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_command)
