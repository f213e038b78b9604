"""Attach a saved adapter to a loaded base model for inference, merged where its method allows.

Here and not in ``models`` because it needs each method's knowledge (can it merge, does peft know
its type, does generation need a fix); ``models`` only finds and reads the folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import TunewrightError
from ..models.adapters import ResolvedRef, read_adapter_config
from ..models.loading import load_model, load_tokenizer
@dataclass(frozen=True)
class AttachedAdapter:
    model: object  # a merged plain model, or the PeftModel when the method cannot merge
    peft_type: str
    merged: bool
    not_merged_because: str | None = None


def load_adapter(model, adapter_path: Path, *, merge: bool = True) -> AttachedAdapter:
    """Load a saved adapter onto ``model``; merge it where its method allows, and say whether it did."""
    from peft import PeftModel

    from .bottleneck import register_with_peft
    from .checks import merge_policy

    peft_type = str(read_adapter_config(adapter_path)["peft_type"])
    register_with_peft()  # our own adapter type must be known to peft before it reads the config
    tuned = PeftModel.from_pretrained(model, adapter_path)
    tuned.eval()
    if tuned.active_peft_config.is_prompt_learning:
        from .prompt import fix_generation_cache

        fix_generation_cache(tuned)
    policy = merge_policy(peft_type)
    # Merged weights generate at base-model speed; methods that cannot merge stay wrapped, and
    # peft's generate handles their virtual tokens or extra modules.
    if merge and policy.mergeable:
        return AttachedAdapter(tuned.merge_and_unload(), peft_type, merged=True)
    reason = "merging not asked for" if not merge else policy.reason
    return AttachedAdapter(tuned, peft_type, merged=False, not_merged_because=reason)


def attach_adapter(model, adapter_path: Path, *, merge: bool = True):
    """The model with the adapter loaded (merged where possible); ``load_adapter`` also says which."""
    return load_adapter(model, adapter_path, merge=merge).model


def merge_adapter(model):
    """Fold a loaded adapter into the base weights, or say clearly why its method cannot be."""
    from .checks import merge_policy

    if getattr(model, "active_peft_config", None) is None:
        raise TunewrightError("the model has no adapter loaded; nothing to merge")
    peft_type = str(getattr(model.active_peft_config.peft_type, "value", model.active_peft_config.peft_type))
    policy = merge_policy(peft_type)
    if not policy.mergeable:
        method = "/".join(policy.methods) or peft_type
        raise TunewrightError(f"method {method} cannot be merged into the base: {policy.reason}")
    return model.merge_and_unload()


def load_for_inference(resolved: ResolvedRef):
    tokenizer = load_tokenizer(resolved.base, padding_side="left")
    model = load_model(resolved.base)
    if resolved.adapter_path is not None:
        model = attach_adapter(model, resolved.adapter_path)
    return model, tokenizer
