"""Filters mark rows with a reason instead of deleting them, so a person can see and overrule a drop."""

from __future__ import annotations

import inspect
import re
import typing
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Sequence

from pydantic import BaseModel, ConfigDict, create_model

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
    reason: str  # for reviewers
    # The TeacherError kind when the filter could not make its teacher call: the round reads this,
    # never the reason's wording, to decide whether a rerun is worth it.
    failed_call: str | None = None


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
# What a filter receives from the round rather than from the recipe.
INJECTED = ("teacher", "embedder")


def _settings_from_init(cls: type) -> type[BaseModel]:
    """A typed ``Settings`` model from the constructor's annotated keywords (their defaults
    included), so a filter's options are written once: in its ``__init__``."""
    hints = typing.get_type_hints(cls.__init__)
    fields: dict[str, Any] = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or name in INJECTED or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        default = ... if param.default is param.empty else param.default
        fields[name] = (hints.get(name, Any), default)
    return create_model(f"{cls.__name__}Settings", __config__=ConfigDict(extra="forbid"), **fields)


def register_filter(cls):
    """Register a filter; its ``Settings`` come from its constructor unless it declares its own."""
    if "Settings" not in cls.__dict__:
        cls.Settings = _settings_from_init(cls)
    return FILTERS.register(cls)


def run_filters(filters: Sequence[Filter], candidates: list[Candidate], context: FilterContext) -> dict[str, int]:
    """Apply filters in order (each sees only rows no earlier filter flagged); count flags per filter."""
    counts: Counter[str] = Counter()
    for active in filters:
        live = [c for c in candidates if c.kept]
        active.apply(live, context)
        counts[active.name] += sum(1 for c in live if not c.kept)
    return dict(counts)
