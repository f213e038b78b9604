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
