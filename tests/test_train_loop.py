"""The training loop on a tiny random Llama: loss, PEFT layout, determinism, resume, invariants."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tunewright.errors import TunewrightError
from tunewright.models import prepare_base_model
from tunewright.train.loop import supervised_loss_sum, train_adapter

from helpers import Crash, crash_at, qa_rows, tiny_spec, train_tiny


def test_loss_falls_and_adapter_is_standard_peft(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = train_tiny(tiny_model_dir, tmp_path, spec=tiny_spec(epochs=10, learning_rate=3e-2))
    # A random 2-layer model learns slowly through a rank-4 adapter; a clear, steady fall is the check.
    assert sum(result.losses[-3:]) / 3 < result.losses[0] - 0.2
    files = {p.name for p in result.adapter_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    loaded = PeftModel.from_pretrained(base, result.adapter_dir)
    saved = load_file(result.adapter_dir / "adapter_model.safetensors")
    lora_a = next(k for k in saved if "lora_A" in k)
    live = dict(loaded.named_parameters())
    live_key = next(k for k in live if k.endswith(lora_a.replace(".weight", ".default.weight").split("base_model.model.")[-1]))
    assert torch.equal(live[live_key], saved[lora_a])


def test_same_seed_same_weights_other_seed_differs(tiny_model_dir, tmp_path):
    a = load_file(train_tiny(tiny_model_dir, tmp_path, "a").adapter_dir / "adapter_model.safetensors")
    b = load_file(train_tiny(tiny_model_dir, tmp_path, "b").adapter_dir / "adapter_model.safetensors")
    c = load_file(train_tiny(tiny_model_dir, tmp_path, "c", spec=tiny_spec(seed=4)).adapter_dir / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_resume_after_interrupt_matches_uninterrupted_run(tiny_model_dir, tmp_path):
    full = load_file(train_tiny(tiny_model_dir, tmp_path, "full", spec=tiny_spec(dropout=0.1)).adapter_dir / "adapter_model.safetensors")

    with pytest.raises(Crash):
        train_tiny(tiny_model_dir, tmp_path, "cut", spec=tiny_spec(dropout=0.1), callbacks=[crash_at(5)])
    assert not (tmp_path / "adapter-cut").exists(), "no adapter may be written by an interrupted run"
    resumed = train_tiny(tiny_model_dir, tmp_path, "cut", spec=tiny_spec(dropout=0.1), resume=True)
    assert resumed.resumed_from_step == 4  # checkpoints every 2 steps; step 5 was lost
    weights = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert weights.keys() == full.keys()
    assert all(torch.equal(full[k], weights[k]) for k in full)


def test_resume_refuses_changed_settings(tiny_model_dir, tmp_path):
    def stop(info):
        if info.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_tiny(tiny_model_dir, tmp_path, "x", callbacks=[stop])
    with pytest.raises(TunewrightError, match="different data, base model or settings"):
        train_tiny(tiny_model_dir, tmp_path, "x", spec=tiny_spec(learning_rate=1e-2), resume=True)


def test_resume_without_checkpoint_is_an_error(tiny_model_dir, tmp_path):
    with pytest.raises(TunewrightError, match="no checkpoint"):
        train_tiny(tiny_model_dir, tmp_path, "none", resume=True)


def test_gradient_accumulation_matches_one_big_batch(tiny_model_dir, tmp_path):
    rows = qa_rows(8)
    big = train_tiny(tiny_model_dir, tmp_path, "big", rows=rows, spec=tiny_spec(batch_size=8, grad_accum=1, max_steps=3))
    acc = train_tiny(tiny_model_dir, tmp_path, "acc", rows=rows, spec=tiny_spec(batch_size=2, grad_accum=4, max_steps=3))
    assert big.losses == pytest.approx(acc.losses, rel=1e-4)


def test_selective_logits_loss_equals_full_logits_loss(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewright.data.tokenize import collate, encode_chat

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = [encode_chat(tokenizer, [m.model_dump() for m in r.messages], 128) for r in qa_rows(3)]
    batch = collate(rows, tokenizer.pad_token_id)
    n_labels = int((batch["labels"][:, 1:] != -100).sum())
    reference = model(**batch).loss  # transformers' own mean over labelled tokens
    assert (supervised_loss_sum(model, batch) / n_labels).item() == pytest.approx(reference.item(), rel=1e-5)


def test_empty_training_split_is_an_error(tiny_model_dir, tmp_path):
    with pytest.raises(TunewrightError, match="empty"):
        train_adapter(
            base=prepare_base_model(str(tiny_model_dir)), rows=[], spec=tiny_spec(), run_dir=tmp_path / "r", adapter_dir=tmp_path / "a"
        )


@pytest.mark.parametrize("packing", ["off", "on"])  # the cached padded layout, and the packed one
def test_shared_prefix_gives_the_same_loss_and_gradients(tiny_model_dir, packing):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewright.data.batching import shared_prefix_length
    from tunewright.data.tokenize import collate, encode_chat

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules="all-linear"))
    # LoRA B starts at zero; give it values so gradients reach every adapter matrix.
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    rows = [encode_chat(tokenizer, [m.model_dump() for m in r.messages], 128) for r in qa_rows(5)]
    prefix = shared_prefix_length(rows)
    system_header = tokenizer("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")["input_ids"]
    assert prefix >= len(system_header)
    batch = collate(rows, tokenizer.pad_token_id)

    def loss_and_grads(prefix_len):
        model.zero_grad()
        loss = supervised_loss_sum(model, batch, prefix_len, packing=packing)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain_loss, plain_grads = loss_and_grads(0)
    shared_loss, shared_grads = loss_and_grads(prefix)
    assert shared_loss == pytest.approx(plain_loss, rel=1e-5)
    for name in plain_grads:
        assert torch.allclose(plain_grads[name], shared_grads[name], atol=1e-5), name


def test_shared_prefix_stops_before_the_first_trained_token(tiny_model_dir):
    from transformers import AutoTokenizer

    from tunewright.data.batching import shared_prefix_length
    from tunewright.data.tokenize import EncodedRow

    rows = [EncodedRow([1, 2, 3, 4, 5], [-100, -100, -100, 4, 5]), EncodedRow([1, 2, 3, 9, 9, 9], [-100] * 5 + [9])]
    assert shared_prefix_length(rows) == 2  # token 3 is shared, but row 0 learns the token after it
    assert shared_prefix_length([EncodedRow([7, 8], [-100, 8]), EncodedRow([1, 2], [-100, 2])]) == 0
