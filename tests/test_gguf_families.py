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

    config_class = {"mistral": transformers.MistralConfig, "qwen2": transformers.Qwen2Config}[family]
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
    ({"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "'llama3' rope scaling"),
])
def test_what_the_writer_would_get_wrong_is_refused_by_field(config, message):
    with pytest.raises(TunewrightError, match=message) as caught:
        check_gguf_supported(config)
    assert caught.value.field == "formats"
