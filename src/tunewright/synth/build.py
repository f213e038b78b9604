"""Build the recipe's dataset from its sources (tables and documents): grounded question/answer
rows, and for an open-book recipe the retrieved records in each prompt; registered as a version.
Rows from elsewhere (imported, aligned) get their records here too (``open_book_dataset``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.api import get_dataset, register_once, register_prepared
from ..data.prepare import SPLITS, prepare_rows, read_split
from ..errors import TunewrightError
from ..io import sha256_file
from ..retrieval.api import build_workspace_index, load_workspace_index
from ..retrieval.chunks import Chunk
from ..retrieval.context import open_book_row, open_book_rows
from .grounded import build_rows, read_table
from .grounded_groups import group_summaries

SUMMARIES_FIELD = "retrieval.group_summaries"
OPEN_BOOK_SUFFIX = "-open-book"


def build_dataset(workspace):
    """Run the recipe's generator over its sources and register the result as a dataset version."""
    build = workspace.recipe.build
    if build is None:
        raise TunewrightError("the recipe has no 'build' section", file=workspace.recipe_path, field="build")
    generated, left_out = _without_questions(workspace, build_rows(build, workspace.path))
    rows = [g.row.model_copy(update={"meta": {**g.row.meta, "split": g.split}}) for g in generated]
    files = sorted({s for g in generated for s in g.sources})
    source_files = [
        {"path": Path(f).name, "sha256": sha256_file(f), "rows": sum(1 for g in generated if f in g.sources)} for f in files
    ]
    spec = {"kind": "build", "generator": build.generator, "build": build.model_dump(mode="json")}
    if left_out is not None:
        spec["questions_left_out"] = left_out
    parents = []
    if build.open_book is not None:
        rows, spec["open_book"], index_id = _open_book(workspace, rows)
        parents.append(("index", index_id, "context_for"))
    prepared = prepare_rows(rows, source_files, eval_fraction=0.0, seed=build.seed)
    return register_prepared(workspace, workspace.recipe.dataset_name, prepared, spec, parents)


def _without_questions(workspace, generated):
    """The built rows less the training rows that ask one of the recipe's customer questions
    (``eval.questions``), and what was left out (None when nothing was).

    A template can write, word for word, a question a customer also typed ("which fixed wireless
    plans do you have"); the leak check would then refuse the whole file at evaluation. Leaving
    those few rows out keeps the questions unseen, as decontamination does for public benchmarks;
    the file only ever removes rows, and the dataset's spec names it and every row removed. A file
    given later with ``eval --questions`` is still refused on a leak: the build never saw it."""
    from ..evaluate.questions import leaks, questions_for

    found = questions_for(workspace)
    if found is None:
        return generated, None
    train = [g for g in generated if g.split == "train"]
    hits = leaks(found, [g.row for g in train])
    if not hits:
        return generated, None
    dropped = {id(train[number - 1]) for number, _, _ in hits}
    left_out = {"questions": found.name, "sha256": found.sha256,
                "rows": [{"question_line": q.line, "row": text} for _, text, q in hits]}
    return [g for g in generated if id(g) not in dropped], left_out


def _open_book(workspace, rows):
    """The rows with retrieved records, and what the dataset (then the adapter) must remember: the
    index version and k it was built with."""
    record, index = _recipe_index(workspace)
    settings = workspace.recipe.build.open_book
    k = workspace.recipe.retrieval.k
    rows = open_book_rows(rows, index, k=k, oracle_rate=settings.oracle_rate, seed=settings.seed,
                          shuffle=settings.shuffle)
    spec = {"index": f"{record.name}@{record.version}", "index_sha256": index.sha256, "k": k,
            "oracle_rate": settings.oracle_rate, "shuffle": settings.shuffle}
    return rows, spec, record.id


def _recipe_index(workspace):
    record = build_recipe_index(workspace)
    return record, load_workspace_index(workspace, f"{record.name}@{record.version}")


@dataclass(frozen=True)
class OpenBookDataset:
    record: Any  # the registry's DatasetRecord of the new version
    source: Any  # the version its rows came from
    created: bool  # False: this exact version was registered before


def open_book_dataset(workspace, ref: str | None = None, *, name: str | None = None) -> OpenBookDataset:
    """Dataset ``ref`` (imported or aligned rows; default the recipe's) with the top ``retrieval.k``
    records of the workspace's index in every prompt, registered as ``name`` (default
    ``<dataset>-open-book``). An adapter trained on it is open-book: every command retrieves for it.

    Unlike built rows, imported rows do not say which record holds their answer, so there is no RAFT
    placement: each row keeps what retrieval returns for its last user message (for aligned rows,
    the OCR or transcript text), and the model learns to read the record when retrieval finds it.
    The new version's spec keeps its source's spec under ``parent``, so an aligned source still
    tells the adapter how to read image and audio parts."""
    source = get_dataset(workspace, ref)
    label = f"{source.name}@{source.version}"
    if (source.spec or {}).get("open_book"):
        raise TunewrightError(f"dataset '{label}' already carries records (index "
                              f"{source.spec['open_book']['index']}); open-book rows are made once")
    folder = Path(source.path)
    splits = {split: read_split(folder, split) for split in SPLITS}
    for split, split_rows in splits.items():
        for number, row in enumerate(split_rows, start=1):
            if row.has_media:
                raise TunewrightError("has image or audio parts, which retrieval cannot search: align the dataset "
                                      "first (tunewright data align)", file=folder / f"{split}.jsonl", line=number,
                                      field="messages")
    record, index = _recipe_index(workspace)
    k = workspace.recipe.retrieval.k
    rows = [open_book_row(row.model_copy(update={"meta": {**row.meta, "split": split}}), index, k=k, rng=None,
                          oracle_rate=0.0)
            for split, split_rows in splits.items() for row in split_rows]
    spec = {"kind": "open-book",
            "open_book": {"index": f"{record.name}@{record.version}", "index_sha256": index.sha256, "k": k},
            "parent": {"dataset": source.name, "version": source.version, "id": source.id, "spec": source.spec}}
    prepared = prepare_rows(rows, [], eval_fraction=0.0)
    target = name or f"{source.name}{OPEN_BOOK_SUFFIX}"
    parents = [("dataset", source.id, "open_book_into"), ("index", record.id, "context_for")]
    registered, created = register_once(workspace, target, prepared, spec, parents)
    return OpenBookDataset(registered, source, created)


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
    build, spec = workspace.recipe.build, workspace.recipe.retrieval
    chunks = []
    for t_index, table in enumerate(build.tables if build is not None else []):
        if table.groups is None:
            continue
        path = workspace.path(table.path)
        header, records = read_table(path)
        field = f"build.tables.{t_index}.groups"
        for group, (text, questions) in group_summaries(table.groups, records, header, field, path.name).items():
            # A chunk id names a place in its file; a summary has none, so its group stands in.
            source = {"file": path.name, "group": group, "derived": "group summary"}
            if spec.summaries_found_by == "questions":
                source["search"] = questions
            if spec.summary_rank is not None:
                source["rank"] = spec.summary_rank
            chunks.append(Chunk(f"{path.name}:{table.groups.by}={group}", text, source))
    if not chunks:
        raise TunewrightError("is set, but no build table has 'groups' to summarise", file=workspace.recipe_path,
                              field=SUMMARIES_FIELD)
    return chunks
