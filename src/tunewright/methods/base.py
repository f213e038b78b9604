"""The method contract: hooks the training loop calls, typed settings, and what merging means.

The loop calls only the hooks on ``PeftMethod``; a method overrides the ones it needs (QLoRA loads
a quantised base, LoRA+ gives B its own learning rate, a method peft lacks wraps the model itself)
and inherits the rest. Its recipe options live in ``train.method_settings`` and are validated by
its nested ``Settings`` model, so a typo is refused before a base model is even loaded.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..config import TrainSpec
from ..plugins import PluginRegistry

METHODS: PluginRegistry["PeftMethod"] = PluginRegistry("PEFT method", recipe_field="train.method", group="methods")
SETTINGS_FIELD = "train.method_settings"


class MethodSettings(BaseModel):
    """Base for every method's settings: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class PeftMethod:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    # The peft_type written to adapter_config.json: how a saved adapter finds its method again.
    peft_type: ClassVar[str | None] = None
    supports_merge: ClassVar[bool] = False
    # Why the adapter cannot be folded into the base weights, for methods that cannot.
    merge_refusal: ClassVar[str] = "this method does not describe a change to the base weights"
    # Whether the top-level r/alpha/dropout/target_modules of the recipe mean anything to it.
    uses_lora_options: ClassVar[bool] = False
    # Whether training holds the base weights quantised (the planner counts activations in bf16 then).
    quantized_base: ClassVar[bool] = False
    # The method the planner may switch to on a GPU too small for this one (LoRA -> QLoRA); None: none.
    smaller_alternative: ClassVar[str | None] = None
    # Lines a plain-peft user runs before ``PeftModel.from_pretrained`` (a peft type peft lacks).
    load_prelude: ClassVar[tuple[str, ...]] = ()
    Settings: ClassVar[type[MethodSettings]] = MethodSettings

    # -- what other stages ask about a method (the planner, the server, the exporters) ------------

    @classmethod
    def weight_bytes(cls, n_params: int, linear_params: int, dtype_bytes: int) -> int:
        """Bytes the base weights take while training: every parameter at the training dtype."""
        return int(n_params * dtype_bytes)

    @classmethod
    def shares_lane(cls, adapter_config: dict) -> bool:
        """Whether the server may batch a saved adapter with others on one shared base (peft's
        multi-adapter LoRA batching); otherwise it gets a lane of its own."""
        return False

    @classmethod
    def vllm_refusal(cls, adapter_config: dict) -> str | None:
        """Why vLLM cannot serve a saved adapter as a LoRA module; None when it can."""
        return (f"vLLM serves LoRA adapters only (multi-LoRA); this adapter is {adapter_config.get('peft_type')}; "
                "export it as 'merged' or 'gguf' instead")

    def settings(self, spec: TrainSpec) -> MethodSettings:
        """The recipe's ``method_settings`` validated; errors name ``train.method_settings.<field>``."""
        return METHODS.settings_for(self.name, spec.method_settings, SETTINGS_FIELD)

    def check_environment(self) -> None:
        """Refuse early when this machine cannot run the method at all (QLoRA without CUDA)."""

    def module_targets(self, spec: TrainSpec) -> dict[str, list[str]]:
        """Module names the method will adapt, keyed by the recipe field that names them.

        ``check_method`` refuses names that match nothing in the model: peft would either fail deep
        inside injection or, worse, quietly train fewer modules than the recipe asked for.
        """
        return {}

    def check_model(self, model, spec: TrainSpec) -> None:
        """Model-specific checks that must fail before training (architecture support, layer counts)."""

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
