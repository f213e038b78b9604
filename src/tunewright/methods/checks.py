"""Refuse a recipe whose method options cannot work, before any training step; count what trains."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import TrainSpec
from ..errors import TunewrightError
from .base import METHODS, PeftMethod, get_method

# Top-level recipe options only the LoRA family reads, and what to call them in an error.
LORA_OPTIONS = {"r": "a LoRA rank", "alpha": "a LoRA alpha", "dropout": "a LoRA dropout",
                "target_modules": "LoRA target modules"}


def _lora_family() -> list[str]:
    return [name for name in METHODS.names() if METHODS.get_class(name).uses_lora_options]


def _module_matches(target: str, module_names: list[str]) -> bool:
    # peft's rule for a list of names: the full module path, or its dotted suffix.
    return any(name == target or name.endswith("." + target) for name in module_names)


def linear_module_names(model) -> list[str]:
    """Distinct short names of the model's linear layers, output head excluded (what a recipe may target)."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module is not head}
    return sorted(names)


def check_method(spec: TrainSpec, model=None) -> PeftMethod:
    """Everything about ``train.method`` that can be wrong, checked before training starts.

    Without ``model``: the method exists, its settings validate, this machine can run it, and no
    option of another method family is set. With the loaded base ``model``: every named target
    module exists in it and the method supports its architecture.
    """
    method = get_method(spec.method)
    settings = method.settings(spec)
    method.check_environment()
    if not method.uses_lora_options:
        for option, what in LORA_OPTIONS.items():
            # Only values a person changed: `tunewright init` writes every default into the recipe.
            default = TrainSpec.model_fields[option].default
            if option in spec.model_fields_set and getattr(spec, option) != default:
                own = ", ".join(type(settings).model_fields) or "none"
                raise TunewrightError(
                    f"{what} on {spec.method}: '{option}' applies only to the LoRA family "
                    f"({', '.join(_lora_family())}); remove it, or use {spec.method}'s own "
                    f"train.method_settings (its settings: {own})",
                    field=f"train.{option}",
                )
    if model is not None:
        module_names = [name for name, _ in model.named_modules()]
        for field, targets in method.module_targets(spec).items():
            missing = [t for t in targets if not _module_matches(t, module_names)]
            if missing:
                raise TunewrightError(
                    f"target module{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} "
                    f"match{'' if len(missing) > 1 else 'es'} nothing in the model "
                    f"(its linear modules: {', '.join(linear_module_names(model))})",
                    field=field,
                )
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        virtual = getattr(settings, "num_virtual_tokens", 0) or 0  # prompt learning spends context on them
        if context and spec.max_length + virtual > context:
            extra = f" plus {virtual} virtual tokens" if virtual else ""
            raise TunewrightError(
                f"max_length {spec.max_length}{extra} is beyond the model's context of {context} tokens",
                field="train.max_length",
            )
        method.check_model(model, spec)
    return method


def parameter_counts(model) -> dict[str, float]:
    """Trainable and total parameters of a wrapped model, and the trainable share."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        params = list(model.parameters())
        trainable, total = sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
    return {"trainable_params": int(trainable), "total_params": int(total),
            "trainable_share": trainable / total if total else 0.0}


@dataclass(frozen=True)
class MergePolicy:
    peft_type: str
    methods: tuple[str, ...]  # tunewright methods that save this peft_type
    mergeable: bool
    reason: str  # why not, when not mergeable


def merge_policy(peft_type: str) -> MergePolicy:
    """Whether an adapter of this ``peft_type`` (from adapter_config.json) folds into the base weights."""
    owners = methods_saving(peft_type)
    if not owners:
        return MergePolicy(peft_type, (), False, f"tunewright has no method that saves peft type {peft_type}")
    mergeable = all(cls.supports_merge for cls in owners)
    refusal = next((cls.merge_refusal for cls in owners if not cls.supports_merge), "")
    return MergePolicy(peft_type, tuple(cls.name for cls in owners), mergeable, refusal)


def methods_saving(peft_type: str) -> list[type]:
    """The method classes whose adapters carry this ``peft_type`` in adapter_config.json."""
    return [cls for cls in (METHODS.get_class(name) for name in METHODS.names()) if cls.peft_type == peft_type]


def adapter_shares_lane(adapter_config: dict) -> bool:
    """Whether every method that saves this adapter's peft type lets it share the server's lane."""
    owners = methods_saving(str(adapter_config.get("peft_type")))
    return bool(owners) and all(cls.shares_lane(adapter_config) for cls in owners)


def vllm_refusal(adapter_config: dict) -> str | None:
    """Why vLLM cannot serve this saved adapter; None when every method saving its type allows it."""
    owners = methods_saving(str(adapter_config.get("peft_type")))
    if not owners:  # no method of ours saves it: the default answer, as for any non-LoRA method
        return PeftMethod.vllm_refusal(adapter_config)
    return next((reason for reason in (cls.vllm_refusal(adapter_config) for cls in owners) if reason), None)
