"""Load, deduplicate and split chat rows, and store them as an immutable, content-addressed version."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

from pydantic import ValidationError

from ..config import MediaLimits
from ..errors import NotFoundError, TunewrightError
from ..io import atomic_dir, atomic_write_bytes, atomic_write_json, sha256_file
from .media import MediaCollector, MediaFile, store_media
from .normalize import Where, normalise_record, validation_error
from .readers import iter_records
from .schema import ChatRow

SPLITS = ("train", "eval")
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class PreparedDataset:
    train: list[ChatRow]
    eval: list[ChatRow]
    n_duplicates: int
    source_files: list[dict]
    content_sha256: str
    media: dict[str, MediaFile] = field(default_factory=dict)  # by reference, only those the rows use

    @property
    def version(self) -> str:
        return self.content_sha256[:12]


def load_rows(paths: Iterable[str | Path], media: MediaCollector | None = None) -> tuple[list[ChatRow], list[dict]]:
    """Read and validate every row of every file; the first bad row raises, naming file and line.

    Image and audio parts are checked into ``media``; a file's entry lists the media its rows use,
    so the registry's record of sources pins them too."""
    media = media if media is not None else MediaCollector()
    rows: list[ChatRow] = []
    sources: list[dict] = []
    for path in map(Path, paths):
        start = len(rows)
        for line, record in iter_records(path):
            rows.append(normalise_record(record, file=path, line=line, media=media))
        source = {"path": str(path.resolve()), "sha256": sha256_file(path), "rows": len(rows) - start}
        used = sorted({media.files[ref].sha256 for row in rows[start:] for ref in row.media()})
        if used:
            source["media"] = {"count": len(used), "sha256": used}
        sources.append(source)
    return rows, sources


def dedupe(rows: Iterable[ChatRow]) -> tuple[list[ChatRow], int]:
    """Drop exact duplicates of what the model sees, keeping the first occurrence."""
    seen: set[str] = set()
    kept: list[ChatRow] = []
    removed = 0
    for row in rows:
        key = row.content_key()
        if key in seen:
            removed += 1
            continue
        seen.add(key)
        kept.append(row)
    return kept, removed


def split_rows(rows: list[ChatRow], eval_fraction: float, seed: int) -> tuple[list[ChatRow], list[ChatRow]]:
    """Split deterministically for ``seed``; rows with ``meta["split"]`` of train/eval stay put.

    The eval target is ``round(n * eval_fraction)`` over all rows (at least 1 when the fraction is
    positive and there are two rows or more); preassigned eval rows count towards it and random
    picks fill the rest. At least one row is left for training when the picks allow it.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise TunewrightError(f"must be at least 0 and below 1, got {eval_fraction}", field="eval_fraction")
    n = len(rows)
    fixed = [row.meta.get("split") if row.meta.get("split") in SPLITS else None for row in rows]
    free = [i for i, split in enumerate(fixed) if split is None]
    target = round(n * eval_fraction)
    if eval_fraction > 0 and n >= 2:
        target = max(target, 1)
    need = max(0, target - fixed.count("eval"))
    keep_one_for_train = 0 if "train" in fixed else 1
    need = max(0, min(need, len(free) - keep_one_for_train))
    order = list(range(len(free)))
    random.Random(seed).shuffle(order)
    picked = {free[i] for i in order[:need]}
    train, eval_ = [], []
    for i, row in enumerate(rows):
        (eval_ if fixed[i] == "eval" or i in picked else train).append(row)
    return train, eval_


def canonical_jsonl(rows: Iterable[ChatRow]) -> bytes:
    """One stable byte form per row set: the hash and the stored files are the same bytes."""
    return "".join(
        json.dumps(row.to_json(), ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"
        for row in rows
    ).encode("utf-8")


def content_hash(train: list[ChatRow], eval_: list[ChatRow]) -> str:
    """The version's identity. Media is covered through the rows: a part names its file by sha256."""
    digest = hashlib.sha256()
    # Each split is framed by its name and size, so moving a boundary row from train to eval
    # changes the hash even though the concatenated bytes would not.
    for name, rows in (("train", train), ("eval", eval_)):
        body = canonical_jsonl(rows)
        digest.update(f"{name} {len(body)}\n".encode())
        digest.update(body)
    return digest.hexdigest()


