"""Replay rows trained on the base model's distributions (replay.loss: kl): the targets are the base's,
the loss is cross-entropy against them in every batch layout, and it keeps the adapter closer to the base."""

from __future__ import annotations

import contextlib

import pytest
import torch

from tunewright.config import ReplaySpec, TrainSpec
from tunewright.data.schema import ChatRow
from tunewright.models import prepare_base_model
from tunewright.train.distill import base_targets, batch_targets
from tunewright.data.batching import shared_prefix_length
from tunewright.train.loop import supervised_loss_sum, train_adapter
from tunewright.train.losses import head_cross_entropy_sum
from tunewright.data.tokenize import collate, encode_chat

from helpers import qa_rows


def test_chunked_soft_cross_entropy_matches_autograd_reference():
    torch.manual_seed(0)
    hidden = torch.randn(7, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    ids = torch.randint(0, 50, (7, 5))
    probs = torch.softmax(torch.randn(7, 5), dim=-1)
    loss = head_cross_entropy_sum(hidden, weight, ids, chunk=3, probs=probs)
    loss.backward()
    got = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    reference = -(torch.log_softmax(hidden @ weight.t(), dim=-1).gather(1, ids) * probs).sum()
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert torch.allclose(got[0], hidden.grad, atol=1e-5) and torch.allclose(got[1], weight.grad, atol=1e-4)
    # A distribution scaled by w counts w times: loss and gradients scale with it.
    hidden.grad, weight.grad = None, None
    twice = head_cross_entropy_sum(hidden, weight, ids, chunk=3, probs=2.5 * probs)
    twice.backward()
    assert twice.item() == pytest.approx(2.5 * reference.item(), rel=1e-5)
    assert torch.allclose(hidden.grad, 2.5 * got[0], atol=1e-4)
    # A one-hot distribution is the hard label.
    labels = torch.randint(0, 50, (7,))
    one_hot = torch.zeros(7, 5)
    one_hot[:, 0] = 1
    soft = head_cross_entropy_sum(hidden, weight, labels[:, None].expand(-1, 5), probs=one_hot)
    assert soft.item() == pytest.approx(head_cross_entropy_sum(hidden, weight, labels).item(), rel=1e-6)


def _encoded(tokenizer, n):
    return [encode_chat(tokenizer, [m.model_dump() for m in r.messages], 128) for r in qa_rows(n)]


def test_base_targets_are_the_base_models_top_k_at_each_answer_position(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = _encoded(tokenizer, 3)
    targets = base_targets(model, rows, [0, 2], 4, torch.device("cpu"), contextlib.nullcontext)
    assert set(targets) == {0, 2}
    row = rows[2]
    logits = model(input_ids=torch.tensor([row.input_ids])).logits[0]
    answer_positions = [i - 1 for i, y in enumerate(row.labels) if y != -100]  # position i-1 predicts token i
    ids, probs = targets[2]
    assert ids.shape == (len(answer_positions), 4)
    for k, pos in enumerate(answer_positions):
        full = torch.softmax(logits[pos], dim=-1)
        expected = full.topk(4).indices
        assert torch.equal(ids[k], expected)
        assert torch.allclose(probs[k], full[expected] / full[expected].sum(), atol=1e-5)


@pytest.mark.parametrize("packing", ["off", "on"])
def test_soft_targets_give_the_reference_loss_in_every_layout(tiny_model_dir, packing):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = _encoded(tokenizer, 4)
    torch.manual_seed(1)
    soft = {1: None, 3: None}
    for i in soft:
        n = sum(1 for y in rows[i].labels[1:] if y != -100)
        soft[i] = (torch.randint(0, 100, (n, 3)), torch.softmax(torch.randn(n, 3), dim=-1))
    batch = collate(rows, tokenizer.pad_token_id)
    batch.update(batch_targets(rows, [soft.get(i) for i in range(4)], 3))

    reference = torch.zeros(())
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    for i, row in enumerate(rows):
        positions = [p - 1 for p, y in enumerate(row.labels) if y != -100]
        log_probs = torch.log_softmax(logits[i, positions], dim=-1)
        if i in soft:
            reference -= (log_probs.gather(1, soft[i][0]) * soft[i][1]).sum()
        else:
            reference -= log_probs.gather(1, torch.tensor(row.labels)[[p + 1 for p in positions]][:, None]).sum()
    for prefix in (0, shared_prefix_length(rows)):
        got = supervised_loss_sum(model, batch, prefix, packing=packing)
        assert got.item() == pytest.approx(reference.item(), rel=1e-5)
    weighted = dict(batch, **batch_targets(rows, [soft.get(i) for i in range(4)], 3, weight=3.0))
    extra = sum(-(torch.log_softmax(logits[i, [p - 1 for p, y in enumerate(rows[i].labels) if y != -100]], -1)
                  .gather(1, soft[i][0]) * soft[i][1]).sum() for i in soft)
    assert supervised_loss_sum(model, weighted).item() == pytest.approx((reference + 2 * extra).item(), rel=1e-5)
    with pytest.raises(Exception, match="target distributions"):
        short = dict(batch, target_ids=batch["target_ids"][:-1], target_probs=batch["target_probs"][:-1])
        supervised_loss_sum(model, short)


def _kl_to_base(tiny_model_dir, adapter_dir, rows) -> float:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_dir)
    total, n = 0.0, 0
    with torch.no_grad():
        for row in rows:
            item = encode_chat(tokenizer, [m.model_dump() for m in row.messages], 128)
            ids = torch.tensor([item.input_ids])
            p = torch.log_softmax(base(input_ids=ids).logits[0, :-1], -1)
            q = torch.log_softmax(tuned(input_ids=ids).logits[0, :-1], -1)
            total += (p.exp() * (p - q)).sum().item()
            n += ids.shape[1] - 1
    return total / n


def test_kl_replay_keeps_the_adapter_closer_to_the_base_than_token_replay(tiny_model_dir, tmp_path):
    general = [ChatRow(messages=[{"role": "user", "content": f"Tell me something about the number {i}."},
                                 {"role": "assistant", "content": f"The number {i} comes after {i - 1} and before {i + 1}."}],
                       reference=None, meta={"replay": True}) for i in range(8)]
    rows = qa_rows(16) + general
    kl = {}
    for loss in ("tokens", "kl"):
        spec = TrainSpec(r=4, alpha=8, learning_rate=2e-2, epochs=4, batch_size=4, checkpoint_every=1000, seed=3,
                         max_length=128, precision="fp32", replay=ReplaySpec(loss=loss, top_k=8))
        result = train_adapter(base=prepare_base_model(str(tiny_model_dir)), rows=rows, spec=spec,
                               run_dir=tmp_path / f"run-{loss}", adapter_dir=tmp_path / loss)
        assert result.extra.get("replay_kl_rows", 0) == (8 if loss == "kl" else 0)
        kl[loss] = _kl_to_base(tiny_model_dir, result.adapter_dir, general)
    assert kl["kl"] < 0.7 * kl["tokens"], kl


def test_replay_weight_is_the_kl_coefficient_and_needs_kl():
    assert ReplaySpec(loss="kl", weight=2.0).weight == 2.0
    with pytest.raises(ValueError, match="set loss: kl"):
        ReplaySpec(loss="tokens", weight=2.0)
