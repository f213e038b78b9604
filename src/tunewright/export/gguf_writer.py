"""A Llama (3.x rope scaling included), Mistral, Qwen2, Qwen3, Phi-3, Gemma 2 or Gemma 3 (text) model as one GGUF
file (F32 or F16) that llama.cpp, Ollama and transformers load (``GGUF_ARCHS``: one entry per
architecture).

What the readers expect, and why each step here exists:

- Tensor names come from gguf's own HF -> GGUF name map, so they are the ones llama.cpp looks up.
- llama.cpp applies rotary embeddings to interleaved pairs, while Hugging Face Llama rotates the two
  halves of each head. Converters therefore reorder the rows of q_proj/k_proj per head, and
  transformers' GGUF reader undoes exactly that reorder on load. Skipping it gives a file that loads
  without complaint and computes wrong attention.
- llama.cpp and transformers both treat a missing ``output.weight`` as tied embeddings, so a tied
  head is written once, as ``token_embd.weight``.
- 1-D tensors (the RMSNorm weights) stay F32 in an F16 file, as llama.cpp's converter does.
- Gemma's RMSNorm scales by ``1 + weight`` where llama.cpp scales by the stored weight, so Gemma
  norms are written plus one (transformers' reader subtracts it again).
- llama.cpp does not read every Gemma setting from the file: it scales attention by
  1/sqrt(head_dim) (hidden/heads for the 27B sizes, recognised by layer count), alternates sliding
  and full layers in a fixed pattern (every 2nd layer full for Gemma 2, every 6th for Gemma 3) and
  uses base 10000 for Gemma 3's sliding layers. A model that differs is refused rather than written
  into a file that computes something else (``llama_cpp_reading`` is that rule, used by the check).
- The tokenizer goes in as the vocabulary flavour it really is (``gguf_vocab``), with the special
  ids and the chat template.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import TunewrightError
from ..models.layers import head_dim_of, kv_heads_of, split_head_dim
from .gguf_vocab import adds_token, tokenizer_fields

GGUF_DTYPES = ("f32", "f16")


def _refuse(config: dict, what: str) -> TunewrightError:
    return TunewrightError(f"GGUF export cannot carry this {config.get('model_type')} model: {what}", field="formats")


# What llama.cpp fixes for each Gemma architecture instead of reading it (its gemma2/gemma3 hparams
# loading): the layer count by which it recognises the 27B size, whose attention it scales by
# hidden/heads (every other size by head_dim), and every how-many-th layer is full attention.
_GEMMA_LLAMA_CPP = {"GEMMA2": (46, 2), "GEMMA3": (62, 6)}


def _gemma_fixed(model_type: str) -> tuple[int, int]:
    return _GEMMA_LLAMA_CPP[GGUF_ARCHS[model_type].gguf_arch]


def llama_cpp_attention_scalar(config: dict) -> int:
    """The query_pre_attn_scalar llama.cpp uses for a Gemma model of this shape (its division is an
    integer one)."""
    if config["num_hidden_layers"] == _gemma_fixed(config["model_type"])[0]:
        return split_head_dim(config)
    return head_dim_of(config)


def _gemma_rope(config: dict) -> tuple[float, float, str]:
    """(sliding layers' base, full layers' base, full layers' rope type) from either config layout."""
    rope = config.get("rope_parameters") or {}
    local = (rope.get("sliding_attention") or {}).get("rope_theta", config.get("rope_local_base_freq", 10000.0))
    full = rope.get("full_attention") or {}
    scaling = full.get("rope_type") or (config.get("rope_scaling") or {}).get("rope_type") or "default"
    return float(local), float(full.get("rope_theta", config.get("rope_theta", 10000.0))), scaling


def _check_gemma(config: dict) -> None:
    model_type, layers = config["model_type"], config["num_hidden_layers"]
    scalar = config.get("query_pre_attn_scalar")
    if scalar is not None and scalar != llama_cpp_attention_scalar(config):
        raise _refuse(config, f"query_pre_attn_scalar {scalar}, where llama.cpp uses "
                              f"{llama_cpp_attention_scalar(config)} for this shape")
    every = _gemma_fixed(model_type)[1]
    expected = ["sliding_attention" if (i + 1) % every else "full_attention" for i in range(layers)]
    if config.get("layer_types") and list(config["layer_types"]) != expected:
        raise _refuse(config, f"layer_types differ from llama.cpp's fixed pattern (every {every}th layer full)")
    if GGUF_ARCHS[model_type].gguf_arch == "GEMMA2":
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if config.get(key) is None:
                raise _refuse(config, f"{key} is unset, and llama.cpp applies its default when the file has none")
        return
    local, _, scaling = _gemma_rope(config)
    if local != 10000.0 or scaling != "default":
        raise _refuse(config, f"rope (sliding layers' base {local:g}, full layers' scaling '{scaling}'); llama.cpp "
                              "reads base 10000 for sliding layers and this writer carries no rope scaling")
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if config.get(key) is not None:
            raise _refuse(config, f"{key} {config[key]}, which llama.cpp does not apply to Gemma 3")


def _gemma_reading(config, value: Callable[[str, Any], Any]) -> None:
    config.query_pre_attn_scalar = llama_cpp_attention_scalar(config.to_dict())
    if GGUF_ARCHS[config.model_type].gguf_arch == "GEMMA2":
        config.attn_logit_softcapping = float(value("attn_logit_softcapping", 50.0))
        config.final_logit_softcapping = float(value("final_logit_softcapping", 30.0))
    else:
        final = value("final_logit_softcapping", None)
        config.final_logit_softcapping = None if final is None else float(final)


def _qwen3_reading(config, value: Callable[[str, Any], Any]) -> None:
    # transformers' qwen3 reader ignores key_length and keeps Qwen3Config's default head_dim of 128;
    # llama.cpp takes key_length, or hidden/heads when the file has none.
    config.head_dim = int(value("attention.key_length", split_head_dim(config)))


def _phi3_reading(config, value: Callable[[str, Any], Any]) -> None:
    # llama.cpp rotates rope.dimension_count dimensions of each head; transformers' phi3 reader drops
    # the key and rotates them all (Phi-4-mini rotates three quarters).
    dims = value("rope.dimension_count", None)
    if dims is not None:
        factor = int(dims) / head_dim_of(config)
        config.partial_rotary_factor = factor
        config.rope_parameters = {**(config.rope_parameters or {}), "partial_rotary_factor": factor}


def _phi3_metadata(writer, config) -> None:
    # As llama.cpp's converter writes it (0: none). llama.cpp currently runs Phi-3 with full attention
    # whatever the window, which equals the window for prompts that fit in it (2047 tokens for Phi-3-mini).
    writer.add_sliding_window(int(config.sliding_window or 0))


def _gemma_metadata(writer, config) -> None:
    writer.add_sliding_window(int(config.sliding_window))
    if GGUF_ARCHS[config.model_type].gguf_arch == "GEMMA2":
        writer.add_attn_logit_softcapping(float(config.attn_logit_softcapping))
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping))