def prepare_rows(
    rows: list[ChatRow], source_files: list[dict], *, eval_fraction: float = 0.1, seed: int = 0,
    media: Mapping[str, MediaFile] | None = None,
) -> PreparedDataset:
    """``media``: where the files the rows' image and audio parts name are now (an import's collector,
    or ``media.media_in_version`` of the dataset part rows were taken from)."""
    if not rows:
        raise TunewrightError("the dataset has no rows")
    unique, n_duplicates = dedupe(rows)
    train, eval_ = split_rows(unique, eval_fraction, seed)
    return PreparedDataset(
        train=train,
        eval=eval_,
        n_duplicates=n_duplicates,
        source_files=list(source_files),
        content_sha256=content_hash(train, eval_),
        media=_used_media(unique, media or {}),
    )


def _used_media(rows: list[ChatRow], media: Mapping[str, MediaFile]) -> dict[str, MediaFile]:
    used: dict[str, MediaFile] = {}
    for number, row in enumerate(rows, start=1):
        for ref in row.media():
            if ref not in media:
                raise TunewrightError(f"row {number} names {ref}, which is not among the media given with the rows",
                                      field="media")
            used[ref] = media[ref]
    return dict(sorted(used.items()))


def prepare_dataset(paths: Iterable[str | Path], *, eval_fraction: float = 0.1, seed: int = 0,
                    media_limits: MediaLimits | None = None) -> PreparedDataset:
    collector = MediaCollector(media_limits)
    rows, sources = load_rows(paths, collector)
    return prepare_rows(rows, sources, eval_fraction=eval_fraction, seed=seed, media=collector.files)


def write_dataset_version(folder: str | Path, prepared: PreparedDataset, spec: dict) -> Path:
    """Write ``folder/<version>/`` with train.jsonl, eval.jsonl, manifest.json and (for part rows) the
    ``media/`` files, all or nothing.

    A version is named by its content, so an existing complete folder already holds these rows and
    is returned untouched.
    """
    final = Path(folder) / prepared.version
    if (final / "manifest.json").is_file():
        return final
    train_bytes, eval_bytes = canonical_jsonl(prepared.train), canonical_jsonl(prepared.eval)
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": prepared.version,
        "content_sha256": prepared.content_sha256,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": {"train": len(prepared.train), "eval": len(prepared.eval),
                   "duplicates_removed": prepared.n_duplicates},
        "files": {"train.jsonl": hashlib.sha256(train_bytes).hexdigest(),
                  "eval.jsonl": hashlib.sha256(eval_bytes).hexdigest()},
        "source_files": prepared.source_files,
        "spec": spec,
    }
    if prepared.media:
        manifest["media"] = [m.manifest_entry() for m in sorted(prepared.media.values(), key=lambda m: m.sha256)]
    with atomic_dir(final) as tmp:
        store_media(prepared.media.values(), tmp)
        atomic_write_bytes(tmp / "train.jsonl", train_bytes)
        atomic_write_bytes(tmp / "eval.jsonl", eval_bytes)
        atomic_write_json(tmp / "manifest.json", manifest)  # last: its presence marks a complete folder
    return final


def read_split(version_folder: str | Path, split: str) -> list[ChatRow]:
    if split not in SPLITS:
        raise TunewrightError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}", field="split")
    path = Path(version_folder) / f"{split}.jsonl"
    if not path.is_file():
        raise NotFoundError("dataset split file not found", file=path)
    if path.stat().st_size == 0:
        return []  # an eval split of a dataset prepared with eval_fraction=0
    rows = []
    for line, record in iter_records(path):
        try:
            rows.append(ChatRow.model_validate(record))
        except ValidationError as exc:
            raise validation_error(exc, Where(path, line)) from None
    return rows
