"""Run an engine on a media file at most once per (file content, engine, version, model, settings).

Each result is one JSON file, ``<cache_dir>/<engine>/<media sha256>.<config hash>.json``, written
atomically. The config hash covers the engine name, its package version, the model identity and the
settings, so upgrading the package, swapping the model or changing an option re-runs the engine,
while moving the files or the workspace does not. A cache file that does not read back as the entry
it should be (bad JSON, wrong key, a result that does not validate) is recomputed and replaced,
never trusted: the cache is only ever a copy of something we can compute again.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SerializeAsAny, ValidationError

from ..errors import TunewrightError
from ..io import atomic_write_json, ensure_writable_dir, sha256_file, sha256_text
from .corrections import CorrectionStore
from .engines import ALIGNERS, AlignEngine, EngineResult, Provenance, engine_settings

CACHE_FORMAT = 1


class Aligned(BaseModel):
    """One engine's reading of one file, with where it came from."""

    model_config = ConfigDict(extra="forbid")
    format: int = CACHE_FORMAT
    key: str
    media_sha256: str
    provenance: Provenance
    result: SerializeAsAny[EngineResult]
    computed_at: str

    @property
    def text(self) -> str:
        return self.result.text


def config_hash(engine: AlignEngine, settings: BaseModel) -> str:
    keyed = settings.model_dump(mode="json", exclude=set(engine.identity_settings))
    config = {"engine": engine.name, "version": engine.version(), "model": engine.model_identity(settings),
              "settings": keyed}
    return sha256_text(json.dumps(config, sort_keys=True))[:16]


def cache_key(media_sha256: str, engine: AlignEngine, settings: BaseModel) -> str:
    return f"{media_sha256}.{config_hash(engine, settings)}"


def _media_sha256(path: Path) -> str:
    try:
        return sha256_file(path)
    except FileNotFoundError:
        raise TunewrightError("media file not found", file=path) from None
    except OSError as exc:
        raise TunewrightError(f"cannot read media file: {exc.strerror or exc}", file=path) from None


def _read_entry(file: Path, engine: AlignEngine, key: str, media_sha256: str) -> Aligned | None:
    try:
        raw: Any = json.loads(file.read_text(encoding="utf-8"))
        result = engine.Result.model_validate(raw["result"])
        entry = Aligned.model_validate({**raw, "result": result})
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError, KeyError, TypeError):
        return None  # corrupt or from another version: recompute (see the module docstring)
    if entry.format != CACHE_FORMAT or entry.key != key or entry.media_sha256 != media_sha256:
        return None
    return entry


def align(path: str | Path, engine: str, cache_dir: str | Path,
          settings: BaseModel | dict[str, Any] | None = None) -> Aligned:
    """``engine``'s result for the file at ``path``: from the cache when this exact file, engine
    version, model and settings ran before, else computed and stored."""
    return _align(Path(path), _media_sha256(Path(path)), engine, Path(cache_dir), settings)


def _align(path: Path, media_sha256: str, engine: str, cache_dir: Path,
           settings: BaseModel | dict[str, Any] | None) -> Aligned:
    runner = ALIGNERS.get(engine)
    typed = engine_settings(engine, settings)
    key = cache_key(media_sha256, runner, typed)
    file = cache_dir / runner.name / f"{key}.json"
    cached = _read_entry(file, runner, key, media_sha256)
    if cached is not None:
        return cached
    ensure_writable_dir(file.parent)  # fail before the expensive part, not after it
    entry = Aligned(key=key, media_sha256=media_sha256, provenance=runner.provenance(typed),
                    result=runner.run(path, typed),
                    computed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    atomic_write_json(file, entry.model_dump(mode="json"))
    return entry


def aligned_text(path: str | Path, engine: str, cache_dir: str | Path,
                 settings: BaseModel | dict[str, Any] | None = None) -> str:
    """A reviewer's corrected text for this file and engine when there is one (the engine is then
    not run at all), else the engine's text."""
    media_sha256 = _media_sha256(Path(path))
    correction = CorrectionStore(cache_dir).get(media_sha256, ALIGNERS.get_class(engine).name)
    if correction is not None:
        return correction.text
    return _align(Path(path), media_sha256, engine, Path(cache_dir), settings).text