@dataclass(frozen=True)
class GgufArch:
    """How one Hugging Face architecture is written: llama.cpp's architecture name, whether q/k rows
    are reordered for its rotary layout, the config switches the writer cannot carry, and a
    family's own refusals, metadata and norm convention."""

    gguf_arch: str  # a gguf.MODEL_ARCH member name
    permute_qk: bool  # HF rotate-half rope to llama.cpp's interleaved pairs (llama.cpp's "norm" rope)
    refused_flags: tuple[str, ...] = ()  # config keys that must be falsy
    norm_plus_one: bool = False  # HF norms scale by 1 + weight (Gemma); llama.cpp by the weight
    family_check: Callable[[dict], None] | None = None
    family_metadata: Callable[[Any, Any], None] | None = None  # (GGUFWriter, config)
    states_head_dim: bool = False  # transformers reads head_dim from key_length only (Gemma)
    # What llama.cpp reads from the file but transformers' reader leaves at the class default, set on
    # transformers' config (config, value(key, default)) so the parity check runs what llama.cpp runs.
    reading: Callable[[Any, Callable[[str, Any], Any]], None] | None = None

    def check(self, config: dict) -> None:
        for flag in self.refused_flags:
            if config.get(flag):
                raise TunewrightError(f"GGUF export does not handle {config.get('model_type')} models with {flag} "
                                      f"set ({config.get(flag)!r})", field="formats")
        if self.family_check is not None:
            self.family_check(config)


# Mistral is Llama's layout (llama.cpp's converter writes it as "llama"); a sliding window would be
# dropped, so it is refused. Qwen2 and Gemma keep HF's rotate-half rope (llama.cpp's NEOX style: no
# reorder); Qwen2's biases on q, k and v are carried by the name map.
_GEMMA = dict(norm_plus_one=True, family_check=_check_gemma, family_metadata=_gemma_metadata, states_head_dim=True,
              reading=_gemma_reading)
