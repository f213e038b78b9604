"""A KL penalty to the base model on general text: replay rows trained on the base's distributions.

Replay rows (``replay.py``) are general requests answered by the base model. Trained with plain
cross-entropy, each position pulls the adapter towards the base's *greedy* token only; the base's
second and third choices, which the forgetting KL measures, are free to drift. With
``replay.loss: kl`` the target at every answer position is the base model's own next-token
distribution instead, so the loss there is KL(base || tuned) plus a constant: the penalty to the
base model the literature describes, on text disjoint from the forgetting measurements.

The base is frozen, so its distributions on fixed replay text never change: they are computed once
per run, from the base before the adapter is attached (a PiSSA-style method changes the base
weights it wraps, so "adapter disabled" would not be the base), instead of a second forward pass
every step. Only the ``top_k`` most likely tokens are kept, renormalised: the rest of a 49k
vocabulary carries a few percent of the mass and would cost 200 KB per position.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..data.tokenize import IGNORE_INDEX, EncodedRow


@torch.no_grad()
def base_targets(base_model, rows: Sequence[EncodedRow], which: Sequence[int], top_k: int,
                 device: torch.device, autocast) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """For each row index in ``which``: (ids, probs), both (labelled positions, top_k), in position
    order; the base model's top-k next-token distribution at every position that carries a label."""
    was_training = base_model.training
    base_model.eval()
    targets = {}
    for index in which:
        row = rows[index]
        ids = torch.tensor([row.input_ids], device=device)
        with autocast():
            logits = base_model(input_ids=ids).logits[0, :-1]
        mask = torch.tensor(row.labels[1:], device=device) != IGNORE_INDEX
        top = logits[mask].float().topk(top_k, dim=-1)
        targets[index] = (top.indices.cpu(), torch.softmax(top.values, dim=-1).cpu())
    base_model.train(was_training)
    return targets


def batch_targets(rows: Sequence[EncodedRow], soft: Sequence[tuple[torch.Tensor, torch.Tensor] | None],
                  top_k: int, weight: float = 1.0) -> dict[str, torch.Tensor]:
    """The flat (labelled positions of the batch, top_k) target ids and probabilities, rows in batch
    order, matching the labelled hidden states every layout of ``loop._decoder_hidden`` returns.
    Rows without a distribution get their hard label at probability 1; distributions are scaled by
    ``weight`` (the KL term's coefficient)."""
    all_ids, all_probs = [], []
    for row, targets in zip(rows, soft):
        if targets is not None:
            all_ids.append(targets[0])
            all_probs.append(targets[1] * weight)
            continue
        labels = torch.tensor([y for y in row.labels[1:] if y != IGNORE_INDEX], dtype=torch.long)
        probs = torch.zeros((len(labels), top_k))
        probs[:, 0] = 1.0
        all_ids.append(labels[:, None].expand(-1, top_k))
        all_probs.append(probs)
    return {"target_ids": torch.cat(all_ids), "target_probs": torch.cat(all_probs)}
