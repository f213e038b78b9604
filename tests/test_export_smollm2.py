"""Export a LoRA trained on SmolLM2-135M-Instruct and prove the files answer like the adapter itself."""

from __future__ import annotations

import pytest

from tunewright.config import TrainSpec
from tunewright.export import export_adapter
from tunewright.models import prepare_base_model
from tunewright.train.loop import train_adapter

from helpers import qa_rows

pytestmark = pytest.mark.integration

PROBES = [
    [{"role": "user", "content": "How much does item 3 cost?"}],
    [{"role": "user", "content": "How much does item 7 cost?"}],
    [{"role": "user", "content": "What is the capital of France?"}],
]


@pytest.fixture(scope="module")
def smollm2():
    return prepare_base_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def adapter(smollm2, tmp_path_factory):
    root = tmp_path_factory.mktemp("smol-export-train")
    spec = TrainSpec(r=8, alpha=16, learning_rate=2e-3, batch_size=2, max_steps=6, checkpoint_every=100, seed=0)
    train_adapter(base=smollm2, rows=qa_rows(12), spec=spec, run_dir=root / "run", adapter_dir=root / "adapter")
    return root / "adapter"


def _assert_parity(report, fmt):
    rows = report["formats"][fmt]["probes"]
    for row, ref in zip(rows, report["reference_outputs"]):
        assert row["text"] == ref["text"] and row["token_ids"] == ref["token_ids"]
        assert row["stopped_at_eos"] and ref["stopped_at_eos"]  # a real chat model ends its turn
        assert row["prompt_tokens_match"]


def test_merged_and_f32_gguf_answer_like_the_adapter(smollm2, adapter, tmp_path):
    result = export_adapter(smollm2, adapter, tmp_path / "out", name="smol-shop", check=True, probes=PROBES,
                            max_new_tokens=24)
    assert result.passed, result.check["failures"]
    report = result.check
    for fmt in ("merged", "gguf"):
        _assert_parity(report, fmt)
    assert report["reference_outputs"][0]["text"].startswith("Item 3 costs $")  # the adapter's learned shape
    # F32 holds the merged weights bit for bit; both differ from unmerged LoRA only by rounding
    # (measured about 1.3e-4 on logits of magnitude about 40).
    assert report["max_logit_diff"]["merged"] < 2e-3
    assert report["max_logit_diff"]["gguf"] < 2e-3
    modelfile = result.files["ollama"].read_text()
    assert "FROM ./smol-shop.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in modelfile
    assert "--max-lora-rank 8" in result.vllm_command



def test_f16_gguf_still_answers_alike(smollm2, adapter, tmp_path):
    result = export_adapter(smollm2, adapter, tmp_path / "out16", name="smol16", formats=["gguf"], gguf_dtype="f16",
                            check=True, probes=PROBES[:2], max_new_tokens=16)
    assert result.passed, result.check["failures"]
    _assert_parity(result.check, "gguf")
    # Measured about 0.064 on logits of magnitude about 40: F16 rounding. A layout error (q/k not
    # permuted) is orders of magnitude larger.
    assert result.check["max_logit_diff"]["gguf"] < 0.5
