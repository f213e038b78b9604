"""Prompt learning: trained virtual tokens in front of every input; the base weights stay untouched.

The training loop takes the full-logits path for these models (the virtual tokens shift every
position), and generation goes through peft's own ``generate``, which prepends them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..errors import TunewrightError
from .base import MethodSettings, PeftMethod, register_method

VIRTUAL_TOKENS = Field(20, ge=1, le=512, description="number of trained virtual tokens")


def fix_generation_cache(model):
    """Let peft's prompt-learning ``generate`` find the key/value cache under transformers 5's name.

    transformers 5 hands the cache to ``prepare_inputs_for_generation`` results as ``cache``; peft
    0.21 looks for ``past_key_values``. Without this, prefix tuning's prefixes are passed beside an
    empty ``cache`` that wins, so generation silently runs the base model (forward passes and
    training are unaffected). Renaming the key gives peft the cache it expects; the model accepts
    ``past_key_values`` as the deprecated name of ``cache``.
    """
    original = model.base_model_prepare_inputs_for_generation

    def prepare(*args, **kwargs):
        inputs = original(*args, **kwargs)
        if "cache" in inputs and inputs.get("past_key_values") is None:
            inputs["past_key_values"] = inputs.pop("cache")
        return inputs

    model.base_model_prepare_inputs_for_generation = prepare
    return model


class PromptLearning(PeftMethod):
    supports_merge = False
    merge_refusal = "its virtual tokens are extra inputs the model reads on every call, not a change to any weight"

    def wrap(self, model, spec):
        return fix_generation_cache(super().wrap(model, spec))


@register_method
class PrefixTuning(PromptLearning):
    name = "prefix-tuning"
    peft_type = "PREFIX_TUNING"
    description = "trained key/value prefixes prepended to the attention of every layer"
    merge_refusal = "its trained key/value prefixes are attention state prepended in every layer, not a weight change"

    class Settings(MethodSettings):
        num_virtual_tokens: int = VIRTUAL_TOKENS
        # Random N(0, 1) keys and values swamp a trained model's attention: SmolLM2's loss starts at
        # 5.6 instead of 1.46; zero prefixes start at 1.35.
        init: Literal["zero", "random"] = Field("zero", description="initial prefix keys/values")
        prefix_projection: bool = Field(False, description="produce the prefixes through a trained two-layer MLP")
        encoder_hidden_size: int | None = Field(None, ge=1, description="hidden size of that MLP (default 128)")

        @model_validator(mode="after")
        def _projection_needs_it(self):
            if self.encoder_hidden_size is not None and not self.prefix_projection:
                raise ValueError("encoder_hidden_size only applies with prefix_projection: true")
            return self

    def check_model(self, model, spec):
        if spec.gradient_checkpointing:
            raise TunewrightError("prefix-tuning keeps its prefixes in the attention cache, which gradient "
                                  "checkpointing does not keep; leave it off", field="train.gradient_checkpointing")

    def peft_config(self, spec):
        from peft import PrefixTuningConfig, TaskType

        settings = self.settings(spec)
        return PrefixTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=settings.num_virtual_tokens,
            init_weights="zero" if settings.init == "zero" else None,
            prefix_projection=settings.prefix_projection,
            encoder_hidden_size=settings.encoder_hidden_size or 128,
        )


@register_method
class PromptTuning(PromptLearning):
    name = "prompt-tuning"
    peft_type = "PROMPT_TUNING"
    description = "trained soft-prompt embeddings in front of the input (optionally initialised from text)"

    class Settings(MethodSettings):
        num_virtual_tokens: int = VIRTUAL_TOKENS
        init_text: str | None = Field(
            None, min_length=1,
            description="start the soft prompt from this text's token embeddings (default: random vocabulary tokens)")

    def peft_config(self, spec, tokenizer_path: str | None = None):
        from peft import PromptTuningConfig, PromptTuningInit, TaskType

        settings = self.settings(spec)
        text = settings.init_text
        # Sampled vocabulary embeddings start at the scale the model expects; N(0, 1) would not.
        return PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=settings.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.SAMPLE_VOCAB,
            prompt_tuning_init_text=text,
            tokenizer_name_or_path=tokenizer_path if text else None,
        )

    def wrap(self, model, spec):
        from peft import get_peft_model

        # Our bases keep their tokenizer next to the weights; peft reads it only at init, never at load.
        return fix_generation_cache(get_peft_model(model, self.peft_config(spec, tokenizer_path=str(model.name_or_path))))


@register_method
class PTuning(PromptLearning):
    name = "p-tuning"
    peft_type = "P_TUNING"
    description = "virtual tokens produced by a small trained encoder (MLP or LSTM) over learned inputs"

    class Settings(MethodSettings):
        num_virtual_tokens: int = VIRTUAL_TOKENS
        encoder_hidden_size: int = Field(128, ge=1, description="hidden size of the prompt encoder")
        encoder_type: Literal["MLP", "LSTM"] = "MLP"

    def peft_config(self, spec):
        from peft import PromptEncoderConfig, TaskType

        settings = self.settings(spec)
        return PromptEncoderConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=settings.num_virtual_tokens,
            encoder_hidden_size=settings.encoder_hidden_size,
            encoder_reparameterization_type=settings.encoder_type,
        )
