"""The generator registry: one class per generator, registered by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Iterable, Protocol

from ..data.schema import ChatRow
from ..plugins import PluginRegistry



@dataclass(frozen=True)
class GeneratedRow:
    row: ChatRow
    split: str  # "train" or "eval": generators decide, so eval phrasings never leak into training
    sources: tuple[str, ...] = field(default_factory=tuple)  # files the row was grounded in


class Generator(Protocol):
    name: ClassVar[str]

    def generate(self, spec, resolve_path) -> Iterable[GeneratedRow]:
        """Yield rows for ``spec``; ``resolve_path`` turns a recipe path into a local Path."""


GENERATORS: PluginRegistry[Generator] = PluginRegistry("dataset builder", recipe_field="build.generator",
                                                  group="builders")
register_generator = GENERATORS.register
get_generator = GENERATORS.get
available_generators = GENERATORS.names
