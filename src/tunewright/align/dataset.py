"""A dataset version of part rows as a new version of plain text rows (layout "aligned-v1").

Every message with image or audio parts becomes its aligned text (``render_aligned``), read through
the workspace's alignment cache (``<workspace>/cache/align/``), where reviewers' corrections also
live and win over the engines. The new version's lineage parent is the media version; its spec records
the layout, each engine's provenance and the corrections applied, and each row's meta the media it
was read from. Rows keep their split. A version is named by its content, so aligning again with
nothing changed reads the cache and returns the version already registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import AlignSpec
from ..data.api import get_dataset, register_once
from ..data.media import media_path
from ..data.prepare import SPLITS, prepare_rows, read_split
from ..data.schema import ChatRow
from ..errors import NotFoundError, TunewrightError
from .cache import aligned_text
from .corrections import CorrectionStore
from .engines import ALIGNERS, DEFAULT_ENGINES, engine_settings
from .render import ALIGNED_LAYOUT, render_aligned

CACHE_DIR = ("cache", "align")
SUFFIX = "-aligned"
LINEAGE_RELATION = "aligned_into"  # media version -> its aligned text version


@dataclass(frozen=True)
class AlignedDataset:
    record: Any  # the registry's DatasetRecord of the aligned version
    source: Any  # the media version's DatasetRecord
    created: bool  # False: this exact version was registered before
    media: dict[str, int]  # media files read, by part type
    corrected: int  # of them, files whose text is a reviewer's correction


def cache_dir(workspace) -> Path:
    return workspace.root.joinpath(*CACHE_DIR)


def recipe_settings(workspace) -> tuple[dict[str, str], dict[str, Any]]:
    """Which engine reads each part type and each engine's typed settings, from the recipe's
    ``align:`` section; a bad engine or setting is refused naming the recipe and ``align.<engine>...``."""
    spec = workspace.recipe.align or AlignSpec()
    engines = {**DEFAULT_ENGINES, **spec.engines}
    try:
        for kind, name in engines.items():
            engine = ALIGNERS.get_class(name)
            if engine.modality != kind:
                raise TunewrightError(f"aligner '{name}' reads {engine.modality} parts, not {kind}",
                                      field=f"align.engines.{kind}")
        for name in spec.engine_settings():
            ALIGNERS.get_class(name)  # settings for an engine that does not exist are a typo
        settings = {name: engine_settings(name, spec.engine_settings().get(name)) for name in set(engines.values())}
    except TunewrightError as exc:
        raise TunewrightError(exc.message, file=workspace.recipe_path, field=exc.field) from None
    return engines, settings


def align_dataset(workspace, ref: str | None = None, *, name: str | None = None,
                  on_media: Callable[[int, int], None] | None = None) -> AlignedDataset:
    """Align dataset ``ref`` (``name`` or ``name@version``; default the recipe's) and register the text
    rows as dataset ``name`` (default ``<dataset>-aligned``). ``on_media(done, total)`` reports progress
    over the media files, from ``(0, total)``."""
    source = get_dataset(workspace, ref)
    folder = Path(source.path)
    if not folder.is_dir():
        raise NotFoundError(f"dataset '{source.name}' is registered but its files are missing", file=folder)
    splits = {split: read_split(folder, split) for split in SPLITS}
    refs = {part.ref: part.type for rows in splits.values() for row in rows for part in row.media_parts()}
    if not refs:
        raise TunewrightError(f"dataset '{source.name}@{source.version}' has no image or audio parts: nothing "
                              "to align (its rows are text already; train on it as it is)")
    engines, settings = recipe_settings(workspace)
    # Every file is checked before any engine runs, so a missing one stops the command in
    # seconds rather than after minutes of OCR.
    files = {ref: media_path(folder, ref) for ref in refs}
    cache = cache_dir(workspace)

    # Each file is read once here (progress is per file); rendering the rows then reads the cache.
    if on_media:
        on_media(0, len(files))
    for done, (ref, path) in enumerate(files.items(), start=1):
        engine = engines[refs[ref]]
        aligned_text(path, engine, cache, settings[engine])
        if on_media:
            on_media(done, len(files))
    corrections = CorrectionStore(cache)
    # A stored ref is media/<sha256>.<ext>: its stem is the key corrections are kept under.
    corrected = sorted(Path(ref).stem for ref, kind in refs.items()
                       if corrections.get(Path(ref).stem, engines[kind]) is not None)

    label = f"{source.name}@{source.version}"
    rows = [_aligned_row(row, split, number, label, files.__getitem__, cache, engines, settings)
            for split, split_rows in splits.items() for number, row in enumerate(split_rows, start=1)]
    used = [kind for kind in DEFAULT_ENGINES if kind in refs.values()]  # image, then audio
    spec = {
        "kind": "align",
        "layout": ALIGNED_LAYOUT,
        "source": {"dataset": source.name, "version": source.version, "id": source.id,
                   "content_sha256": source.content_sha256},
        "engines": {kind: ALIGNERS.get(engines[kind]).provenance(settings[engines[kind]]).model_dump(mode="json")
                    for kind in used},
        "media": {kind: list(refs.values()).count(kind) for kind in used},
        "corrections": {"applied": len(corrected), "media_sha256": corrected},
    }
    target = name or f"{source.name}{SUFFIX}"
    prepared = prepare_rows(rows, [], eval_fraction=0.0)
    record, created = register_once(workspace, target, prepared, spec, [("dataset", source.id, LINEAGE_RELATION)])
    return AlignedDataset(record=record, source=source, created=created, media=spec["media"],
                          corrected=len(corrected))


def _aligned_row(row: ChatRow, split: str, number: int, label: str, resolve, cache: Path,
                 engines: dict[str, str], settings: dict[str, Any]) -> ChatRow:
    messages = [{"role": m.role,
                 "content": render_aligned([p.model_dump() for p in m.content], resolve, cache,
                                           settings=settings, engines=engines)
                 if m.has_media else m.content}
                for m in row.messages]
    # split: the row stays on its side of the held-out line (prepare_rows keeps a row's meta split);
    # aligned: where a reviewer finds the media this text was read from.
    meta = {**row.meta, "split": split}
    if row.has_media:
        meta["aligned"] = {"from": label, "split": split, "line": number, "media": row.media()}
    return ChatRow(messages=messages, reference=row.reference, meta=meta)
