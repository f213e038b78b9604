"""User-facing errors: one line naming the file, line and field, then a non-zero exit."""

from __future__ import annotations

from pathlib import Path


class TunewrightError(Exception):
    """An error the user can fix by changing their input. The CLI prints ``str(err)`` and exits 2."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line is not None else "")
        parts = [p for p in (where, f"field '{self.field}'" if self.field else "") if p]
        prefix = ": ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class NotFoundError(TunewrightError):
    """A model, adapter, dataset or file the user named does not exist."""
