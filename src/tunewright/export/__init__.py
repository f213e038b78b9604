"""Export a trained adapter (on its base model) to formats other engines load, and prove parity.

``export_adapter`` writes any of: a merged safetensors folder (plain ``transformers``), a GGUF
(llama.cpp, Ollama, transformers' GGUF reader), an Ollama Modelfile, and a vLLM multi-LoRA launch
script; with ``check=True`` it reloads the files from disk and compares them with the adapter.
"""

from __future__ import annotations

from .api import EXPORT_FORMATS, ExportResult, export_adapter

__all__ = ["EXPORT_FORMATS", "ExportResult", "export_adapter"]
