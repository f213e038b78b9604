"""Rich progress bars for training and generation."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .context import err_console


@contextmanager
def training_progress(description: str) -> Iterator:
    """Yield a callback for the training loop that draws loss, tokens/s and ETA."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(description, total=None, loss="-", tps="-")

        def on_step(info) -> None:
            progress.update(
                task, total=info.total_steps, completed=info.step, loss=f"{info.loss:.3f}", tps=f"{info.tokens_per_second:.0f}"
            )

        yield on_step


@contextmanager
def count_progress(description: str) -> Iterator:
    """Yield (on_phase, on_batch) callbacks for batched generation over one or more models."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err_console) as progress:
        current: dict = {}

        def on_phase(name: str, total: int) -> None:
            current["task"] = progress.add_task(f"{description} {name}", total=total)

        def on_batch(n: int) -> None:
            if "task" not in current:
                current["task"] = progress.add_task(description, total=None)
            progress.advance(current["task"], n)

        yield on_phase, on_batch
