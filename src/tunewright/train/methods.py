"""PEFT methods behind a registry: adding one is one class and one registration."""

from __future__ import annotations

from typing import ClassVar, Protocol

from ..config import TrainSpec
from ..plugins import PluginRegistry

METHODS: PluginRegistry["PeftMethod"] = PluginRegistry("PEFT method", recipe_field="train.method")


class PeftMethod(Protocol):
    name: ClassVar[str]

    def peft_config(self, spec: TrainSpec):
        """Build the ``peft`` config for this method from the recipe's train section."""


register_method = METHODS.register
get_method = METHODS.get
available_methods = METHODS.names


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


