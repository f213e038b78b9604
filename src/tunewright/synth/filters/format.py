"""Format checks: forbidden content from the spec's constraints, and JSON answers against the
spec's schema when the output shape is JSON."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from .base import Candidate, Flag, FilterContext, register_filter


@register_filter
class Format:
    name: ClassVar[str] = "format"

    def __init__(self, forbidden: list[str] | None = None, json_schema: dict[str, Any] | None = None) -> None:
        self.forbidden = [f.lower() for f in forbidden or []]
        self.validator = None
        if json_schema:
            from jsonschema import Draft202012Validator

            self.validator = Draft202012Validator(json_schema)

    def apply(self, candidates: list[Candidate], context: FilterContext) -> None:
        for candidate in candidates:
            reason = self._problem(candidate)
            if reason:
                candidate.flags.append(Flag(self.name, reason))

    def _problem(self, candidate: Candidate) -> str | None:
        text = candidate.text().lower()
        hits = [phrase for phrase in self.forbidden if phrase in text]
        if hits:
            return "contains forbidden content: " + ", ".join(repr(h) for h in hits)
        if self.validator is None:
            return None
        try:
            answer = json.loads(candidate.row.answer)
        except ValueError as exc:
            return f"answer is not JSON ({exc.msg})"
        error = next(iter(self.validator.iter_errors(answer)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            return f"answer does not match the JSON schema at {where}: {error.message}"
        return None