GGUF_ARCHS = {
    "llama": GgufArch("LLAMA", True, ("attention_bias", "mlp_bias")),
    "mistral": GgufArch("LLAMA", True, ("sliding_window",)),
    "qwen2": GgufArch("QWEN2", False, ("use_sliding_window",)),
    # Qwen3: Qwen2 without the q/k/v biases, with per-head RMSNorm on q and k (mapped by name).
    "qwen3": GgufArch("QWEN3", False, ("attention_bias", "use_sliding_window"), reading=_qwen3_reading),
    # Phi-3: fused qkv_proj and gate_up_proj, which llama.cpp's phi3 graph splits in the same order.
    "phi3": GgufArch("PHI3", False, family_metadata=_phi3_metadata, reading=_phi3_reading),
    "gemma2": GgufArch("GEMMA2", False, ("attention_bias",), **_GEMMA),
    "gemma3": GgufArch("GEMMA3", False, ("attention_bias",), **_GEMMA),  # Gemma3ForCausalLM's text config
    "gemma3_text": GgufArch("GEMMA3", False, ("attention_bias",), **_GEMMA),
}


def check_gguf_supported(config: dict) -> GgufArch:
    """Refuse, before any work, a model this writer (or transformers' reader) would get wrong."""
    model_type = config.get("model_type")
    if model_type not in GGUF_ARCHS:
        raise TunewrightError(f"GGUF export supports {', '.join(sorted(GGUF_ARCHS))} models; this base is "
                              f"'{model_type}' (export 'merged' and convert it with llama.cpp's "
                              "convert_hf_to_gguf.py)", field="formats")
    rope_type = _rope_type(config)
    if rope_type not in ("default", "llama3") or (rope_type == "llama3" and model_type != "llama"):
        raise TunewrightError(f"GGUF export supports plain RoPE and Llama 3.x's 'llama3' scaling; this base uses "
                              f"'{rope_type}' rope scaling, which the file would not carry", field="formats")
    arch = GGUF_ARCHS[model_type]
    arch.check(config)
    return arch


def llama_cpp_reading(config, reader) -> None:
    """Set on ``config`` (transformers' reading of a GGUF) what llama.cpp takes from the same file,
    opened as ``reader`` (a ``gguf.GGUFReader``), but transformers' reader leaves at the class
    defaults (``GgufArch.reading``): Gemma's attention scale and logit soft-capping, Qwen3's head
    width, Phi-3's rotary width. The parity check loads the model with it, so it checks what
    llama.cpp runs."""
    arch = GGUF_ARCHS.get(config.model_type)
    if arch is None or arch.reading is None:
        return
    import gguf

    fields = reader.fields
    prefix = gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, arch.gguf_arch)]  # the file's key prefix

    def value(key: str, default):
        field = fields.get(f"{prefix}.{key}")
        return default if field is None else field.parts[field.data[0]][0].item()

    arch.reading(config, value)


def _rope_type(config: dict) -> str:
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return rope.get("rope_type") or rope.get("type") or "default"


# Llama 3.1/3.2 scale RoPE by frequency ('llama3': long wavelengths slowed by `factor`, short ones
# kept, a smooth ramp between). llama.cpp reads that as a `rope_freqs` tensor, one divisor per
# rotary frequency, as its own converter writes it. The divisors come from transformers' own
# implementation of the scaling (default inverse frequencies over scaled ones), not from a copy of
# its formula.
def rope_factors(config) -> np.ndarray | None:
    """Per-frequency divisors for a 'llama3'-scaled config (a transformers config object), or None."""
    if _rope_type(config.to_dict()) != "llama3":
        return None
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config)
    return (_default_inv_freq(config) / scaled).numpy().astype(np.float32)


def _default_inv_freq(config) -> torch.Tensor:
    rope = getattr(config, "rope_parameters", None) or {}
    base = float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    dim = head_dim_of(config)
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim))


def apply_rope_factors(model, reader) -> bool:
    """What llama.cpp does with a GGUF's `rope_freqs` tensor, done to ``model`` as transformers'
    GGUF reader loaded it (that reader keeps plain RoPE and drops the tensor): each rotary
    frequency divided by its factor. ``reader`` is the file's ``gguf.GGUFReader``. True when the
    file had factors."""
    factors = next((t for t in reader.tensors if t.name == "rope_freqs.weight"), None)
    if factors is None:
        return False
    divisors = torch.from_numpy(np.array(factors.data, dtype=np.float32).reshape(-1))
    for module in model.modules():
        if hasattr(module, "inv_freq") and hasattr(module, "original_inv_freq"):
            scaled = _default_inv_freq(model.config) / divisors
            module.inv_freq = scaled.to(module.inv_freq.dtype)
            module.original_inv_freq = scaled.clone()
    return True


