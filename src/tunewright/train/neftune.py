"""NEFTune (Jain et al., arXiv 2310.05914): uniform noise on the input embeddings while training.

Each training forward adds noise drawn from U(-s, s) to every embedding element, with
s = alpha / sqrt(L * d) for rows of L tokens and a hidden size d; evaluation and generation see the
clean embeddings. The paper reports less overfitting to the training phrasings, which is what an
adapter trained on templated questions suffers from when customers word things their own way.

Why not ``transformers``' own hook (``trainer_utils.neftune_post_forward_hook``): it takes L from
the tensor it sees, and our loop feeds the embeddings a shared prefix alone, a packed batch (all rows
end to end) or the rows after the prefix, so L would be wrong by the batch size in two of three
layouts. The loop tells this hook the batch's real row length instead (the mean, since batches are
grouped by length), so the noise is the same whichever layout runs.
"""

from __future__ import annotations

import math

import torch


class EmbeddingNoise:
    """A forward hook on a model's input embeddings; ``remove()`` before saving or generating."""

    def __init__(self, model: torch.nn.Module, alpha: float) -> None:
        embeddings = model.get_input_embeddings()
        self.alpha, self.dim = alpha, embeddings.weight.shape[-1]
        self.scale: float | None = None
        self.handle = embeddings.register_forward_hook(self._add_noise)

    def set_rows(self, attention_mask: torch.Tensor) -> None:
        """The scale for the next forward, from the real (unpadded) length of its rows."""
        mean_length = max(float(attention_mask.sum()) / max(attention_mask.shape[0], 1), 1.0)
        self.scale = self.alpha / math.sqrt(mean_length * self.dim)

    def _add_noise(self, module: torch.nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        if not module.training or not self.scale:
            return output
        return output + torch.empty_like(output).uniform_(-self.scale, self.scale)

    def remove(self) -> None:
        self.handle.remove()
