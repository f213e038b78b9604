"""Cross-entropy through the output head in chunks, with its gradient computed on the way forward.

The usual ``F.cross_entropy(head(h), y)`` materialises the logits of every labelled position
(rows x 49k vocabulary words) and keeps them, plus their log-softmax, alive until backward. Here
each chunk's logits exist only inside the loop: the loss and d loss / d hidden (softmax minus the
one-hot label, times the head) are computed together and the logits freed before the next chunk.
Peak memory is one chunk of logits whatever the batch, with no recomputation: the gradient costs
the same matrix multiply backward would have done.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK = 1024


class _ChunkedHeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        for start in range(0, hidden.shape[0], chunk):
            h, y = hidden[start : start + chunk], labels[start : start + chunk]
            logits = (h @ weight.t()).float()
            log_norm = torch.logsumexp(logits, dim=-1)
            total += (log_norm - logits.gather(1, y[:, None]).squeeze(1)).sum()
            if not (need_hidden or need_weight):
                continue
            probs = logits.sub_(log_norm[:, None]).exp_()  # softmax, in the logits' own memory
            probs[torch.arange(len(y), device=y.device), y] -= 1.0
            probs = probs.to(hidden.dtype)
            if need_hidden:
                grad_hidden[start : start + chunk] = probs @ weight
            if need_weight:
                grad_weight += (probs.t() @ h).float()
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
        )


def head_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                           chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Summed next-token cross-entropy of ``hidden @ weight.T`` against ``labels`` (no ignored labels).

    ``hidden`` is (positions, d_model), already restricted to positions that carry a label.
    """
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0 + weight.sum() * 0.0  # keeps the graph for a step with nothing to learn
    return _ChunkedHeadCrossEntropy.apply(hidden, weight, labels, chunk)
