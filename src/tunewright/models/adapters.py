"""Resolve a model reference (``base``, a registered adapter, an adapter folder) and read an
adapter's config. Attaching the weights needs the method's knowledge: ``methods.attach``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from ..errors import NotFoundError, TunewrightError
from ..io import recover_dir
from .loading import BaseModelInfo, prepare_base_model

BASE_REF = "base"
T = TypeVar("T")


ADAPTER_CONFIG = "adapter_config.json"


def read_adapter_config(folder: Path) -> dict:
    """The adapter folder's ``adapter_config.json``: the one reader, so every command refuses a
    missing or damaged one with the same line."""
    recover_dir(folder)  # a replacement cut short by a crash leaves the previous folder beside it
    config_file = Path(folder) / ADAPTER_CONFIG
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["peft_type"]
    except FileNotFoundError:
        raise TunewrightError(f"not a PEFT adapter folder (no {ADAPTER_CONFIG})", file=folder) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TunewrightError(f"unreadable {ADAPTER_CONFIG}: {exc}", file=config_file) from None
    if not isinstance(config, dict):
        raise TunewrightError(f"unreadable {ADAPTER_CONFIG}: not a JSON object", file=config_file)
    return config


def read_sidecar(adapter_dir: Path | None, name: str, *, what: str, build: Callable[[dict], T], layout: str) -> T | None:
    """A file Tunewright writes beside an adapter's weights saying how the adapter must be asked
    (``alignment.json``, ``tunewright_retrieval.json``), built into its config; None when the adapter
    has none. A damaged file, or a prompt layout this version does not render, is refused naming it:
    asking in another layout than the one trained would quietly give worse answers."""
    path = None if adapter_dir is None else Path(adapter_dir) / name
    if path is None or not path.is_file():
        return None
    try:
        config = build(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # UnicodeDecodeError and JSON errors are ValueErrors
        raise TunewrightError(f"cannot read the adapter's {what}: {exc}", file=path) from None
    if config.layout != layout:
        raise TunewrightError(f"layout '{config.layout}' is not one this version renders ({layout})",
                              file=path, field="layout")
    return config


def is_adapter_folder(folder: Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


@dataclass(frozen=True)
class ResolvedRef:
    ref: str
    base: BaseModelInfo
    adapter_path: Path | None
    adapter_id: int | None = None


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "~", "/")) or "/" in ref or "\\" in ref


def _adapter_folder(ref: str, base_model: str, vision: bool = False) -> ResolvedRef:
    folder = Path(ref).expanduser()
    read_adapter_config(folder)  # refuses a folder without one, or with a damaged one
    return ResolvedRef(ref=ref, base=prepare_base_model(base_model, vision=vision), adapter_path=folder.resolve())


WEIGHTS_FILE = "adapter_model.safetensors"


def checked_adapter_folder(record, base: BaseModelInfo) -> Path:
    """A registered adapter's folder, once it holds what the registry recorded: the base weights it
    was trained on (``base`` is the base about to carry it) and its own weights, byte for byte.

    Every load of a registered adapter passes here (eval, generate, serve, export, governance), so a
    folder swapped or edited behind the registry's back is refused instead of served."""
    from ..io import sha256_file

    name = f"{record.name}@{record.version}"
    if record.base_model_sha256 and base.sha256 != record.base_model_sha256:
        raise TunewrightError(
            f"adapter '{name}' was trained on base weights {record.base_model_sha256[:12]}, "
            f"but '{base.ref}' has {base.sha256[:12]}"
        )
    path = Path(record.path)
    if not is_adapter_folder(path):
        raise NotFoundError(f"adapter '{name}' is registered but its files are missing", file=path)
    weights = path / WEIGHTS_FILE
    if record.weights_sha256:
        actual = sha256_file(weights) if weights.is_file() else None
        if actual != record.weights_sha256:
            raise TunewrightError(
                f"adapter '{name}': {WEIGHTS_FILE} is not the file registered (sha256 "
                f"{(actual or 'missing')[:12]}, registered {record.weights_sha256[:12]}); refusing to load it",
                file=weights)
    return path


def resolve_ref(ref: str, *, base_model: str, registry=None, vision: bool = False) -> ResolvedRef:
    """``base``; a folder written as a path (``./x``, ``runs/x``, ``/abs/x``); else a registered
    adapter, ``name`` (its latest version) or ``name@version``. ``vision``: the base is a
    vision-language model (``prepare_base_model``).

    A bare name means the registered adapter even when a folder of that name sits in the current
    directory (a workspace's source folder is often named like its adapter); only when no adapter of
    that name is registered is a bare name read as an adapter folder.
    """
    if ref == BASE_REF:
        return ResolvedRef(ref=ref, base=prepare_base_model(base_model, vision=vision), adapter_path=None)
    if _looks_like_path(ref):
        return _adapter_folder(ref, base_model, vision)
    from ..registry.deploy import split_adapter_ref

    try:
        if registry is None:
            raise NotFoundError(f"model '{ref}' is neither 'base' nor an adapter folder")
        record = registry.get_adapter(*split_adapter_ref(ref))
    except NotFoundError as exc:
        if not Path(ref).is_dir():
            raise
        if is_adapter_folder(Path(ref)):
            return _adapter_folder(ref, base_model, vision)
        raise NotFoundError(f"{exc}; the folder ./{ref} is no PEFT adapter folder (no adapter_config.json): "
                            f"a bare name means a registered adapter, write an adapter folder as a path "
                            f"(./{ref}/...)") from None
    base = prepare_base_model(record.base_model_ref, vision=vision)
    path = checked_adapter_folder(record, base)
    return ResolvedRef(ref=ref, base=base, adapter_path=path, adapter_id=record.id)
