"""Shared CLI state: the workspace folder chosen by --workspace or TUNEWRIGHT_WORKSPACE."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
_state: dict[str, Path | None] = {"workspace": None}


def set_workspace(path: Path | None) -> None:
    _state["workspace"] = path


def workspace_dir() -> Path:
    return _state["workspace"] or Path(".")


def open_workspace():
    from ..workspace import Workspace

    return Workspace.open(workspace_dir())
