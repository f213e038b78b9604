"""Four methods beyond LoRA on the real SmolLM2-135M: loss falls in a few steps and the saved adapter reloads exactly."""

from __future__ import annotations

import pytest
import torch

from tunewright.config import TrainSpec
from tunewright.models import load_model, load_tokenizer, prepare_base_model
from tunewright.methods.attach import load_adapter
from tunewright.train.loop import train_adapter
from tunewright.methods import METHODS

from helpers import qa_rows

pytestmark = pytest.mark.integration

# Kept small so the four stay well within a minute and a half on a 2-core CPU: DoRA's per-step
# weight norms cost most on the big MLP matrices, so it adapts the attention projections only.
CASES = {
    "dora": dict(learning_rate=2e-3, r=8, alpha=16, target_modules=["q_proj", "v_proj"]),
    "ia3": dict(learning_rate=2e-2),
    "prefix-tuning": dict(learning_rate=1e-2, method_settings={"num_virtual_tokens": 10}),
    "bottleneck": dict(learning_rate=2e-3, method_settings={"variant": "pfeiffer"}),
}


@pytest.fixture(scope="module")
def smollm2():
    return prepare_base_model("smollm2-135m-instruct")


@pytest.mark.parametrize("method", sorted(CASES))
def test_method_learns_and_reloads_identically(method, smollm2, tmp_path, monkeypatch):
    cls, kept = METHODS.get_class(method), []
    original = cls.wrap

    def wrap(self, model, spec):
        kept.append(wrapped := original(self, model, spec))
        return wrapped

    monkeypatch.setattr(cls, "wrap", wrap)
    spec = TrainSpec(method=method, batch_size=4, max_steps=3, checkpoint_every=100, seed=0, **CASES[method])
    result = train_adapter(base=smollm2, rows=qa_rows(8), spec=spec, run_dir=tmp_path / "run",
                           adapter_dir=tmp_path / "adapter")
    assert result.losses[-1] < result.losses[0] * 0.8, result.losses
    assert 0 < result.extra["trainable_share"] < 0.05

    tokenizer = load_tokenizer(smollm2, padding_side="left")
    batch = tokenizer(["<|im_start|>user\nHow much does item 3 cost?<|im_end|>\n<|im_start|>assistant\n"],
                      return_tensors="pt")
    attached = load_adapter(load_model(smollm2), tmp_path / "adapter")
    trained = kept[-1].eval()
    with torch.inference_mode():
        expected, got = trained(**batch).logits, attached.model(**batch).logits
        assert torch.allclose(expected, got, atol=1e-4), (expected - got).abs().max()
        generate = dict(max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert torch.equal(trained.generate(**batch, **generate), attached.model.generate(**batch, **generate))
    assert attached.merged == (method in {"dora", "ia3"})
