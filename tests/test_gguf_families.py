"""GGUF export beyond Llama: tiny Mistral and Qwen2 models written by our writer and read back by
transformers' own GGUF reader (an independent implementation): every tensor bit for bit in F32 and
the same logits; architectures the writer would get wrong are refused by field."""

from __future__ import annotations

import pytest
import torch

from tunewright.errors import TunewrightError
from tunewright.export.gguf_writer import check_gguf_supported, write_gguf


def _tiny(family: str, tokenizer, **overrides):
    import transformers

    config_class = {"mistral": transformers.MistralConfig, "qwen2": transformers.Qwen2Config,
                    "llama": transformers.LlamaConfig}[family]
    shape = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                 pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=family == "qwen2")
    if family == "mistral":
        shape["sliding_window"] = None  # Mistral v0.2 and later
    config = config_class(**{**shape, **overrides})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # random biases, so a dropped bias shows
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(std=0.5)
    return model


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_the_gguf_reads_back_as_the_same_model(family, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _tiny(family, tokenizer)
    path = write_gguf(model, tokenizer, tmp_path / f"{family}.gguf", dtype="f32", name=f"tiny-{family}")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
    expected, got = model.state_dict(), loaded.state_dict()
    if family == "qwen2":
        assert any(k.endswith("q_proj.bias") for k in expected)  # the biases are there to lose
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, loaded(input_ids=ids).logits, atol=1e-5)


@pytest.mark.parametrize("config,message", [
    ({"model_type": "gemma2"}, "GGUF export supports llama, mistral, qwen2 models; this base is 'gemma2'"),
    ({"model_type": "mistral", "sliding_window": 4096}, "mistral models with sliding_window"),
    ({"model_type": "qwen2", "use_sliding_window": True}, "use_sliding_window"),
    ({"model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "'yarn' rope scaling"),
    ({"model_type": "mistral", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "'llama3' rope scaling"),
])
def test_what_the_writer_would_get_wrong_is_refused_by_field(config, message):
    with pytest.raises(TunewrightError, match=message) as caught:
        check_gguf_supported(config)
    assert caught.value.field == "formats"


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def test_llama3_rope_scaling_travels_as_llama_cpp_rope_factors(tiny_model_dir, tmp_path):
    """Llama 3.1's frequency-dependent scaling: head_dim 8 gives four frequencies with wavelengths
    6, 63, 628 and 6283 positions against an original context of 64, so one is kept, one is on the
    ramp and two are slowed 8x. Read back the way llama.cpp reads the file, the model is the same;
    without the factors (transformers' reader alone) it is not, so the factors are what carries it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewright.export.gguf_writer import apply_rope_factors, rope_factors

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _tiny("llama", tokenizer, rope_parameters=LLAMA3_ROPE)
    factors = rope_factors(model.config)
    assert factors[0] == pytest.approx(1.0) and list(factors[2:]) == pytest.approx([8.0, 8.0])
    assert 1.0 < factors[1] < 8.0
    path = write_gguf(model, tokenizer, tmp_path / "llama3.gguf", dtype="f32", name="tiny-llama3")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
    ids = torch.arange(3, 203).remainder(len(tokenizer)).unsqueeze(0)  # 200 positions: past the original 64
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        assert not torch.allclose(expected, loaded(input_ids=ids).logits, atol=1e-3)
        assert apply_rope_factors(loaded, path)
        assert torch.allclose(expected, loaded(input_ids=ids).logits, atol=1e-4)
    plain = write_gguf(_tiny("llama", tokenizer), tokenizer, tmp_path / "plain.gguf", dtype="f32", name="plain")
    assert not apply_rope_factors(loaded, plain)  # no scaling, no tensor: nothing changes
