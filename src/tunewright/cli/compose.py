"""`tunewright compose`: join a vision encoder folder and a causal LM into a LLaVA-style model folder."""

from __future__ import annotations

from pathlib import Path

import typer

from .context import console, err_console


def compose_command(
    vision: Path = typer.Option(..., "--vision", help="A local CLIP or SigLIP folder (whole, or its vision model)."),
    language: str = typer.Option(..., "--language", help="The causal LM: a local folder or a model name Tunewright knows."),
    out: Path = typer.Option(..., "--out", help="Where to write the joined model (a new folder)."),
) -> None:
    """Join a vision encoder and a language model with a new projector; train it with train.vision."""
    from ..models import prepare_base_model
    from ..models.compose import compose_llava

    if out.exists():
        raise typer.BadParameter(f"{out} exists; choose a new folder", param_hint="--out")
    language_folder = prepare_base_model(language).folder
    with err_console.status("joining the models …"):
        compose_llava(vision, language_folder, out)
    console.print(f"joined model written to {out}: set base_model to it and train.vision "
                  "{targets: [language], full: [connector]} in the recipe", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("compose")(compose_command)
