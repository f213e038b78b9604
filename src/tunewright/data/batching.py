"""Deterministic, length-grouped batch plans.

Grouping rows of similar length into a batch cuts the padding a CPU would otherwise spend
matrix multiplies on; shuffling inside large windows and then shuffling the batches keeps the
order random enough for SGD. Everything derives from (seed, epoch), so a resumed run replays
exactly the same batches as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .tokenize import IGNORE_INDEX, EncodedRow

WINDOW_BATCHES = 16


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * WINDOW_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def plan_micro_batches(
    lengths: Sequence[int], batch_size: int, epochs: float, seed: int, max_steps: int | None, grad_accum: int
) -> list[list[list[int]]]:
    """Return optimizer steps, each a list of micro-batches of row indices."""
    per_epoch = math.ceil(len(lengths) / batch_size)
    total_micro = max(1, round(epochs * per_epoch))
    if max_steps is not None:
        total_micro = max_steps * grad_accum
    micro: list[list[int]] = []
    epoch = 0
    while len(micro) < total_micro:
        micro.extend(epoch_batches(lengths, batch_size, seed, epoch))
        epoch += 1
    micro = micro[:total_micro]
    return [micro[i : i + grad_accum] for i in range(0, len(micro), grad_accum)]


# Shared with the planner, which predicts what the training loop will do with the same rows.

# Positions whose logits the training loss materialises at once (``train/losses.py``); the
# planner counts that chunk's memory.
LOSS_CHUNK = 1024
MIN_SHARED_PREFIX = 4


def shared_prefix_length(rows: Sequence[EncodedRow]) -> int:
    """Leading tokens every row shares and no row trains on (the system prompt and turn header).

    The position right after the prefix must be unlabelled too: its prediction would come from
    the prefix's last hidden state, which the shared pass does not project onto the vocabulary.
    """
    first = rows[0].input_ids
    limit = min(len(r.input_ids) for r in rows) - 1
    for row in rows:
        first_label = next((i for i, label in enumerate(row.labels) if label != IGNORE_INDEX), len(row.labels))
        limit = min(limit, first_label - 1)
        same = 0
        while same < limit and row.input_ids[same] == first[same]:
            same += 1
        limit = same
    return max(limit, 0)
