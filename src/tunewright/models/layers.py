"""The linear layers of one decoder layer, read from the model itself: the one place the planner
and anything else that counts adapted weights learn a family's layer names and sizes.

Families name and fuse their projections differently (Llama's q_proj/k_proj/v_proj and
gate_proj/up_proj, Phi-3's fused qkv_proj and gate_up_proj, GPT-2's c_attn), so a table of known
names is wrong for the next family. Building the model on the meta device (shapes, no memory, no
weights) and listing its ``nn.Linear`` modules is right for every architecture transformers knows.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The names config.json gives the model width and the query head count under: GPT-2 writes n_embd
# and n_head, some other families d_model, so the planner reads a config of any of them.
HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model")
HEAD_KEYS = ("num_attention_heads", "n_head")


def _field(config: Any, name: str) -> Any:
    return config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)


def _first(config: Any, names: tuple[str, ...]) -> int:
    for name in names:
        value = _field(config, name)
        if value is not None:
            return int(value)
    raise KeyError(f"config has none of {', '.join(names)}")


def split_head_dim(config: Any) -> int:
    """hidden / heads: the head width when none is stated, and what readers such as llama.cpp assume
    when a file states none (whatever the config's class default says)."""
    return _first(config, HIDDEN_KEYS) // _first(config, HEAD_KEYS)


def head_dim_of(config: Any) -> int:
    """Width of one attention head, from a transformers config or a config.json dict (its text part:
    see ``text_config``). Gemma's stated head_dim differs from hidden/heads, so a stated one wins;
    ``head_dim: null`` (and 0) in a config.json means unstated."""
    return int(_field(config, "head_dim") or split_head_dim(config))


def kv_heads_of(config: Any) -> int:
    """Key/value head count: configs without grouped-query attention leave it unset (or null)."""
    return int(_field(config, "num_key_value_heads") or _first(config, HEAD_KEYS))


def text_config(config: dict) -> dict:
    """The language model's part of a config.json: multimodal configs (Gemma 3 4B and up, Llava)
    nest it under ``text_config``; its keys win over the outer ones."""
    inner = config.get("text_config")
    return {**config, **inner} if isinstance(inner, dict) else config


def decoder_linears(folder: str | Path) -> dict[str, tuple[int, int]] | None:
    """(in, out) features of every linear in the first decoder layer, by its path inside the layer
    ("self_attn.qkv_proj"); None where transformers cannot build the model from its config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception:  # noqa: BLE001 - an architecture transformers does not know: the caller falls back
        return None
    n_layers = config.get_text_config().num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers and len(module) > 0:
            first = module[0]
            return {name: (layer.in_features, layer.out_features) for name, layer in first.named_modules()
                    if isinstance(layer, torch.nn.Linear)} or None
    return None
