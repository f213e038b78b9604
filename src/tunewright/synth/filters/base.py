"""Filters mark rows with a reason instead of deleting them, so a person can see and overrule a drop."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, Sequence

from ...data.schema import ChatRow
from ...plugins import PluginRegistry


def conversation_text(row: ChatRow) -> str:
    """What overlap and similarity filters compare: every turn but the system prompt."""
    return "\n".join(m.content for m in row.messages if m.role != "system")


def first_question(row: ChatRow) -> str:
    return next(m.content for m in row.messages if m.role == "user")


@dataclass(frozen=True)
class Flag:
    filter: str
    reason: str


@dataclass
class Candidate:
    """A generated row on its way to review: the row plus every reason a filter found against it."""

    id: str
    row: ChatRow
    flags: list[Flag] = field(default_factory=list)

    @property
    def kept(self) -> bool:
        return not self.flags

    def text(self) -> str:
        return conversation_text(self.row)

    def question(self) -> str:
        return first_question(self.row)


@dataclass
class FilterContext:
    """What filters compare against: rows already accepted, and eval/test text that must not leak."""

    accepted: Sequence[ChatRow] = ()
    protected_texts: Sequence[str] = ()


class Filter(Protocol):
    name: ClassVar[str]

    def apply(self, candidates: list[Candidate], context: FilterContext) -> None:
        """Append a Flag to each candidate this filter would drop."""


_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens: what overlap-based filters compare."""
    return _WORD.findall(text.lower())


FILTERS: PluginRegistry[Filter] = PluginRegistry("filter", recipe_field="synth.filters", group="filters")
register_filter = FILTERS.register


def run_filters(filters: Sequence[Filter], candidates: list[Candidate], context: FilterContext) -> dict[str, int]:
    """Apply filters in order (each sees only rows no earlier filter flagged); count flags per filter."""
    counts: Counter[str] = Counter()
    for active in filters:
        live = [c for c in candidates if c.kept]
        active.apply(live, context)
        counts[active.name] += sum(1 for c in live if not c.kept)
    return dict(counts)
