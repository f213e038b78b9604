"""NEFTune: noise of the paper's scale on the embeddings while training, none at answer time,
and a noisy run that still resumes exactly."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from tunewright.config import TrainSpec, load_recipe
from tunewright.errors import TunewrightError
from tunewright.train.neftune import EmbeddingNoise

from helpers import Crash, crash_at, tiny_spec, train_tiny


def test_noise_has_the_papers_scale_in_training_and_none_at_answer_time(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    embeddings = model.get_input_embeddings()
    ids = torch.randint(0, embeddings.weight.shape[0], (4, 300))
    clean = embeddings(ids).detach()
    noise = EmbeddingNoise(model, alpha=5.0)
    # Two rows of 300 real tokens and two of 100 (padding after): the paper's L is the real length.
    mask = torch.zeros(4, 300, dtype=torch.long)
    mask[:2], mask[2:, :100] = 1, 1
    noise.set_rows(mask)
    expected = 5.0 / math.sqrt(200 * embeddings.weight.shape[1])

    model.train()
    delta = embeddings(ids).detach() - clean
    assert delta.abs().max() <= expected * (1 + 1e-5)
    # U(-s, s) has standard deviation s / sqrt(3); over 300k draws it is within a percent.
    assert delta.std().item() == pytest.approx(expected / math.sqrt(3), rel=0.02)
    assert not torch.equal(embeddings(ids), embeddings(ids))  # fresh noise each forward

    model.eval()
    assert torch.equal(embeddings(ids), clean)
    model.train()
    noise.remove()
    assert torch.equal(embeddings(ids), clean)


def test_a_noisy_run_differs_resumes_exactly_and_leaves_no_hook(tiny_model_dir, tmp_path):
    plain = load_file(train_tiny(tiny_model_dir, tmp_path, "plain", spec=tiny_spec()).adapter_dir / "adapter_model.safetensors")
    full_result = train_tiny(tiny_model_dir, tmp_path, "full", spec=tiny_spec(neftune_alpha=5.0))
    full = load_file(full_result.adapter_dir / "adapter_model.safetensors")
    assert full_result.extra["neftune_alpha"] == 5.0
    assert any(not torch.equal(plain[k], full[k]) for k in plain)

    with pytest.raises(Crash):
        train_tiny(tiny_model_dir, tmp_path, "cut", spec=tiny_spec(neftune_alpha=5.0), callbacks=[crash_at(5)])
    resumed = train_tiny(tiny_model_dir, tmp_path, "cut", spec=tiny_spec(neftune_alpha=5.0), resume=True)
    assert resumed.resumed_from_step == 4
    weights = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    # The noise is drawn from the random state the checkpoint restores, so the adapters are equal.
    assert all(torch.equal(full[k], weights[k]) for k in full)
    # A different alpha is a different run: its checkpoint is not resumed.
    with pytest.raises(Crash):
        train_tiny(tiny_model_dir, tmp_path, "other", spec=tiny_spec(neftune_alpha=5.0), callbacks=[crash_at(5)])
    with pytest.raises(TunewrightError, match="different data, base model or settings"):
        train_tiny(tiny_model_dir, tmp_path, "other", spec=tiny_spec(neftune_alpha=10.0), resume=True)


def test_alpha_must_be_positive_and_the_recipe_error_names_line_and_field(tmp_path):
    with pytest.raises(ValueError):
        TrainSpec(neftune_alpha=0)
    path = tmp_path / "tunewright.yaml"
    path.write_text("name: shop\ntrain:\n  epochs: 1\n  neftune_alpha: -5\n")
    with pytest.raises(TunewrightError) as error:
        load_recipe(path)
    message = str(error.value)
    assert message.endswith("tunewright.yaml:4: field 'train.neftune_alpha': Input should be greater than 0")
