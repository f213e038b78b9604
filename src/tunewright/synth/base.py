"""The generator registry: one class per generator, registered by name."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Iterable, Protocol

from ..data.schema import ChatRow
from ..errors import TunewrightError

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_GENERATORS: dict[str, type] = {}


@dataclass(frozen=True)
class GeneratedRow:
    row: ChatRow
    split: str  # "train" or "eval": generators decide, so eval phrasings never leak into training
    sources: tuple[str, ...] = field(default_factory=tuple)  # files the row was grounded in


class Generator(Protocol):
    name: ClassVar[str]

    def generate(self, spec, resolve_path) -> Iterable[GeneratedRow]:
        """Yield rows for ``spec``; ``resolve_path`` turns a recipe path into a local Path."""


def register_generator(cls: type) -> type:
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"generator {cls.__name__} needs a lowercase 'name', got {name!r}")
    if name in _GENERATORS:
        raise ValueError(f"generator '{name}' is already registered")
    _GENERATORS[name] = cls
    return cls


def get_generator(name: str) -> Generator:
    try:
        return _GENERATORS[name]()
    except KeyError:
        known = ", ".join(sorted(_GENERATORS))
        raise TunewrightError(f"unknown generator '{name}' (known: {known})") from None


def available_generators() -> list[str]:
    return sorted(_GENERATORS)
