"""The real path on SmolLM2-135M-Instruct: GGUF conversion, loss falls, plain-peft round trip, generation."""

from __future__ import annotations

import pytest
import torch

from tunewright.config import TrainSpec
from tunewright.models.generation import generate_responses
from tunewright.models import load_model, load_tokenizer, prepare_base_model
from tunewright.methods.attach import attach_adapter
from tunewright.train.loop import train_adapter

from helpers import qa_rows

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm2():
    return prepare_base_model("smollm2-135m-instruct")


def test_gguf_converts_once_with_template_and_eos(smollm2):
    assert (smollm2.folder / "model.safetensors").is_file()
    assert prepare_base_model("smollm2") == smollm2  # alias, and the cache is reused
    tokenizer = load_tokenizer(smollm2)
    assert tokenizer.eos_token == "<|im_end|>"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")


def test_train_round_trips_through_plain_peft_and_generates(smollm2, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    spec = TrainSpec(r=8, alpha=16, learning_rate=2e-3, batch_size=4, max_steps=6, checkpoint_every=100, seed=0)
    result = train_adapter(base=smollm2, rows=qa_rows(12), spec=spec, run_dir=tmp_path / "run", adapter_dir=tmp_path / "adapter")
    assert len(result.losses) == 6
    assert result.losses[-1] < result.losses[0] * 0.7, result.losses

    tokenizer = load_tokenizer(smollm2, padding_side="left")
    batch = tokenizer(["<|im_start|>user\nHow much does item 3 cost?<|im_end|>\n<|im_start|>assistant\n"], return_tensors="pt")
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2.folder), tmp_path / "adapter").eval()
    ours = attach_adapter(load_model(smollm2), tmp_path / "adapter")  # merged for speed
    with torch.inference_mode():
        expected, got = plain(**batch).logits, ours(**batch).logits
    assert torch.allclose(expected, got, atol=1e-3), (expected - got).abs().max()

    answers = generate_responses(ours, tokenizer, [[{"role": "user", "content": "How much does item 3 cost?"}]], max_new_tokens=16)
    assert answers[0] and "<|im_end|>" not in answers[0]
