"""The data stage as a user would call it: import files or build from sources, register a version."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import NotFoundError, TunewrightError
from ..io import sha256_file
from .prepare import PreparedDataset, prepare_dataset, prepare_rows, read_split, write_dataset_version
from .schema import ChatRow


def _register(workspace, name: str, prepared: PreparedDataset, spec: dict, parents=()):
    from ..govern.pii import scan_dataset

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


def register_rows(workspace, name: str, rows: list[ChatRow], *, spec: dict, source_files: list[dict] = (),
                  eval_fraction: float = 0.0, seed: int = 0, parents=()):
    """Register rows made inside the workspace (reviewed synthetic data) as a dataset version."""
    prepared = prepare_rows(rows, list(source_files), eval_fraction=eval_fraction, seed=seed)
    return _register(workspace, name, prepared, spec, parents)


def import_files(
    workspace, paths: Sequence[str | Path], *, name: str | None = None, eval_fraction: float | None = None, seed: int | None = None
):
    """Validate every row of every file, then register one dataset version; any bad row registers nothing."""
    spec_data = workspace.recipe.data
    fraction = spec_data.eval_fraction if eval_fraction is None else eval_fraction
    seed = spec_data.seed if seed is None else seed
    # A path as typed on the command line wins; otherwise it is read relative to the workspace.
    resolved = [Path(p) if Path(p).exists() else workspace.path(p) for p in paths]
    prepared = prepare_dataset(resolved, eval_fraction=fraction, seed=seed)
    spec = {"kind": "import", "files": [str(p) for p in resolved], "eval_fraction": fraction, "seed": seed}
    return _register(workspace, name or workspace.recipe.name, prepared, spec)


def build_dataset(workspace):
    """Run the recipe's generator over its sources and register the result as a dataset version."""
    from ..synth.grounded import build_rows

    build = workspace.recipe.build
    if build is None:
        raise TunewrightError("the recipe has no 'build' section", file=workspace.recipe_path, field="build")
    generated = build_rows(build, workspace.path)
    rows = [g.row.model_copy(update={"meta": {**g.row.meta, "split": g.split}}) for g in generated]
    files = sorted({s for g in generated for s in g.sources})
    source_files = [
        {"path": Path(f).name, "sha256": sha256_file(f), "rows": sum(1 for g in generated if f in g.sources)} for f in files
    ]
    spec = {"kind": "build", "generator": build.generator, "build": build.model_dump(mode="json")}
    parents = []
    if build.open_book is not None:
        rows, spec["open_book"], index_id = _open_book(workspace, rows)
        parents.append(("index", index_id, "context_for"))
    prepared = prepare_rows(rows, source_files, eval_fraction=0.0, seed=build.seed)
    return _register(workspace, workspace.recipe.dataset_name, prepared, spec, parents)


def _open_book(workspace, rows):
    """The rows with retrieved records, and what the dataset (then the adapter) must remember: the
    index version and k it was built with."""
    from ..retrieval.api import build_workspace_index, load_workspace_index
    from ..retrieval.context import open_book_rows

    record = build_workspace_index(workspace)
    ref = f"{record.name}@{record.version}"
    index = load_workspace_index(workspace, ref)
    settings = workspace.recipe.build.open_book
    k = workspace.recipe.retrieval.k
    rows = open_book_rows(rows, index, k=k, oracle_rate=settings.oracle_rate, seed=settings.seed)
    return rows, {"index": ref, "index_sha256": index.sha256, "k": k, "oracle_rate": settings.oracle_rate}, record.id


def get_dataset(workspace, ref: str | None):
    """The registered dataset ``name`` (latest version) or ``name@version``; default the recipe's."""
    name, _, version = (ref or workspace.recipe.dataset_name).partition("@")
    return workspace.registry.get_dataset(name, version or None)


def load_split(workspace, name: str | None, split: str) -> tuple[object, list[ChatRow]]:
    """The registered dataset (latest version unless ``name`` is ``name@version``) and one split's rows."""
    record = get_dataset(workspace, name)
    folder = Path(record.path)
    if not folder.is_dir():
        raise NotFoundError(f"dataset '{record.name}' is registered but its files are missing", file=folder)
    return record, read_split(folder, split)
