"""Houlsby / Pfeiffer bottleneck adapters (peft has none): see ``bottleneck_tuner`` for the modules."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import SETTINGS_FIELD, MethodSettings, PeftMethod, register_method


def register_with_peft() -> None:
    """Make peft know the BOTTLENECK type (importing the tuner registers it; peft itself loads lazily)."""
    from . import bottleneck_tuner  # noqa: F401


@register_method
class Bottleneck(PeftMethod):
    name = "bottleneck"
    peft_type = "BOTTLENECK"
    description = ("small down-project → nonlinearity → up-project residual modules after each layer's attention "
                   "and MLP output (houlsby) or the MLP output only (pfeiffer)")
    merge_refusal = "the adapter is a nonlinear module (down-project, activation, up-project), not a weight change"
    load_prelude = ("# bottleneck adapters are Tunewright's own peft type; register it with peft first:",
                    "from tunewright.methods.bottleneck import register_with_peft",
                    "register_with_peft()")

    class Settings(MethodSettings):
        variant: Literal["houlsby", "pfeiffer"] = Field(
            "houlsby", description="houlsby: after attention and MLP; pfeiffer: after the MLP only")
        reduction_factor: int = Field(16, ge=1, description="adapter width = hidden size / reduction_factor")
        bottleneck_size: int | None = Field(None, ge=1, description="adapter width, instead of reduction_factor")
        activation: Literal["relu", "gelu", "silu"] = "relu"
        attention_output: str = Field("o_proj", min_length=1, description="the attention output projection's name")
        mlp_output: str = Field("down_proj", min_length=1, description="the MLP output projection's name")

        @model_validator(mode="after")
        def _one_width(self):
            if {"reduction_factor", "bottleneck_size"} <= self.model_fields_set:
                raise ValueError("set either reduction_factor or bottleneck_size, not both")
            return self

    def module_targets(self, spec):
        settings = self.settings(spec)
        targets = {f"{SETTINGS_FIELD}.mlp_output": [settings.mlp_output]}
        if settings.variant == "houlsby":
            targets[f"{SETTINGS_FIELD}.attention_output"] = [settings.attention_output]
        return targets

    def peft_config(self, spec):
        register_with_peft()
        from peft import TaskType

        from .bottleneck_tuner import BottleneckConfig

        settings = self.settings(spec)
        modules = [names[0] for names in self.module_targets(spec).values()]
        return BottleneckConfig(
            task_type=TaskType.CAUSAL_LM, target_modules=modules, bottleneck_size=settings.bottleneck_size,
            reduction_factor=settings.reduction_factor, activation=settings.activation,
        )
