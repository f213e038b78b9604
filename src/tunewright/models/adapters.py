"""Resolve a model reference (``base``, a registered adapter, an adapter folder) and load it for inference."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import NotFoundError, TunewrightError
from .loading import BaseModelInfo, load_model, load_tokenizer, prepare_base_model

BASE_REF = "base"


@dataclass(frozen=True)
class ResolvedRef:
    ref: str
    base: BaseModelInfo
    adapter_path: Path | None
    adapter_id: int | None = None


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "~", "/")) or "/" in ref or "\\" in ref


def _adapter_folder(ref: str, base_model: str) -> ResolvedRef:
    folder = Path(ref).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise TunewrightError("not a PEFT adapter folder (no adapter_config.json)", file=folder)
    return ResolvedRef(ref=ref, base=prepare_base_model(base_model), adapter_path=folder.resolve())


def resolve_ref(ref: str, *, base_model: str, registry=None) -> ResolvedRef:
    """``base``; a folder written as a path (``./x``, ``runs/x``, ``/abs/x``); else a registered
    adapter, ``name`` (its latest version) or ``name@version``.

    A bare name means the registered adapter even when a folder of that name sits in the current
    directory (a workspace's source folder is often named like its adapter); only when no adapter of
    that name is registered is a bare name read as an adapter folder.
    """
    if ref == BASE_REF:
        return ResolvedRef(ref=ref, base=prepare_base_model(base_model), adapter_path=None)
    if _looks_like_path(ref):
        return _adapter_folder(ref, base_model)
    from ..registry.deploy import split_adapter_ref

    try:
        if registry is None:
            raise NotFoundError(f"model '{ref}' is neither 'base' nor an adapter folder")
        record = registry.get_adapter(*split_adapter_ref(ref))
    except NotFoundError as exc:
        if not Path(ref).is_dir():
            raise
        if (Path(ref) / "adapter_config.json").is_file():
            return _adapter_folder(ref, base_model)
        raise NotFoundError(f"{exc}; the folder ./{ref} is no PEFT adapter folder (no adapter_config.json): "
                            f"a bare name means a registered adapter, write an adapter folder as a path "
                            f"(./{ref}/...)") from None
    base = prepare_base_model(record.base_model_ref)
    if record.base_model_sha256 and base.sha256 != record.base_model_sha256:
        raise TunewrightError(
            f"adapter '{ref}' was trained on base weights {record.base_model_sha256[:12]}, "
            f"but '{record.base_model_ref}' now has {base.sha256[:12]}"
        )
    path = Path(record.path)
    if not (path / "adapter_config.json").is_file():
        raise NotFoundError(f"adapter '{ref}' is registered but its files are missing", file=path)
    return ResolvedRef(ref=ref, base=base, adapter_path=path, adapter_id=record.id)


@dataclass(frozen=True)
class AttachedAdapter:
    model: object  # a merged plain model, or the PeftModel when the method cannot merge
    peft_type: str
    merged: bool
    not_merged_because: str | None = None


def _peft_type(adapter_path: Path) -> str:
    try:
        return json.loads((adapter_path / "adapter_config.json").read_text())["peft_type"]
    except (OSError, ValueError, KeyError) as exc:
        raise TunewrightError(f"unreadable adapter_config.json: {exc}", file=adapter_path) from None


def load_adapter(model, adapter_path: Path, *, merge: bool = True) -> AttachedAdapter:
    """Load a saved adapter onto ``model``; merge it where its method allows, and say whether it did."""
    from peft import PeftModel

    from ..train.methods import merge_policy
    from ..train.methods.bottleneck import register_with_peft

    peft_type = _peft_type(adapter_path)
    register_with_peft()  # our own adapter type must be known to peft before it reads the config
    tuned = PeftModel.from_pretrained(model, adapter_path)
    tuned.eval()
    if tuned.active_peft_config.is_prompt_learning:
        from ..train.methods.prompt import fix_generation_cache

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
    from ..train.methods import merge_policy

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
