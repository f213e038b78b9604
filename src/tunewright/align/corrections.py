"""Reviewers' corrected text for a (media file, engine) pair, kept beside the alignment cache.

A correction is keyed by the media file's sha256 and the engine name, not by settings: it is the
right text for that file whatever options the engine ran with. Unlike cache entries, corrections are
people's work and cannot be recomputed, so a file that does not read is an error, never skipped.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import TunewrightError
from ..io import atomic_write_json

CORRECTIONS_FILE = "corrections.json"
CORRECTIONS_FORMAT = 1


class Correction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    media_sha256: str
    engine: str
    text: str
    by: str
    at: str  # ISO 8601, UTC

    @field_validator("by")
    @classmethod
    def _someone(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a correction needs the reviewer's name")
        return value.strip()


class CorrectionStore:
    def __init__(self, cache_dir: str | Path) -> None:
        self.path = Path(cache_dir) / CORRECTIONS_FILE

    def _read(self) -> dict[str, Correction]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TunewrightError(f"corrections file does not read: {exc}", file=self.path) from None
        if not isinstance(raw, dict) or raw.get("format") != CORRECTIONS_FORMAT:
            found = raw.get("format") if isinstance(raw, dict) else None
            raise TunewrightError(f"corrections format {found!r} is not one this version reads "
                                  f"(it reads format {CORRECTIONS_FORMAT})", file=self.path, field="format")
        items = raw.get("corrections")
        if not isinstance(items, list):
            raise TunewrightError("must be a list", file=self.path, field="corrections")
        found_items: dict[str, Correction] = {}
        for index, item in enumerate(items):
            try:
                correction = Correction.model_validate(item)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise TunewrightError(str(first["msg"]), file=self.path,
                                      field=f"corrections[{index}]" + (f".{where}" if where else "")) from None
            found_items[_key(correction.media_sha256, correction.engine)] = correction
        return found_items

    def _write(self, items: dict[str, Correction]) -> None:
        ordered = sorted(items.values(), key=lambda c: (c.media_sha256, c.engine))
        atomic_write_json(self.path, {"format": CORRECTIONS_FORMAT,
                                      "corrections": [c.model_dump() for c in ordered]})

    def get(self, media_sha256: str, engine: str) -> Correction | None:
        return self._read().get(_key(media_sha256, engine))

    def all(self) -> list[Correction]:
        return sorted(self._read().values(), key=lambda c: (c.media_sha256, c.engine))

    def set(self, media_sha256: str, engine: str, text: str, *, by: str, at: datetime | None = None) -> Correction:
        try:
            correction = Correction(media_sha256=media_sha256, engine=engine, text=text, by=by,
                                    at=(at or datetime.now(timezone.utc)).isoformat(timespec="seconds"))
        except ValidationError as exc:
            raise TunewrightError(str(exc.errors()[0]["msg"]).removeprefix("Value error, "), field="by") from None
        items = self._read()
        items[_key(media_sha256, engine)] = correction
        self._write(items)
        return correction

    def remove(self, media_sha256: str, engine: str) -> bool:
        items = self._read()
        if items.pop(_key(media_sha256, engine), None) is None:
            return False
        self._write(items)
        return True


def _key(media_sha256: str, engine: str) -> str:
    return f"{media_sha256}/{engine}"
