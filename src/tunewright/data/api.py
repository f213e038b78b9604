"""The data stage as a user would call it: import files, register a version, read one back.

Building a dataset from the recipe's sources is ``synth.build`` (a generator, and retrieval for
open-book rows, both above this layer)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import NotFoundError
from .media import MediaFile
from .prepare import PreparedDataset, prepare_dataset, prepare_rows, read_split, write_dataset_version
from .schema import ChatRow, require_text_rows


def register_prepared(workspace, name: str, prepared: PreparedDataset, spec: dict, parents=()):
    """Write a prepared dataset version, register it, and scan it for PII (every version gets its report)."""
    from .pii_scan import scan_dataset

    folder = write_dataset_version(workspace.dir("datasets") / name, prepared, spec)
    record = workspace.registry.add_dataset(
        name=name,
        version=prepared.version,
        content_sha256=prepared.content_sha256,
        path=str(folder),
        n_train=len(prepared.train),
        n_eval=len(prepared.eval),
        n_duplicates=prepared.n_duplicates,
        source_files=prepared.source_files,
        spec=spec,
        parents=list(parents),
    )
    scan_dataset(workspace, record)  # every version gets its PII scan report
    return record


def register_once(workspace, name: str, prepared: PreparedDataset, spec: dict, parents=()) -> tuple[object, bool]:
    """A derived version (aligned, open-book) registered unless this very content already is: deriving
    again with nothing changed returns the version there, and False."""
    try:
        return workspace.registry.get_dataset(name, prepared.version), False
    except NotFoundError:
        return register_prepared(workspace, name, prepared, spec, parents), True


def register_rows(workspace, name: str, rows: list[ChatRow], *, spec: dict, source_files: list[dict] = (),
                  eval_fraction: float = 0.0, seed: int = 0, parents=(), media: dict[str, MediaFile] | None = None):
    """Register rows made inside the workspace (reviewed synthetic data) as a dataset version; part
    rows need ``media`` (``data.media.media_in_version`` of the version they came from)."""
    prepared = prepare_rows(rows, list(source_files), eval_fraction=eval_fraction, seed=seed, media=media)
    return register_prepared(workspace, name, prepared, spec, parents)


def import_files(
    workspace, paths: Sequence[str | Path], *, name: str | None = None, eval_fraction: float | None = None, seed: int | None = None
):
    """Validate every row of every file, then register one dataset version; any bad row registers nothing."""
    spec_data = workspace.recipe.data
    fraction = spec_data.eval_fraction if eval_fraction is None else eval_fraction
    seed = spec_data.seed if seed is None else seed
    # A path as typed on the command line wins; otherwise it is read relative to the workspace.
    resolved = [Path(p) if Path(p).exists() else workspace.path(p) for p in paths]
    prepared = prepare_dataset(resolved, eval_fraction=fraction, seed=seed, media_limits=spec_data.media)
    spec = {"kind": "import", "files": [str(p) for p in resolved], "eval_fraction": fraction, "seed": seed}
    return register_prepared(workspace, name or workspace.recipe.name, prepared, spec)


def get_dataset(workspace, ref: str | None):
    """The registered dataset ``name`` (latest version) or ``name@version``; default the recipe's."""
    name, _, version = (ref or workspace.recipe.dataset_name).partition("@")
    return workspace.registry.get_dataset(name, version or None)


def load_split(workspace, name: str | None, split: str, *, text_only: bool = True) -> tuple[object, list[ChatRow]]:
    """The registered dataset (latest version unless ``name`` is ``name@version``) and one split's rows.

    Training, evaluation, planning and the other stages that read text load through here, so a row
    with image or audio parts is refused here, naming it (``schema.require_text``); a stage that
    reads media (stats, alignment) asks with ``text_only=False``."""
    record = get_dataset(workspace, name)
    folder = Path(record.path)
    if not folder.is_dir():
        raise NotFoundError(f"dataset '{record.name}' is registered but its files are missing", file=folder)
    rows = read_split(folder, split)
    if text_only:
        require_text_rows(rows, folder / f"{split}.jsonl")
    return record, rows
