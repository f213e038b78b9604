"""A content-addressed store of teacher calls: re-running a round repeats no paid call."""

from __future__ import annotations

import json
from pathlib import Path

from ...io import atomic_write_json
from .base import Completion


class CallCache:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> Completion | None:
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # a damaged entry is a miss, never a crash: the call is simply made again
        return Completion(**{**data, "cached": True})

    def put(self, key: str, completion: Completion) -> None:
        data = {k: v for k, v in completion.__dict__.items() if k != "cached"}
        atomic_write_json(self._path(key), data)
