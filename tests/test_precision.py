"""Training runs in the precision the plan chose: bf16 autocast really happens, LoRA stays fp32."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tunewright.config import TrainSpec
from tunewright.models import prepare_base_model
from tunewright.train.loop import train_adapter
from tunewright.train.precision import training_precision

from helpers import qa_rows


def _train(tiny_model_dir, tmp_path, precision, name):
    spec = TrainSpec(r=4, alpha=8, learning_rate=5e-3, epochs=2, batch_size=4, checkpoint_every=100, seed=3,
                     max_length=128, precision=precision)
    return train_adapter(base=prepare_base_model(str(tiny_model_dir)), rows=qa_rows(16), spec=spec,
                         run_dir=tmp_path / f"run-{name}", adapter_dir=tmp_path / f"adapter-{name}")


def test_bf16_training_runs_matmuls_in_bf16_and_keeps_fp32_adapter_weights(tiny_model_dir, tmp_path, monkeypatch):
    seen = []
    real_linear = torch.nn.functional.linear

    def spy(x, weight, bias=None):
        out = real_linear(x, weight, bias)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, "linear", spy)
    bf16 = _train(tiny_model_dir, tmp_path, "bf16", "b")
    assert bf16.extra["precision"] == "bf16"
    assert torch.bfloat16 in seen  # the autocast region covered the projections
    seen.clear()
    fp32 = _train(tiny_model_dir, tmp_path, "fp32", "f")
    assert fp32.extra["precision"] == "fp32" and set(seen) == {torch.float32}

    a = load_file(bf16.adapter_dir / "adapter_model.safetensors")
    b = load_file(fp32.adapter_dir / "adapter_model.safetensors")
    assert {t.dtype for t in a.values()} == {torch.float32}
    # Same data, seed and steps: the bf16 run follows the fp32 one closely but not bit for bit.
    assert bf16.losses != fp32.losses
    for x, y in zip(bf16.losses, fp32.losses):
        assert x == pytest.approx(y, rel=0.05)
    delta = torch.cat([(a[k] - b[k]).flatten() for k in a]).norm()
    assert 0 < delta < 0.2 * torch.cat([b[k].flatten() for k in b]).norm()


def test_fp16_where_the_loop_cannot_scale_the_loss_falls_back_to_fp32_and_says_so():
    chosen = training_precision("fp16", torch.device("cpu"), sharded=True)
    assert chosen.name == "fp32" and "loss scaling" in chosen.reason
    assert training_precision("auto", torch.device("cpu")).name == "fp32"
    scaled = training_precision("fp16", torch.device("cpu"))
    assert scaled.name == "fp16" and scaled.scaler is not None


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "peft-forward"])
def test_frozen_weights_stored_in_bf16_train_bit_for_bit_as_autocast_over_fp32(tiny_model_dir, tmp_path, monkeypatch, fuse):
    """Autocast rounds each fp32 weight to bf16 before its matrix multiply; storing it in bf16 does
    the rounding once. The reference run keeps fp32 storage: the losses and the adapter must be
    identical, not merely close."""
    from tunewright.train.precision import TrainingPrecision

    def run(name):
        spec = TrainSpec(r=4, alpha=8, learning_rate=5e-3, epochs=2, batch_size=4, checkpoint_every=100, seed=3,
                         max_length=128, precision="bf16", fuse_lora=fuse)
        return train_adapter(base=prepare_base_model(str(tiny_model_dir)), rows=qa_rows(16), spec=spec,
                             run_dir=tmp_path / f"run-{name}", adapter_dir=tmp_path / f"adapter-{name}")

    stored = run("stored")
    assert stored.extra["frozen_weights_stored_in"] == "bf16"
    monkeypatch.setattr(TrainingPrecision, "store_frozen_weights", lambda self, model: 0)
    reference = run("fp32-storage")
    assert "frozen_weights_stored_in" not in reference.extra
    assert stored.losses == reference.losses
    a = load_file(stored.adapter_dir / "adapter_model.safetensors")
    b = load_file(reference.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_what_stays_fp32_the_embeddings_the_head_the_adapter_and_dora_bases(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True))
    cast = training_precision("bf16", torch.device("cpu")).store_frozen_weights(model)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert cast > 0 and dtypes == {name: torch.bfloat16 if any(s in name for s in ("k_proj", "o_proj", "mlp."))
                                   else torch.float32 for name in dtypes}
    assert training_precision("fp32", torch.device("cpu")).store_frozen_weights(model) == 0
