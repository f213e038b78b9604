"""`tunewright export`: merged safetensors, GGUF, Ollama Modelfile, vLLM command; `--check` proves parity."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .context import console, err_console, open_workspace


def export(
    model: str = typer.Argument(..., help="base, a registered adapter (name or name@version), or an adapter folder"),
    fmt: Optional[str] = typer.Option(None, "--format", "-f",
                                      help="comma-separated: merged, gguf, ollama, vllm (default: all; a "
                                           "vision-language model: merged)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="new folder (default: exports/<model>-<time>/)"),
    gguf_dtype: str = typer.Option("f32", "--gguf-dtype", help="f32 or f16"),
    check: bool = typer.Option(False, "--check", help="reload every export and compare greedy answers and logits "
                                                      "with the adapter on its base; register only if they match"),
    probes: int = typer.Option(8, "--probes", help="held-out questions the check asks"),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="answer length in the check"),
) -> None:
    """Export a model for other engines (llama.cpp/Ollama via GGUF, vLLM multi-LoRA, plain transformers)."""
    from ..export.workspace import export_for_workspace

    formats = None if fmt is None else [f.strip() for f in fmt.split(",") if f.strip()]
    result, record = export_for_workspace(open_workspace(), model, out_dir=out, formats=formats, gguf_dtype=gguf_dtype,
                                          check=check, probes=probes, max_new_tokens=max_new_tokens)
    table = Table("format", "written")
    for name, path in result.files.items():
        table.add_row(name, str(path))
    console.print(table)
    if result.vllm_command:
        console.print(f"vLLM: {result.vllm_command}")
    for note in result.notes:
        console.print(note)
    if result.check is not None:
        check_table = Table("export", "same greedy answers", "stops at end-of-turn", "largest logit difference")
        for name, entry in result.check.get("formats", {}).items():
            check_table.add_row(name, str(entry.get("texts_match")), str(entry.get("eos_agrees")),
                                f"{entry.get('max_logit_diff', float('nan')):.2e}")
        console.print(check_table)
    if record is None:
        err_console.print(f"[red]parity check failed[/red]: not registered; see {result.out_dir / 'check.json'}")
        raise typer.Exit(1)
    console.print(f"registered export {record.id} ({'checked' if result.check else 'not checked'}) in {result.seconds:.0f} s")
