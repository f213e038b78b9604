"""The linear layers of one decoder layer, read from the model itself: the one place the planner
and anything else that counts adapted weights learn a family's layer names and sizes.

Families name and fuse their projections differently (Llama's q_proj/k_proj/v_proj and
gate_proj/up_proj, Phi-3's fused qkv_proj and gate_up_proj, GPT-2's c_attn), so a table of known
names is wrong for the next family. Building the model on the meta device (shapes, no memory, no
weights) and listing its ``nn.Linear`` modules is right for every architecture transformers knows.
"""

from __future__ import annotations

from pathlib import Path


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
