"""The LoRA family: one low-rank update per targeted linear layer, differing in scale, init or lr.

All of them read the recipe's top-level ``r``, ``alpha``, ``dropout`` and ``target_modules`` and
save a standard LoRA adapter that merges into the base.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from ..config import TrainSpec
from .base import MethodSettings, PeftMethod, register_method


class LoraFamily(PeftMethod):
    peft_type = "LORA"
    supports_merge = True
    uses_lora_options = True
    smaller_alternative = "qlora"

    @classmethod
    def shares_lane(cls, adapter_config: dict) -> bool:
        # DoRA's magnitude vectors have no place in peft's mixed-batch LoRA forward. Modules saved
        # whole (``modules_to_save``: a trained connector, a composed model's projector) replace the
        # base's own, and the shared lane runs one adapter's rows over merged LoRA weights with the
        # adapters switched off, which would leave them out: such an adapter gets its own lane.
        return not adapter_config.get("use_dora") and not adapter_config.get("modules_to_save")

    @classmethod
    def vllm_refusal(cls, adapter_config: dict) -> str | None:
        if adapter_config.get("use_dora"):
            return ("vLLM cannot serve DoRA adapters (its LoRA kernels have no magnitude vector); "
                    "export it as 'merged' or 'gguf' instead")
        return None

    def lora_options(self, settings: MethodSettings) -> dict[str, Any]:
        """What this variant adds to a plain ``LoraConfig``."""
        return {}

    def module_targets(self, spec: TrainSpec) -> dict[str, list[str]]:
        if spec.target_modules == "all-linear":
            return {}
        return {"train.target_modules": list(spec.target_modules)}

    def peft_config(self, spec: TrainSpec):
        from peft import LoraConfig, TaskType

        return LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=spec.r,
            lora_alpha=spec.alpha,
            lora_dropout=spec.dropout,
            target_modules=spec.target_modules,
            bias="none",
            **self.lora_options(self.settings(spec)),
        )


@register_method
class Lora(LoraFamily):
    name = "lora"
    description = "low-rank update B·A on each targeted linear layer, scaled by alpha/r"


@register_method
class RsLora(LoraFamily):
    name = "rslora"
    description = "LoRA scaled by alpha/sqrt(r), so higher ranks keep learning instead of stalling"

    def lora_options(self, settings):
        return {"use_rslora": True}


@register_method
class Dora(LoraFamily):
    name = "dora"
    description = "LoRA on the direction of each weight plus a trained magnitude vector (weight-decomposed)"

    def lora_options(self, settings):
        return {"use_dora": True}


class _MutatesBase(LoraFamily):
    """PiSSA and OLoRA move part of each base weight into the adapter at init.

    Saved as is, the adapter only reproduces the trained model on top of the *modified* base; peft
    converts it into a plain LoRA (rank 2r) against the original base when ``save_pretrained`` is
    given the adapter as it was at init. The loop calls plain ``save_pretrained``, so the wrapped
    model carries that argument with it.
    """

    def wrap(self, model, spec):
        tuned = super().wrap(model, spec)
        folder = Path(tempfile.mkdtemp(prefix=f"tunewright-{self.name}-init-"))
        tuned.save_pretrained(folder / "initial")
        weakref.finalize(tuned, shutil.rmtree, folder, True)
        tuned.save_pretrained = functools.partial(
            tuned.save_pretrained, path_initial_model_for_weight_conversion=str(folder / "initial")
        )
        return tuned


@register_method
class Pissa(_MutatesBase):
    name = "pissa"
    description = "LoRA initialised from the top singular vectors of each weight (PiSSA); saved as plain LoRA"

    class Settings(MethodSettings):
        svd_iterations: int | None = Field(
            4, ge=1, description="randomised-SVD iterations (fast); null for an exact SVD (slow on big layers)")

    def lora_options(self, settings):
        return {"init_lora_weights": f"pissa_niter_{settings.svd_iterations}" if settings.svd_iterations else "pissa"}


@register_method
class Olora(_MutatesBase):
    name = "olora"
    description = "LoRA initialised from a QR decomposition of each weight (OLoRA); saved as plain LoRA"

    def lora_options(self, settings):
        return {"init_lora_weights": "olora"}


@register_method
class LoraPlus(LoraFamily):
    name = "loraplus"
    description = "LoRA with B trained at loraplus_ratio times the learning rate of A (LoRA+)"
    lora_b_marker: ClassVar[str] = ".lora_B."

    class Settings(MethodSettings):
        loraplus_ratio: float = Field(16.0, gt=0, description="learning rate of lora_B over that of lora_A")

    def optimizer_groups(self, model, spec):
        ratio = self.settings(spec).loraplus_ratio
        a_and_rest, b = [], []
        for name, param in model.named_parameters():
            if param.requires_grad:
                (b if self.lora_b_marker in name else a_and_rest).append(param)
        return [
            {"params": a_and_rest, "lr": spec.learning_rate},
            {"params": b, "lr": spec.learning_rate * ratio},
        ]
