"""Fused LoRA projections and the chunked head loss compute exactly what PEFT and F.cross_entropy do."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunewright.config import TrainSpec
from tunewright.models import load_model, prepare_base_model
from tunewright.train.fused import fuse_lora_projections
from tunewright.train.losses import head_cross_entropy_sum
from tunewright.methods import get_method


@pytest.fixture(scope="module")
def tiny_base(tiny_model_dir):
    return prepare_base_model(str(tiny_model_dir))


def _wrapped(tiny_base, method="lora", **fields):
    spec = TrainSpec(method=method, r=4, alpha=8, **fields)
    model = get_method(method).wrap(load_model(tiny_base), spec)
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the LoRA path visible in the outputs
            p.data.normal_(std=0.1)
    return model.train()


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["lora", "rslora", "pissa"])
def test_fused_projections_match_peft_in_loss_and_gradients(tiny_base, method):
    model = _wrapped(tiny_base, method)
    ids = torch.randint(0, 100, (3, 12))
    expected_loss, expected_grads = _loss_and_grads(model, ids)
    names_before = [n for n, _ in model.named_parameters()]
    fused = fuse_lora_projections(model)
    assert fused.fused_modules == 3 * 2  # q/k/v in each of the tiny model's 2 layers
    assert [n for n, _ in model.named_parameters()] == names_before  # the module tree is untouched
    loss, grads = _loss_and_grads(model, ids)
    assert torch.allclose(loss, expected_loss, atol=1e-6)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, expected_grads[name], atol=1e-5), name
    fused.remove()
    assert all("forward" not in m.__dict__ for m in model.modules())
    loss_after, _ = _loss_and_grads(model, ids)
    assert torch.allclose(loss_after, expected_loss, atol=1e-6)


def test_fused_group_recomputes_when_a_member_is_called_on_other_input(tiny_base):
    model = _wrapped(tiny_base)
    attention = model.base_model.model.model.layers[0].self_attn
    x, y = torch.randn(2, 5, attention.q_proj.in_features), torch.randn(2, 5, attention.q_proj.in_features)
    expected = [attention.k_proj(y), attention.q_proj(x), attention.v_proj(x), attention.q_proj(x)]
    fuse_lora_projections(model)
    got = [attention.k_proj(y), attention.q_proj(x), attention.v_proj(x), attention.q_proj(x)]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, expected))


@pytest.mark.parametrize(("method", "fields"), [("dora", {}), ("lora", {"dropout": 0.1}), ("ia3", {"r": 16, "alpha": 32})])
def test_layers_that_are_not_plain_lora_keep_peft_forward(tiny_base, method, fields):
    spec_fields = {"r": 4, "alpha": 8, **fields}
    model = get_method(method).wrap(load_model(tiny_base), TrainSpec(method=method, **spec_fields))
    assert fuse_lora_projections(model).groups == []


def test_chunked_head_loss_matches_cross_entropy_and_its_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    labels = torch.randint(0, 50, (37,))
    expected = F.cross_entropy(hidden @ weight.t(), labels, reduction="sum")
    expected.backward(torch.tensor(0.5))
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    got = head_cross_entropy_sum(hidden, weight, labels, chunk=8)  # 37 rows: four full chunks and a partial
    got.backward(torch.tensor(0.5))
    assert torch.allclose(got, expected, atol=1e-4)
    assert torch.allclose(hidden.grad, grads[0], atol=1e-5)
    assert torch.allclose(weight.grad, grads[1], atol=1e-5)
    frozen = weight.detach()
    hidden.grad = None
    head_cross_entropy_sum(hidden, frozen, labels, chunk=8).backward()
    assert hidden.grad is not None and frozen.grad is None


def test_chunked_head_loss_without_labels_is_zero_and_differentiable():
    hidden = torch.randn(0, 8, requires_grad=True)
    loss = head_cross_entropy_sum(hidden, torch.randn(10, 8), torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0
