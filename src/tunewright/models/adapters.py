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


def resolve_ref(ref: str, *, base_model: str, registry=None) -> ResolvedRef:
    """``base``; else a folder holding adapter_config.json; else an adapter name in the registry."""
    if ref == BASE_REF:
        return ResolvedRef(ref=ref, base=prepare_base_model(base_model), adapter_path=None)
    folder = Path(ref)
    if folder.is_dir():
        config_file = folder / "adapter_config.json"
        if not config_file.is_file():
            raise TunewrightError("not a PEFT adapter folder (no adapter_config.json)", file=folder)
        return ResolvedRef(ref=ref, base=prepare_base_model(base_model), adapter_path=folder.resolve())
    if registry is None:
        raise NotFoundError(f"model '{ref}' is neither 'base' nor an adapter folder")
    record = registry.get_adapter(ref)
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


def attach_adapter(model, adapter_path: Path, *, merge: bool = True):
    from peft import PeftModel

    try:
        peft_type = json.loads((adapter_path / "adapter_config.json").read_text())["peft_type"]
    except (OSError, ValueError, KeyError) as exc:
        raise TunewrightError(f"unreadable adapter_config.json: {exc}", file=adapter_path) from None
    tuned = PeftModel.from_pretrained(model, adapter_path)
    tuned.eval()
    # Merged LoRA weights generate at base-model speed; methods that cannot merge stay wrapped.
    if merge and peft_type in {"LORA", "IA3"}:
        return tuned.merge_and_unload()
    return tuned


def load_for_inference(resolved: ResolvedRef):
    tokenizer = load_tokenizer(resolved.base, padding_side="left")
    model = load_model(resolved.base)
    if resolved.adapter_path is not None:
        model = attach_adapter(model, resolved.adapter_path)
    return model, tokenizer