def permute_for_llama_cpp(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder each head's rows from HF's rotate-half layout to llama.cpp's interleaved pairs.

    Row ``h*d + p*(d/2) + i`` (head h, half p, index i) moves to ``h*d + 2*i + p``; transformers'
    reader applies the inverse when it loads the file.
    """
    rows = weight.shape[0]
    head_dim = rows // n_heads
    return (weight.reshape(n_heads, 2, head_dim // 2, *weight.shape[1:])
            .transpose(1, 2)
            .reshape(weight.shape))


def _tensor_name(name_map, hf_name: str) -> str:
    stem, _, suffix = hf_name.rpartition(".")
    mapped = name_map.get_name(stem)
    if mapped is None:
        raise TunewrightError(f"GGUF export has no llama.cpp name for tensor '{hf_name}'")
    return f"{mapped}.{suffix}"


def _head_is_tied(model) -> bool:
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None:
        return True
    # Merged adapters can leave a tied config over an untied head; the weights decide.
    return head.weight is embed.weight or torch.equal(head.weight, embed.weight)


def write_gguf(model, tokenizer, path: Path, *, dtype: str = "f32", name: str,
               _permute_qk: bool = True) -> Path:
    """Write ``model`` (a loaded, merged model of a ``GGUF_ARCHS`` architecture) and ``tokenizer`` to ``path``.

    ``_permute_qk`` exists so tests can write the broken file a naive converter would, and prove
    the parity check catches it.
    """
    import gguf

    if dtype not in GGUF_DTYPES:
        raise TunewrightError(f"unknown GGUF dtype '{dtype}' (known: {', '.join(GGUF_DTYPES)})", field="gguf_dtype")
    config = model.config
    arch = check_gguf_supported(config.to_dict())
    model_arch = getattr(gguf.MODEL_ARCH, arch.gguf_arch)
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    n_kv, head_dim = kv_heads_of(config), head_dim_of(config)
    rope = getattr(config, "rope_parameters", None) or {}
    rope = rope.get("full_attention", rope)  # Gemma 3 keeps one rope per layer type; the file's base is the full layers'
    rope_theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    n_vocab = model.get_input_embeddings().weight.shape[0]
    vocab = tokenizer_fields(tokenizer, n_vocab)

    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[model_arch])
    writer.add_name(name)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(n_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(n_heads))
    writer.add_head_count_kv(int(n_kv))
    # transformers reads rope.dimension_count back as head_dim (key_length for Gemma); llama.cpp
    # wants key/value length only when they differ from hidden_size / heads.
    rotary = rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", None)) or 1.0  # Phi-4-mini
    writer.add_rope_dimension_count(int(head_dim * rotary))
    if head_dim * n_heads != config.hidden_size or arch.states_head_dim:
        writer.add_key_length(int(head_dim))
        writer.add_value_length(int(head_dim))
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(n_vocab))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)

    if arch.family_metadata is not None:
        arch.family_metadata(writer, config)

    writer.add_tokenizer_model(vocab["model"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["token_types"])
    if vocab["model"] == "gpt2":
        writer.add_tokenizer_pre(vocab["pre"])
        writer.add_token_merges(vocab["merges"])
    else:
        writer.add_token_scores(vocab["scores"])
        writer.add_add_space_prefix(vocab["add_space_prefix"])
    specials = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id,
                "unk": tokenizer.unk_token_id, "pad": tokenizer.pad_token_id}
    for kind, token_id in specials.items():
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(int(token_id))
    writer.add_add_bos_token(adds_token(tokenizer, tokenizer.bos_token_id, first=True))
    writer.add_add_eos_token(adds_token(tokenizer, tokenizer.eos_token_id, first=False))
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)

    factors = rope_factors(config)
    if factors is not None:
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", factors)

    name_map = gguf.get_tensor_name_map(model_arch, n_layers)
    permute = _permute_qk and arch.permute_qk
    tied = _head_is_tied(model)
    with torch.no_grad():
        for hf_name, tensor in model.state_dict().items():
            if hf_name == "lm_head.weight" and tied:
                continue
            tensor = tensor.detach().to(torch.float32).cpu()
            if permute and hf_name.endswith("self_attn.q_proj.weight"):
                tensor = permute_for_llama_cpp(tensor, n_heads)
            elif permute and hf_name.endswith("self_attn.k_proj.weight"):
                tensor = permute_for_llama_cpp(tensor, n_kv)
            if arch.norm_plus_one and tensor.ndim == 1 and hf_name.endswith("norm.weight"):
                tensor = tensor + 1.0
            array = tensor.numpy()
            if dtype == "f16" and array.ndim > 1:
                array = array.astype(np.float16)
            writer.add_tensor(_tensor_name(name_map, hf_name), np.ascontiguousarray(array))

    path.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
