"""Which failures keep a synthetic-data round open, decided by their typed kind, never by wording.

A failed teacher call is worth making again: the rerun replays the round's prompts and the cache
answers every call that already succeeded. A row the generator or a filter refused is not, as the
rerun would refuse it again. Messages are for people; a judge's verdict that quotes "empty" or a
rationale that cites an http:// link says nothing about whether a call failed.
"""

from __future__ import annotations

from typing import Literal, get_args

# What TeacherError.kind is set to where a call fails; generators add their own refusal kinds
# ("unparsable", "rejected") beside these, and those do not keep a round open.
CallFailureKind = Literal["timeout", "connection", "http", "malformed", "empty"]
CALL_FAILURE_KINDS: tuple[str, ...] = get_args(CallFailureKind)


def is_call_failure(kind: str) -> bool:
    return kind in CALL_FAILURE_KINDS
