"""Fused LoRA projections for training: fewer, larger matrix multiplies and no full-size LoRA adds.

PEFT runs each LoRA layer on its own: the frozen projection, then ``B(A(x)) * scaling`` added to
it, i.e. two small matrix multiplies plus a multiply and an add over the whole output. In a Llama
block q/k/v read the same input. Here such a group runs as

    out = addmm(x @ W_cat^T, x @ A_cat^T, blockdiag(B_i * s_i)^T)

one frozen matrix multiply over the concatenated weights, one over the concatenated A's, and the
LoRA update accumulated by the BLAS call itself (beta=1) instead of a separate multiply and add.
Every other plain LoRA projection (o, gate, up, down) gets the same ``addmm`` form alone. The maths is PEFT's exactly; the
module tree, parameter names and saved adapter are untouched, so everything downstream is unaware.

Only plain LoRA layers qualify (any rank, alpha or rsLoRA scaling; PiSSA/OLoRA/LoRA+ are plain
LoRA after initialisation): not DoRA, not dropout > 0 (each projection would need its own mask),
not quantized or biased bases. Anything else keeps PEFT's forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Projections of a Llama-style block that read the same input tensor. gate/up share one too, but
# fusing them measured slower here: a 576x3072 matrix multiply at 272 rows ran at 82 GFLOP/s
# against 92 for each 576x1536 half, and a same-run A/B of training steps agreed (169 tokens/s
# with gate/up fused, 176 without; benchmarks/README.md).
SHARED_INPUT_GROUPS: tuple[tuple[str, ...], ...] = (("q_proj", "k_proj", "v_proj"),)


def _plain_lora(module: nn.Module, autocast: bool = False) -> str | None:
    """The active adapter's name when ``module`` is a LoRA linear layer this file can run, else None.
    ``autocast``: every forward runs under autocast, which brings a lower-precision frozen weight and
    the fp32 LoRA factors to one dtype, so they may differ."""
    from peft.tuners.lora import Linear as LoraLinear

    if not isinstance(module, LoraLinear) or module.merged or module.disable_adapters:
        return None
    active = list(module.active_adapters)
    if len(active) != 1 or active[0] not in module.lora_A:
        return None
    name = active[0]
    base = module.base_layer
    plain = (
        name not in getattr(module, "lora_variant", {})  # DoRA and other variants change the forward
        and not module.use_dora.get(name, False)
        and isinstance(module.lora_dropout[name], nn.Identity)
        and type(base) is nn.Linear
        and base.bias is None
        and not base.weight.requires_grad
        and module.lora_A[name].bias is None
        and module.lora_B[name].bias is None
        and (autocast or module.lora_A[name].weight.dtype == base.weight.dtype)
    )
    return name if plain else None


@dataclass(eq=False)
class _Group:
    """Projections that share one input; computes all their outputs on the first member's call."""

    members: list[nn.Module]
    adapters: list[str]
    weight: torch.Tensor
    widths: list[int]
    _input: torch.Tensor | None = None
    _outputs: list[torch.Tensor] = field(default_factory=list)
    _pending: set[int] = field(default_factory=set)

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        a = [m.lora_A[n].weight for m, n in zip(self.members, self.adapters)]
        b = [m.lora_B[n].weight * m.scaling[n] for m, n in zip(self.members, self.adapters)]
        if len(a) == 1:
            return a[0], b[0]
        return torch.cat(a), torch.block_diag(*b)

    def compute(self, x: torch.Tensor) -> list[torch.Tensor]:
        a, b = self.lora_factors()
        flat = x.reshape(-1, x.shape[-1])
        out = torch.addmm(F.linear(flat, self.weight), F.linear(flat, a), b.t())
        out = out.view(*x.shape[:-1], out.shape[-1])
        if len(self.widths) == 1:
            return [out]
        return list(out.split(self.widths, dim=-1))

    def output(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if x is not self._input or index not in self._pending:
            self._outputs, self._input, self._pending = self.compute(x), x, set(range(len(self.members)))
        self._pending.discard(index)
        result = self._outputs[index]
        if not self._pending:  # every member has its output: hold no activations past this layer
            self._outputs, self._input = [], None
        return result


@dataclass
class FusedProjections:
    groups: list[_Group]

    @property
    def fused_modules(self) -> int:
        return sum(len(g.members) for g in self.groups if len(g.members) > 1)

    def remove(self) -> None:
        """Back to PEFT's own forward (the concatenated base weights stay shared, which is harmless)."""
        for group in self.groups:
            for member in group.members:
                member.__dict__.pop("forward", None)
            group._outputs, group._input = [], None
        self.groups = []


def _make_group(members: Sequence[nn.Module], adapters: Sequence[str]) -> _Group:
    weights = [m.base_layer.weight for m in members]
    if len(members) == 1:
        return _Group(list(members), list(adapters), weights[0], [weights[0].shape[0]])
    # One contiguous frozen matrix; each member's base weight becomes a view into it, so fusing
    # costs no extra memory and the base model's own parameters keep their values.
    fused = torch.cat([w.detach() for w in weights])
    start = 0
    for member, w in zip(members, weights):
        rows = w.shape[0]
        member.base_layer.weight = nn.Parameter(fused[start : start + rows], requires_grad=False)
        start += rows
    return _Group(list(members), list(adapters), fused, [w.shape[0] for w in weights])


def _install(group: _Group) -> None:
    for index, member in enumerate(group.members):
        def forward(x, *args, _index=index, **kwargs):
            return group.output(_index, x)

        member.forward = forward  # instance attribute: shadows the class forward until remove()


def fuse_lora_projections(model: nn.Module, groups: Sequence[Sequence[str]] = SHARED_INPUT_GROUPS, *,
                          autocast: bool = False) -> FusedProjections:
    """Run ``model``'s plain LoRA layers fused (see the module docstring); ``remove()`` undoes it."""
    result = FusedProjections([])
    claimed: set[int] = set()
    for parent in model.modules():
        children = dict(parent.named_children())
        for names in groups:
            if not all(name in children for name in names):
                continue
            members = [children[name] for name in names]
            adapters = [_plain_lora(m, autocast) for m in members]
            if None in adapters or len({(m.base_layer.in_features, m.base_layer.weight.device) for m in members}) != 1:
                continue
            group = _make_group(members, adapters)
            _install(group)
            result.groups.append(group)
            claimed.update(id(m) for m in members)
    for module in model.modules():
        adapter = _plain_lora(module, autocast)
        if adapter is not None and id(module) not in claimed:
            group = _make_group([module], [adapter])
            _install(group)
            result.groups.append(group)
    return result
