"""PEFT methods behind a registry: adding one is one class and one registration.

The training loop calls only the hooks on ``PeftMethod``; a method overrides the ones it needs
(QLoRA loads a quantised base, LoRA+ gives B its own learning rate, a method peft lacks wraps the
model itself) and inherits the rest.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..config import TrainSpec
from ..plugins import PluginRegistry

METHODS: PluginRegistry["PeftMethod"] = PluginRegistry("PEFT method", recipe_field="train.method")


class PeftMethod:
    name: ClassVar[str]

    def peft_config(self, spec: TrainSpec):
        """Build the ``peft`` config for this method from the recipe's train section."""
        raise NotImplementedError

    def load_base(self, base_info, spec: TrainSpec):
        from ..models import load_model

        return load_model(base_info)

    def wrap(self, model, spec: TrainSpec):
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(spec))

    def optimizer_groups(self, model, spec: TrainSpec) -> list[dict[str, Any]]:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": spec.learning_rate}]


register_method = METHODS.register
get_method = METHODS.get
available_methods = METHODS.names


@register_method
class Lora(PeftMethod):
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
