"""`tunewright index ...`: build the workspace's retrieval index and search it."""

from __future__ import annotations

from typing import Optional

import typer

from .context import console, err_console, open_workspace

app = typer.Typer(no_args_is_help=True)


@app.command("build")
def build(name: Optional[str] = typer.Option(None, help="Index name (default: recipe retrieval.name or <name>-index).")) -> None:
    """Chunk the recipe's tables and documents, embed them, register the index."""
    from ..synth.build import build_recipe_index

    record = build_recipe_index(open_workspace(), name)
    sources = ", ".join(f"{s['path']} ({s['chunks']})" for s in record.source_files)
    console.print(f"index {record.name}@{record.version}: {record.n_chunks} chunks from {sources}",
                  highlight=False, markup=False)


@app.command("search")
def search(
    query: str = typer.Argument(..., help="The question or words to look up."),
    k: Optional[int] = typer.Option(None, "-k", help="How many chunks (default: recipe retrieval.k)."),
    index: Optional[str] = typer.Option(None, "--index", help="Index name[@version] (default: the recipe's)."),
) -> None:
    """The top chunks by reciprocal-rank fusion of BM25 and dense retrieval, with both ranks."""
    from ..retrieval.api import load_workspace_index, stale_sources

    workspace = open_workspace()
    found = load_workspace_index(workspace, index)
    changed = stale_sources(workspace, found)
    if changed:
        err_console.print(f"[yellow]warning:[/yellow] {', '.join(changed)} changed since index {found.version} was "
                          "built; run 'tunewright index build'", highlight=False)
    # One line per hit, never wrapped inside: the chunk id and text stay greppable and copyable.
    console.print(f"{'rank':>4}  {'score':>6}  {'bm25':>4}  {'dense':>5}  chunk  text", highlight=False)
    for rank, hit in enumerate(found.search(query, workspace.recipe.retrieval.k if k is None else k), start=1):
        console.print(f"{rank:>4}  {hit.score:.4f}  {hit.bm25_rank or '-':>4}  {hit.dense_rank or '-':>5}  "
                      f"{hit.chunk.id}  {hit.chunk.text}", highlight=False, soft_wrap=True, markup=False)
