"""One registry shape for every pluggable part: PEFT methods, generators, metrics.

Adding a part is one class with a ``name`` and one ``@registry.register``; built-ins register
through the same call an outside plugin would use. Duplicate or malformed names are refused at
import time, as peft's own method registry does.
"""

from __future__ import annotations

import re
from typing import Generic, TypeVar

from .errors import TunewrightError

T = TypeVar("T")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class PluginRegistry(Generic[T]):
    def __init__(self, kind: str, *, recipe_field: str | None = None) -> None:
        self.kind = kind
        self.recipe_field = recipe_field
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{self.kind} {cls.__name__} needs a lowercase 'name', got {name!r}")
        if name in self._classes:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._classes[name] = cls
        return cls

    def get_class(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except KeyError:
            known = ", ".join(self.names())
            raise TunewrightError(f"unknown {self.kind} '{name}' (known: {known})", field=self.recipe_field) from None

    def get(self, name: str) -> T:
        return self.get_class(name)()

    def names(self) -> list[str]:
        return sorted(self._classes)
