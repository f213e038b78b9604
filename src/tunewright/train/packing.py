"""Packing a batch into one sequence: the shared prefix once, then every row's remainder.

Each remainder sees the prefix and its own earlier tokens, nothing of the other rows (a 4D additive
mask: 0 where a query may attend, the dtype's minimum elsewhere), and keeps its own position ids, so
every row's loss is the one it has on its own. The mask is additive, not boolean, because eager
attention adds a 4D mask to the scores: a boolean one there is added as 0/1 and masks nothing
(measured on tiny random models: a packed row's logits differed from the row alone by 0.19 on Llama
and 0.32 on Gemma 2 under eager with a boolean mask, 1e-7 with the additive one; sdpa takes either). Against
the padded batch with the prefix's key/value cache repeated per row (``loop._decoder_hidden``) this
drops the separate prefix pass, the per-layer cache copies and any padding: measured 9% faster on
the demo (``benchmarks/README.md``).

The price is attention over the whole packed sequence: the dense mask makes it quadratic in the
batch's total tokens rather than in each row's length. ``packing_pays`` packs only while that extra
attention work stays a small share of the batch's matrix multiplies, so long rows or big batches
keep the padded layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.tokenize import IGNORE_INDEX
from ..models.layers import head_dim_of, kv_heads_of

# Extra attention FLOPs packing may add, as a share of the batch's linear-layer FLOPs. The demo's
# batches (8 rows, ~300 packed tokens) add about 8% and still train 9% faster packed.
MAX_EXTRA_ATTENTION_SHARE = 0.15
MASKED_ATTENTION = ("sdpa", "eager")  # kernels that honour an arbitrary 4D additive mask


@dataclass(frozen=True)
class PackedBatch:
    input_ids: torch.Tensor  # (1, T)
    position_ids: torch.Tensor  # (1, T)
    attention_mask: torch.Tensor  # (1, 1, T, T) additive: 0 where a query may attend to a key, else the minimum
    allowed: torch.Tensor  # (T, T) bool: True where a query may attend to a key
    targets: torch.Tensor  # (1, T) the next token's label within the same row, IGNORE_INDEX elsewhere
    segments: torch.Tensor  # (T,) -1 for the prefix, else the row index


def pack_after_prefix(batch: dict[str, torch.Tensor], prefix_len: int, dtype: torch.dtype = torch.float32) -> PackedBatch:
    """Lay out a right-padded batch whose rows share their first ``prefix_len`` tokens; the mask is
    in ``dtype``, the model's (sdpa wants the query's dtype).

    The position right after the prefix carries no label (``shared_prefix_length`` guarantees it),
    so the prefix's own outputs need no target.
    """
    input_ids, labels = batch["input_ids"], batch["labels"]
    device = input_ids.device
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    ids = [input_ids[0, :prefix_len]]
    positions = [torch.arange(prefix_len, device=device)]
    segments = [torch.full((prefix_len,), -1, device=device)]
    targets = [torch.full((prefix_len,), IGNORE_INDEX, device=device)]
    for row, length in enumerate(lengths):
        ids.append(input_ids[row, prefix_len:length])
        positions.append(torch.arange(prefix_len, length, device=device))
        segments.append(torch.full((length - prefix_len,), row, device=device))
        end = torch.full((1,), IGNORE_INDEX, device=device)  # a row's last token predicts nothing
        targets.append(torch.cat([labels[row, prefix_len + 1 : length], end]))
    segment = torch.cat(segments)
    order = torch.arange(len(segment), device=device)
    causal = order[None, :] <= order[:, None]
    same_row_or_prefix = (segment[None, :] == segment[:, None]) | (segment[None, :] == -1)
    allowed = causal & same_row_or_prefix
    additive = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    return PackedBatch(
        input_ids=torch.cat(ids)[None],
        position_ids=torch.cat(positions)[None],
        attention_mask=additive[None, None],
        allowed=allowed,
        targets=torch.cat(targets)[None],
        segments=segment,
    )


def supports_packing(config, lengths: list[int] | None = None) -> bool:
    """Whether the packed mask gives every row exactly the attention it has alone. A custom 4D mask
    replaces the model's own, sliding window included (Mistral, Gemma 2/3, Phi-3; Gemma 2 alternates
    windowed and global layers, which one mask cannot express), so rows longer than the window are
    not packed: shorter ones never reach it."""
    if (getattr(config, "_attn_implementation", None) or "sdpa") not in MASKED_ATTENTION:  # unset: the sdpa default
        return False
    window = getattr(config, "sliding_window", None)
    return not (window and lengths and max(lengths) > window)


def packing_pays(config, lengths: list[int], prefix_len: int,
                 max_extra_share: float = MAX_EXTRA_ATTENTION_SHARE) -> bool:
    """Whether packing adds little enough attention work to beat the padded shared-prefix layout."""
    if not supports_packing(config, lengths) or len(lengths) < 2:
        return False
    layers, hidden = config.num_hidden_layers, config.hidden_size
    heads, kv_heads, head_dim = config.num_attention_heads, kv_heads_of(config), head_dim_of(config)
    query_width = heads * head_dim
    linear_per_layer = (hidden * query_width * 2 + hidden * kv_heads * head_dim * 2
                        + 3 * hidden * config.intermediate_size)
    packed = prefix_len + sum(n - prefix_len for n in lengths)
    width = max(lengths)
    # Score and value products, forward: every packed query against every packed key, versus each
    # padded row's remainder against its full width.
    extra_attention = 4 * layers * query_width * (packed * packed - len(lengths) * (width - prefix_len) * width)
    linear = 2 * layers * linear_per_layer * packed
    return extra_attention <= max_extra_share * linear
