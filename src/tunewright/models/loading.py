"""Load base models and tokenizers from local files; GGUF is converted once into a safetensors cache."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import TunewrightError
from ..io import atomic_dir, recover_dir, sha256_file
from .resolve import ModelSource, resolve_model

log = logging.getLogger(__name__)
CACHE_ENV = "TUNEWRIGHT_CACHE"
_META = "tunewright-source.json"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tunewright")


@dataclass(frozen=True)
class BaseModelInfo:
    ref: str
    folder: Path  # a Hugging Face folder with safetensors weights and the tokenizer
    sha256: str  # of the original weights file(s): what lineage records


def _weights_sha256(folder: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    for weights in files:
        digest.update(weights.name.encode())
        digest.update(bytes.fromhex(sha256_file(weights)))
    return digest.hexdigest()


def _convert_gguf(source: ModelSource) -> BaseModelInfo:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_sha = sha256_file(source.path)
    target = recover_dir(cache_root() / "models" / f"{source.path.stem}-{gguf_sha[:12]}")
    if (target / _META).is_file():
        return BaseModelInfo(ref=source.ref, folder=target, sha256=gguf_sha)
    folder, name = source.path.parent, source.path.name
    log.info("converting %s to safetensors once (about a minute); later loads take seconds", name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                     local_files_only=True)
    except Exception as exc:  # the GGUF reader raises many types for a corrupt file
        raise TunewrightError(f"cannot read GGUF model: {exc}", file=source.path) from None
    # A GGUF-loaded model refuses save_pretrained while it remembers its quantizer; the weights are
    # already dequantised to fp32, so forgetting it is safe.
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        del model.hf_quantizer
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _META).write_text(json.dumps({"gguf": str(source.path), "sha256": gguf_sha}, indent=2))
    return BaseModelInfo(ref=source.ref, folder=target, sha256=gguf_sha)


def check_architecture(config_path: Path) -> None:
    """Refuse, before any heavy work, a folder whose model transformers cannot build as a text
    generator: one line naming config.json's model_type and what to do."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    import transformers

    from .vision import VISION_FAMILIES, read_model_type

    model_type = read_model_type(config_path)
    if model_type not in CONFIG_MAPPING_NAMES:
        raise TunewrightError(f"model_type '{model_type}' is not an architecture transformers "
                              f"{transformers.__version__} knows; use a model transformers supports "
                              "(custom modelling code is not run)", file=config_path, field="model_type")
    if model_type in VISION_FAMILIES:
        raise TunewrightError(f"model_type '{model_type}' is a vision-language model; set train.vision in the recipe "
                              "to train it on rows with images", file=config_path, field="model_type")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise TunewrightError(f"model_type '{model_type}' is not a text-generation (causal LM) architecture; "
                              "Tunewright fine-tunes decoder models such as Llama, Qwen, Mistral, Gemma or Phi",
                              file=config_path, field="model_type")


def prepare_base_model(ref: str, *, vision: bool = False) -> BaseModelInfo:
    """Resolve ``ref`` to a loadable folder, converting a GGUF file on first use. ``vision``: the
    folder must hold a vision-language model of a family ``models.vision`` knows."""
    source = resolve_model(ref)
    if vision:
        from .vision import find_family

        if source.kind == "gguf":
            raise TunewrightError("a vision-language model loads from a Hugging Face folder, not a GGUF file",
                                  field="base_model")
        find_family(source.path)
    elif source.kind == "gguf":
        return _convert_gguf(source)
    else:
        check_architecture(source.path / "config.json")
    return BaseModelInfo(ref=source.ref, folder=source.path, sha256=_weights_sha256(source.path))


def load_tokenizer(info: BaseModelInfo, *, padding_side: str = "right"):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(info.folder, local_files_only=True)
    if tokenizer.chat_template is None:
        raise TunewrightError("model has no chat template; Tunewright needs the model's own template", file=info.folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_model(info: BaseModelInfo, *, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    # fp32 on CPU: without bf16 hardware, bf16 matmuls here run hundreds of times slower.
    model = AutoModelForCausalLM.from_pretrained(info.folder, dtype=dtype, local_files_only=True)
    model.eval()
    return model
