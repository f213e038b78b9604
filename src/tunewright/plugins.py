"""One registry shape for every pluggable part: PEFT methods, dataset builders, synthetic-data
generators, teachers, filters, metrics, data readers, row shapes, review formats, export formats.

Adding a part is one class with a ``name`` and one ``@registry.register``; built-ins register
through the same call an outside plugin would use. Duplicate or malformed names are refused at
import time, as peft's own method registry does. A part with options declares them as a nested
pydantic ``Settings`` model; ``settings_for`` validates the recipe's values against it and names the
field of a bad one.

Third-party packages add parts without touching Tunewright: an entry point in the registry's group
(``tunewright.<group>``, e.g. ``tunewright.methods``) naming a module that registers on import, or a
class that the registry registers. Entry points load on the first lookup, so a broken plugin fails
with its own name when it is needed, not on every command.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import TunewrightError

T = TypeVar("T")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
ENTRY_POINT_PREFIX = "tunewright."


class PluginRegistry(Generic[T]):
    def __init__(self, kind: str, *, recipe_field: str | None = None, group: str | None = None) -> None:
        """``kind``: how errors name a part ("PEFT method"); ``group``: the entry-point group's
        suffix third-party packages register under (``tunewright.<group>``)."""
        self.kind = kind
        self.recipe_field = recipe_field
        self.group = ENTRY_POINT_PREFIX + group if group else None
        self._classes: dict[str, type[T]] = {}
        self._entry_points_loaded = group is None

    def register(self, cls: type[T]) -> type[T]:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{self.kind} {cls.__name__} needs a lowercase 'name', got {name!r}")
        if name in self._classes and self._classes[name] is not cls:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._classes[name] = cls
        return cls

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True  # first, so a plugin that looks itself up does not recurse
        for point in metadata.entry_points(group=self.group):
            try:
                loaded = point.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's, named as such
                raise TunewrightError(f"{self.kind} plugin '{point.name}' ({point.value}, entry point group "
                                      f"{self.group}) failed to load: {exc}") from None
            if isinstance(loaded, type) and isinstance(getattr(loaded, "name", None), str):
                try:
                    self.register(loaded)
                except ValueError as exc:
                    raise TunewrightError(f"{self.kind} plugin '{point.name}' ({point.value}): {exc}") from None

    def get_class(self, name: str) -> type[T]:
        self._load_entry_points()
        try:
            return self._classes[name]
        except KeyError:
            known = ", ".join(self.names())
            raise TunewrightError(f"unknown {self.kind} '{name}' (known: {known})", field=self.recipe_field) from None

    def get(self, name: str) -> T:
        return self.get_class(name)()

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._classes)

    def classes(self) -> list[type[T]]:
        """Every registered class in registration order (built-ins first): the order detection tries them."""
        self._load_entry_points()
        return list(self._classes.values())

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._classes

    def settings_for(self, name: str, values: dict[str, Any] | None, field: str) -> BaseModel:
        """``values`` validated against the part's ``Settings``; a bad or unknown one names
        ``<field>.<setting>``."""
        cls = self.get_class(name)
        model = getattr(cls, "Settings", None)
        if model is None:
            if values:
                raise TunewrightError(f"{self.kind} '{name}' takes no settings", field=field)
            return BaseModel()
        try:
            return model.model_validate(values or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                known = ", ".join(model.model_fields) or "none"
                message = f"unknown setting for {self.kind} '{name}' (its settings: {known})"
            raise TunewrightError(message, field=f"{field}.{where}" if where else field) from None
