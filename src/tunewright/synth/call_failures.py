"""Which failures keep a synthetic-data round open, decided by their typed kind, never by wording.

A failed teacher call is worth making again: the rerun replays the round's prompts and the cache
answers every call that already succeeded. A row the generator or a filter refused is not, as the
rerun would refuse it again. Messages are for people; a judge's verdict that quotes "empty" or a
rationale that cites an http:// link says nothing about whether a call failed.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from .teachers import TeacherError, TeacherRequest

# What TeacherError.kind is set to where a call fails; generators add their own refusal kinds
# ("unparsable", "rejected") beside these, and those do not keep a round open.
CallFailureKind = Literal["timeout", "connection", "http", "malformed", "empty"]
CALL_FAILURE_KINDS: tuple[str, ...] = get_args(CallFailureKind)


def is_call_failure(kind: str) -> bool:
    return kind in CALL_FAILURE_KINDS


class _RecordingTeacher:
    """The teacher as one filter sees it; every failed call is kept with its TeacherError."""

    def __init__(self, teacher: Any, filter_name: str, failed: list[tuple[str, TeacherError]]) -> None:
        self._teacher, self._filter_name, self._failed = teacher, filter_name, failed

    def complete(self, request: TeacherRequest):
        try:
            return self._teacher.complete(request)
        except TeacherError as error:
            self._failed.append((self._filter_name, error))
            raise

    def complete_many(self, requests: list[TeacherRequest]):
        results = self._teacher.complete_many(requests)
        self._failed.extend((self._filter_name, r) for r in results if isinstance(r, TeacherError))
        return results

    def __getattr__(self, name: str) -> Any:
        return getattr(self._teacher, name)  # model, usage and anything a plugin teacher adds


class FilterCalls:
    """The teacher calls filters make, and which of them failed.

    A filter tells of a call it could not make only in a flag's text, written for reviewers; the
    round reads the failure here instead, where the TeacherError still carries its kind."""

    def __init__(self, teacher: Any) -> None:
        self.teacher = teacher
        self._failed: list[tuple[str, TeacherError]] = []

    def teacher_for(self, filter_name: str) -> _RecordingTeacher:
        return _RecordingTeacher(self.teacher, filter_name, self._failed)

    def failures(self) -> list[dict[str, str]]:
        """Failed calls as the round records them; the message is the judge's flag text."""
        return [{"generator": name, "kind": name, "message": f"not scored: {error}"}
                for name, error in self._failed if is_call_failure(error.kind)]
