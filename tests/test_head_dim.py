"""head_dim_of and kv_heads_of against values worked out by hand or stated by transformers itself,
for both shapes a config comes in: a transformers config object and a config.json dict."""

from __future__ import annotations

import pytest

from tunewright.models.layers import head_dim_of, kv_heads_of, text_config

# Gemma 2 2B's attention: 8 query heads of 256 over a 2304 model width (2304 / 8 = 288).
GEMMA2_2B = {"model_type": "gemma2", "hidden_size": 2304, "num_attention_heads": 8,
             "num_key_value_heads": 4, "head_dim": 256}


def test_llama_config_derives_head_dim():
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, num_hidden_layers=2, vocab_size=32)
    assert head_dim_of(config) == 16 == config.head_dim
    assert kv_heads_of(config) == 2
    assert head_dim_of(config.to_dict()) == 16
    assert kv_heads_of(config.to_dict()) == 2


def test_llama_config_without_grouped_query_attention():
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                         num_hidden_layers=2, vocab_size=32)
    assert kv_heads_of(config) == 4 == config.num_key_value_heads


def test_stated_head_dim_wins_over_hidden_over_heads():
    assert head_dim_of(GEMMA2_2B) == 256
    assert kv_heads_of(GEMMA2_2B) == 4


def test_gemma2_config_object_keeps_its_head_dim():
    from transformers import Gemma2Config

    config = Gemma2Config(**{k: v for k, v in GEMMA2_2B.items() if k != "model_type"},
                          intermediate_size=64, num_hidden_layers=2, vocab_size=32)
    assert head_dim_of(config) == 256 == config.head_dim


@pytest.mark.parametrize("unset", [{"head_dim": None}, {}])
def test_null_or_missing_head_dim_is_derived(unset):
    config = {"hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": None, **unset}
    assert head_dim_of(config) == 64
    assert kv_heads_of(config) == 9


def test_gpt2_names():
    config = {"model_type": "gpt2", "n_embd": 768, "n_head": 12}
    assert head_dim_of(config) == 64
    assert kv_heads_of(config) == 12


def test_nested_text_config():
    outer = {"model_type": "gemma3", "text_config": {**GEMMA2_2B, "head_dim": 128}}
    assert head_dim_of(text_config(outer)) == 128


def test_missing_width_is_named():
    with pytest.raises(KeyError, match="hidden_size"):
        head_dim_of({"num_attention_heads": 4})
