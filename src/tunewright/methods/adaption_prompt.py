"""LLaMA-Adapter (peft's adaption prompt): learned prompts read by a zero-gated extra attention path.

The gates start at zero, so training starts exactly at the base model, like LoRA's zero B.
"""

from __future__ import annotations

from pydantic import Field

from ..errors import TunewrightError
from .base import SETTINGS_FIELD, MethodSettings, PeftMethod, register_method


@register_method
class LlamaAdapter(PeftMethod):
    name = "llama-adapter"
    peft_type = "ADAPTION_PROMPT"
    description = "adapter prompts in the top layers' attention behind zero-initialised gates (LLaMA-Adapter)"
    merge_refusal = "its adapter prompts feed a gated extra attention path in each layer, which no base weight can express"

    class Settings(MethodSettings):
        adapter_len: int = Field(10, ge=1, le=512, description="adapter prompt tokens per layer")
        adapter_layers: int | None = Field(
            None, ge=1, description="how many of the top decoder layers get one (default: all)")

    def check_model(self, model, spec):
        from peft.tuners.adaption_prompt.config import TRANSFORMERS_MODEL_CONFIG

        model_type = getattr(model.config, "model_type", None)
        if model_type not in TRANSFORMERS_MODEL_CONFIG:
            raise TunewrightError(
                f"peft's LLaMA-Adapter supports {', '.join(sorted(TRANSFORMERS_MODEL_CONFIG))} models, "
                f"not '{model_type}'", field="train.method")
        layers = self.settings(spec).adapter_layers
        total = model.config.num_hidden_layers
        if layers is not None and layers > total:
            raise TunewrightError(f"the model has {total} decoder layers, fewer than {layers}",
                                  field=f"{SETTINGS_FIELD}.adapter_layers")

    def peft_config(self, spec, num_layers: int | None = None):
        from peft import AdaptionPromptConfig, TaskType

        settings = self.settings(spec)
        layers = settings.adapter_layers or num_layers
        if layers is None:
            raise ValueError("adapter_layers unset and the model's layer count unknown")
        return AdaptionPromptConfig(task_type=TaskType.CAUSAL_LM, adapter_len=settings.adapter_len, adapter_layers=layers)

    def wrap(self, model, spec):
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(spec, num_layers=model.config.num_hidden_layers))
