"""Base models: find them on local disk, convert GGUF once, load model and tokenizer."""

from .loading import BaseModelInfo, cache_root, load_model, load_tokenizer, prepare_base_model
from .resolve import ModelSource, register_known_model, resolve_model

__all__ = [
    "BaseModelInfo",
    "ModelSource",
    "cache_root",
    "load_model",
    "load_tokenizer",
    "prepare_base_model",
    "register_known_model",
    "resolve_model",
]
