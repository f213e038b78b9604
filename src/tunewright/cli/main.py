"""The `tunewright` command: a thin layer over the Python API, one sub-app per stage."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import TunewrightError
from . import card as card_cli
from . import compose as compose_cli
from . import data as data_cli
from . import explain as explain_cli
from . import export as export_cli
from . import govern as govern_cli
from . import index as index_cli
from . import records as records_cli
from . import review as review_cli
from . import plan as plan_cli
from . import serving as serving_cli
from . import synth as synth_cli
from . import stages
from .compare import compare_command
from .context import err_console, set_workspace

app = typer.Typer(
    name="tunewright",
    help="Turn a generic open LLM into a measured domain specialist, on your own hardware.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_cli.app, name="data", help="Import, build, inspect datasets.")
app.add_typer(records_cli.app, name="registry", help="What the registry knows: datasets, runs, adapters, events.")
app.add_typer(synth_cli.app, name="synth", help="Generate synthetic rows with a teacher LLM, round by round.")
app.add_typer(review_cli.app, name="review", help="Review generated rows: web UI, reviewers, agreement, exports.")
app.add_typer(index_cli.app, name="index", help="Retrieval index over the recipe's sources: build, search.")
stages.register(app)
app.command("plan")(plan_cli.plan)
app.command("compare")(compare_command)
app.command("serve")(serving_cli.serve)
app.command("drift")(serving_cli.drift)
app.command("export")(export_cli.export)
records_cli.app.add_typer(serving_cli.alias_app, name="alias")
govern_cli.register(app)
card_cli.register(app)
compose_cli.register(app)
explain_cli.register(app)


@app.callback()
def _global(
    workspace: Optional[Path] = typer.Option(
        None, "--workspace", "-w", envvar="TUNEWRIGHT_WORKSPACE", help="Workspace folder (default: current folder)."
    ),
) -> None:
    set_workspace(workspace)


def _log_to_console() -> None:
    import logging

    from rich.logging import RichHandler

    import warnings

    from ..retrieval.context import StaleIndexWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        # Our own warnings are for the user: one plain line, without Python's file and line.
        if issubclass(category, StaleIndexWarning):
            err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)
        else:
            shown(message, category, filename, lineno, file, line)

    if not getattr(shown, "tunewright", False):
        show.tunewright = True
        warnings.showwarning = show
    logger = logging.getLogger("tunewright")
    if not logger.handlers:
        logger.addHandler(RichHandler(console=err_console, show_time=False, show_path=False, show_level=False))
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our Rich bars are the progress display; one per task is enough
    _log_to_console()
    try:
        # Outside standalone mode click hands back typer.Exit's code instead of exiting with it.
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except TunewrightError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted; 'tunewright train --resume' continues from the last checkpoint")
        sys.exit(130)
    except Exception as exc:  # the command line parser's own usage errors
        import typer

        # Typer 0.29 carries its own copy of click: its usage errors are not click.ClickException
        # (an unknown option printed a traceback), so they are recognised by typer's public bases.
        if isinstance(exc, typer.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, typer.TyperException) and callable(getattr(exc, "show", None)):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, typer.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
