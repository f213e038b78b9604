"""IA3: trained per-channel scales on a few activations; the smallest adapter here, and it merges."""

from __future__ import annotations

from pydantic import Field, model_validator

from ..errors import TunewrightError
from .base import SETTINGS_FIELD, MethodSettings, PeftMethod, register_method

# Output projections of the feed-forward block: IA3 scales their *input* (the FFN activation).
FEEDFORWARD_NAMES = {"down_proj", "fc2", "c_proj", "dense_4h_to_h", "w2", "wo"}


@register_method
class Ia3(PeftMethod):
    name = "ia3"
    peft_type = "IA3"
    description = "learned per-channel scaling of attention keys/values and the feed-forward activation"
    supports_merge = True

    class Settings(MethodSettings):
        target_modules: list[str] | None = Field(
            None, min_length=1, description="modules to scale (default: peft's choice for the architecture)")
        feedforward_modules: list[str] | None = Field(
            None, description="those of target_modules whose input is scaled (default: the FFN output projections)")

        @model_validator(mode="after")
        def _feedforward_within_targets(self):
            if self.feedforward_modules is not None:
                if self.target_modules is None:
                    raise ValueError("feedforward_modules needs target_modules too")
                stray = sorted(set(self.feedforward_modules) - set(self.target_modules))
                if stray:
                    raise ValueError(f"feedforward_modules must be among target_modules; not there: {', '.join(stray)}")
            return self

    def module_targets(self, spec):
        settings = self.settings(spec)
        return {f"{SETTINGS_FIELD}.target_modules": settings.target_modules} if settings.target_modules else {}

    def check_model(self, model, spec):
        from peft.utils import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as DEFAULTS

        model_type = getattr(model.config, "model_type", None)
        if self.settings(spec).target_modules is None and model_type not in DEFAULTS:
            raise TunewrightError(
                f"peft has no default IA3 modules for model type '{model_type}'; name them in target_modules",
                field=f"{SETTINGS_FIELD}.target_modules",
            )

    def peft_config(self, spec):
        from peft import IA3Config, TaskType

        settings = self.settings(spec)
        feedforward = settings.feedforward_modules
        if settings.target_modules is not None and feedforward is None:
            feedforward = [m for m in settings.target_modules if m in FEEDFORWARD_NAMES]
        return IA3Config(
            task_type=TaskType.CAUSAL_LM, target_modules=settings.target_modules, feedforward_modules=feedforward
        )
