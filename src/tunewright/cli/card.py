"""`tunewright card ADAPTER`: model card, datasheet and Annex IV technical documentation from the registry."""

from __future__ import annotations

import typer
from rich.table import Table

from .context import console, open_workspace


def card(
    adapter: str = typer.Argument(..., help="adapter name or name@version"),
    fmt: str = typer.Option("md,html,pdf", "--format", "-f", help="comma-separated: md, html, pdf (Markdown is "
                                                                  "always written: it is the registered document)"),
    no_pdf: bool = typer.Option(False, "--no-pdf", help="skip the PDF (the slowest part)"),
) -> None:
    """Write an adapter's model card, its dataset's datasheet and its technical documentation (AI Act Annex IV).

    Every figure links to the registry record it comes from; what the registry and the recipe's
    govern.documentation section do not say is printed, and listed in each document, as a gap to fill."""
    from ..govern.card import generate_docs, parse_formats

    formats = [f for f in parse_formats(fmt) if not (no_pdf and f == "pdf")] or ["md"]
    result = generate_docs(open_workspace(), adapter, formats=formats)
    table = Table("document", "files", "gaps", "registered as")
    for doc in result.documents:
        table.add_row(doc.kind.replace("_", " "), ", ".join(p.name for p in doc.paths.values()), str(len(doc.gaps)),
                      f"report {doc.report.id}")
    console.print(f"written to {result.folder}", highlight=False, soft_wrap=True)
    console.print(table)
    gaps = result.gaps
    console.print(f"{result.adapter.name} v{result.adapter.version}: {len(gaps)} gap(s) to fill"
                  + (":" if gaps else "."), highlight=False)
    for gap in gaps:
        console.print(f"  - {gap}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("card")(card)
