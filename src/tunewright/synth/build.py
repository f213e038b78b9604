"""Build the recipe's dataset from its sources (tables and documents): grounded question/answer
rows, and for an open-book recipe the retrieved records in each prompt; registered as a version."""

from __future__ import annotations

from pathlib import Path

from ..data.api import register_prepared
from ..data.prepare import prepare_rows
from ..errors import TunewrightError
from ..io import sha256_file
from ..retrieval.api import build_workspace_index, load_workspace_index
from ..retrieval.chunks import Chunk
from ..retrieval.context import open_book_rows
from .grounded import build_rows, read_table
from .grounded_groups import group_summaries

SUMMARIES_FIELD = "retrieval.group_summaries"


def build_dataset(workspace):
    """Run the recipe's generator over its sources and register the result as a dataset version."""
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
    return register_prepared(workspace, workspace.recipe.dataset_name, prepared, spec, parents)


def _open_book(workspace, rows):
    """The rows with retrieved records, and what the dataset (then the adapter) must remember: the
    index version and k it was built with."""
    record = build_recipe_index(workspace)
    ref = f"{record.name}@{record.version}"
    index = load_workspace_index(workspace, ref)
    settings = workspace.recipe.build.open_book
    k = workspace.recipe.retrieval.k
    rows = open_book_rows(rows, index, k=k, oracle_rate=settings.oracle_rate, seed=settings.seed,
                          shuffle=settings.shuffle)
    spec = {"index": ref, "index_sha256": index.sha256, "k": k, "oracle_rate": settings.oracle_rate,
            "shuffle": settings.shuffle}
    return rows, spec, record.id


def build_recipe_index(workspace, name: str | None = None, *, embedder=None):
    """The workspace's index (``retrieval.api.build_workspace_index``), with one summary passage per
    table group when the recipe sets ``retrieval.group_summaries``: those come from the build
    section's group patterns, which the retrieval layer does not read, so `index build` and the
    dataset build both come here."""
    derived = None
    if workspace.recipe.retrieval.group_summaries:
        derived = {workspace.recipe_path.name: summary_chunks(workspace)}
    return build_workspace_index(workspace, name, embedder=embedder, derived=derived)


def summary_chunks(workspace) -> list[Chunk]:
    build = workspace.recipe.build
    chunks = []
    for t_index, table in enumerate(build.tables if build is not None else []):
        if table.groups is None:
            continue
        path = workspace.path(table.path)
        header, records = read_table(path)
        field = f"build.tables.{t_index}.groups"
        for group, text in group_summaries(table.groups, records, header, field, path.name).items():
            # A chunk id names a place in its file; a summary has none, so its group stands in.
            chunks.append(Chunk(f"{path.name}:{table.groups.by}={group}", text,
                                {"file": path.name, "group": group, "derived": "group summary"}))
    if not chunks:
        raise TunewrightError("is set, but no build table has 'groups' to summarise", file=workspace.recipe_path,
                              field=SUMMARIES_FIELD)
    return chunks
