"""PEFT methods behind a registry: adding one is one class and one registration."""

from __future__ import annotations

import re
from typing import ClassVar, Protocol

from ..config import TrainSpec
from ..errors import TunewrightError

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_METHODS: dict[str, "PeftMethod"] = {}


class PeftMethod(Protocol):
    name: ClassVar[str]

    def peft_config(self, spec: TrainSpec):
        """Build the ``peft`` config for this method from the recipe's train section."""


def register_method(cls: type) -> type:
    """Class decorator; refuses duplicate or malformed names, as peft's own registry does."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"PEFT method {cls.__name__} needs a lowercase 'name', got {name!r}")
    if name in _METHODS:
        raise ValueError(f"PEFT method '{name}' is already registered")
    _METHODS[name] = cls()
    return cls


def get_method(name: str) -> PeftMethod:
    try:
        return _METHODS[name]
    except KeyError:
        known = ", ".join(sorted(_METHODS))
        raise TunewrightError(f"unknown PEFT method '{name}' (known: {known})", field="train.method") from None


def available_methods() -> list[str]:
    return sorted(_METHODS)


@register_method
class Lora:
    name = "lora"

    def peft_config(self, spec: TrainSpec):
        from peft import LoraConfig, TaskType

        return LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=spec.r,
            lora_alpha=spec.alpha,
            lora_dropout=spec.dropout,
            target_modules=spec.target_modules,
            bias="none",
        )


