"""The adapter folded into its base: a plain safetensors folder any ``transformers`` install can load."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import TunewrightError
from ..models.loading import BaseModelInfo, load_model
from ..models.stops import stop_token_ids


def merged_model(base: BaseModelInfo, adapter_path: Path | None, load: Callable[[BaseModelInfo], object] = load_model):
    """The base (loaded by ``load``: a vision-language model has its own class) with the adapter merged
    into its weights; the base alone when there is no adapter."""
    from ..methods.attach import load_adapter

    model = load(base)
    if adapter_path is None:
        return model
    attached = load_adapter(model, adapter_path, merge=True)
    if not attached.merged:
        # api.py refuses these up front; this guards callers that come here directly.
        raise TunewrightError(f"adapter of type {attached.peft_type} cannot be merged: {attached.not_merged_because}",
                              file=adapter_path)
    model = attached.model
    model.eval()
    return model


def save_merged(model, tokenizer, folder: Path) -> Path:
    """Weights (safetensors only), config, tokenizer with its chat template, and a stopping generation config."""
    from transformers import GenerationConfig

    folder.mkdir(parents=True, exist_ok=True)
    generation = model.generation_config or GenerationConfig.from_model_config(model.config)
    stops = stop_token_ids(tokenizer, generation)
    generation.eos_token_id = stops[0] if len(stops) == 1 else stops
    if generation.pad_token_id is None and tokenizer.pad_token_id is not None:
        generation.pad_token_id = tokenizer.pad_token_id
    model.generation_config = generation
    # transformers 5 writes safetensors only; nothing pickled reaches the folder.
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pkl"})
    if pickled:
        raise TunewrightError(f"merged export wrote pickled files {pickled}; refusing to ship them", file=folder)
    # The weights arrive owner-only (0600) while config.json gets the usual umask; a server running
    # as another user (ollama, vllm) must be able to read them too.
    mode = (folder / "config.json").stat().st_mode & 0o777
    for weights in folder.glob("*.safetensors"):
        weights.chmod(mode)
    return folder
