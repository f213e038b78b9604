"""Cross-entropy through the output head in chunks, with its gradient computed on the way forward.

The usual ``F.cross_entropy(head(h), y)`` materialises the logits of every labelled position
(rows x 49k vocabulary words) and keeps them, plus their log-softmax, alive until backward. Here
each chunk's logits exist only inside the loop: the loss and d loss / d hidden (softmax minus the
one-hot label, times the head) are computed together and the logits freed before the next chunk.
Peak memory is one chunk of logits whatever the batch, with no recomputation: the gradient costs
the same matrix multiply backward would have done.

Targets may also be distributions (replay rows distilled from the base model's next-token
probabilities): ``labels`` is then (positions, K) token ids with ``probs`` their probabilities,
and the loss is the cross-entropy against that distribution, i.e. KL to it plus a constant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.batching import LOSS_CHUNK as DEFAULT_CHUNK


class _ChunkedHeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int,
                probs: torch.Tensor | None) -> torch.Tensor:
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        for start in range(0, hidden.shape[0], chunk):
            h, y = hidden[start : start + chunk], labels[start : start + chunk]
            p = None if probs is None else probs[start : start + chunk].float()
            logits = (h @ weight.t()).float()
            log_norm = torch.logsumexp(logits, dim=-1)
            if p is None:
                total += (log_norm - logits.gather(1, y[:, None]).squeeze(1)).sum()
            else:  # a row's target probabilities sum to its weight (1 unless the recipe weights it)
                total += (log_norm * p.sum(dim=1) - (logits.gather(1, y) * p).sum(dim=1)).sum()
            if not (need_hidden or need_weight):
                continue
            grad = logits.sub_(log_norm[:, None]).exp_()  # softmax, in the logits' own memory
            if p is None:
                grad[torch.arange(len(y), device=y.device), y] -= 1.0
            else:
                grad.mul_(p.sum(dim=1, keepdim=True)).scatter_add_(1, y, -p)
            grad = grad.to(hidden.dtype)
            if need_hidden:
                grad_hidden[start : start + chunk] = grad @ weight
            if need_weight:
                grad_weight += (grad.t() @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            grad_hidden * grad_output.to(grad_hidden.dtype) if grad_hidden is not None else None,
            (grad_weight * grad_output).to(ctx.weight_dtype) if grad_weight is not None else None,
            None,
            None,
            None,
        )


def head_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                           chunk: int = DEFAULT_CHUNK, probs: torch.Tensor | None = None) -> torch.Tensor:
    """Summed next-token cross-entropy of ``hidden @ weight.T`` against ``labels`` (no ignored labels).

    ``hidden`` is (positions, d_model), already restricted to positions that carry a label.
    ``labels`` is (positions,) token ids, or (positions, K) with ``probs`` (positions, K) the target
    distribution over those ids (a hard label is one id at probability 1, the rest 0); a row whose
    probabilities sum to w counts w times.
    """
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0 + weight.sum() * 0.0  # keeps the graph for a step with nothing to learn
    return _ChunkedHeadCrossEntropy.apply(hidden, weight, labels, chunk, probs)


def soft_cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor | None) -> torch.Tensor:
    """The same loss from logits already computed (heads the chunked path cannot take)."""
    if probs is None:
        return F.cross_entropy(logits.float(), labels, reduction="sum")
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -(log_probs.gather(1, labels) * probs.float()).sum()
