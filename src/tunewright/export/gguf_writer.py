"""A Llama (3.x rope scaling included), Mistral or Qwen2 model as one GGUF file (F32 or F16) that llama.cpp, Ollama and
transformers load (``GGUF_ARCHS``: one entry per architecture).

What the readers expect, and why each step here exists:

- Tensor names come from gguf's own HF -> GGUF name map, so they are the ones llama.cpp looks up.
- llama.cpp applies rotary embeddings to interleaved pairs, while Hugging Face Llama rotates the two
  halves of each head. Converters therefore reorder the rows of q_proj/k_proj per head, and
  transformers' GGUF reader undoes exactly that reorder on load. Skipping it gives a file that loads
  without complaint and computes wrong attention.
- llama.cpp and transformers both treat a missing ``output.weight`` as tied embeddings, so a tied
  head is written once, as ``token_embd.weight``.
- 1-D tensors (the RMSNorm weights) stay F32 in an F16 file, as llama.cpp's converter does.
- The tokenizer goes in as llama.cpp's "gpt2" (byte-level BPE) vocabulary: tokens in id order,
  merges, token types (added special tokens are CONTROL so they stay whole), the special ids, and
  the chat template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import TunewrightError

GGUF_DTYPES = ("f32", "f16")


@dataclass(frozen=True)
class GgufArch:
    """How one Hugging Face architecture is written: llama.cpp's architecture name, whether q/k rows
    are reordered for its rotary layout, and the config switches the writer cannot carry."""

    gguf_arch: str  # a gguf.MODEL_ARCH member name
    permute_qk: bool  # HF rotate-half rope to llama.cpp's interleaved pairs (llama.cpp's "norm" rope)
    refused_flags: tuple[str, ...] = ()  # config keys that must be falsy

    def check(self, config: dict) -> None:
        for flag in self.refused_flags:
            if config.get(flag):
                raise TunewrightError(f"GGUF export does not handle {config.get('model_type')} models with {flag} "
                                      f"set ({config.get(flag)!r})", field="formats")


# Mistral is Llama's layout (llama.cpp's converter writes it as "llama"); a sliding window would be
# dropped, so it is refused. Qwen2 keeps HF's rotate-half rope (llama.cpp's NEOX style: no reorder)
# and biases on q, k and v, which the name map carries.
GGUF_ARCHS = {
    "llama": GgufArch("LLAMA", True, ("attention_bias", "mlp_bias")),
    "mistral": GgufArch("LLAMA", True, ("sliding_window",)),
    "qwen2": GgufArch("QWEN2", False, ("use_sliding_window",)),
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
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim))


def apply_rope_factors(model, path: Path) -> bool:
    """What llama.cpp does with a GGUF's `rope_freqs` tensor, done to ``model`` as transformers'
    GGUF reader loaded it (that reader keeps plain RoPE and drops the tensor): each rotary
    frequency divided by its factor. True when the file had factors."""
    from gguf import GGUFReader

    factors = next((t for t in GGUFReader(str(path)).tensors if t.name == "rope_freqs.weight"), None)
    if factors is None:
        return False
    divisors = torch.from_numpy(np.array(factors.data, dtype=np.float32).reshape(-1))
    for module in model.modules():
        if hasattr(module, "inv_freq") and hasattr(module, "original_inv_freq"):
            scaled = _default_inv_freq(model.config) / divisors
            module.inv_freq = scaled.to(module.inv_freq.dtype)
            module.original_inv_freq = scaled.clone()
    return True


def _backend(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TunewrightError("GGUF export needs a fast (tokenizers) tokenizer")
    return json.loads(backend.to_str())


def _is_byte_level(node: dict | None, *, use_regex: bool | None = None) -> bool:
    return bool(node) and node.get("type") == "ByteLevel" and (use_regex is None or node.get("use_regex", True) == use_regex)


def pretokenizer_name(data: dict) -> str:
    """llama.cpp's name (tokenizer.ggml.pre) for how this tokenizer splits text before BPE.

    Inferred from the tokenizer actually used in training, not from where the base came from: the
    exported model must split text the way the adapter saw it.
    """
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    pre = data.get("pre_tokenizer") or {}
    if _is_byte_level(pre, use_regex=True):
        return "gpt-2"
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if steps and len(steps) == 2:
        first, second = steps
        if first.get("type") == "Digits" and first.get("individual_digits") and _is_byte_level(second, use_regex=True):
            return "smollm"
        if first.get("type") == "Split" and _is_byte_level(second, use_regex=False):
            pattern = (first.get("pattern") or {}).get("Regex")
            for name, split in GGUF_PRE_TOKENIZER_SPLITS.items():
                if split == pattern:
                    return name
    raise TunewrightError("GGUF export cannot name this tokenizer's pre-tokenizer for llama.cpp "
                          f"({json.dumps(pre)[:120]}); it would split text differently from training")


def tokenizer_fields(tokenizer, n_vocab: int) -> dict:
    """The tokenizer as llama.cpp's "gpt2" vocabulary: tokens by id, types, merges, pre-tokenizer."""
    from gguf import TokenType

    data = _backend(tokenizer)
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not _is_byte_level(data.get("decoder")):
        raise TunewrightError(f"GGUF export supports byte-level BPE tokenizers only; this one is "
                              f"{model.get('type')} with decoder {(data.get('decoder') or {}).get('type')}")
    if (data.get("normalizer") or {}).get("type") not in (None, "NFC"):
        raise TunewrightError(f"GGUF export cannot carry the tokenizer's {data['normalizer']['type']} normalizer")
    pre = pretokenizer_name(data)
    vocab: dict[int, str] = {int(i): token for token, i in model["vocab"].items()}
    types: dict[int, int] = {}
    for added in data.get("added_tokens") or []:
        vocab[int(added["id"])] = added["content"]
        types[int(added["id"])] = TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED
    if max(vocab) >= n_vocab:
        raise TunewrightError(f"the tokenizer has ids up to {max(vocab)} but the model only {n_vocab} embeddings")
    tokens, token_types = [], []
    for i in range(n_vocab):
        # Embedding rows no token uses (padding to a round size) still need an entry.
        tokens.append(vocab.get(i, f"[PAD{i}]"))
        token_types.append(int(types.get(i, TokenType.NORMAL if i in vocab else TokenType.UNUSED)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return {"tokens": tokens, "token_types": token_types, "merges": merges, "pre": pre}


def adds_token(tokenizer, token_id: int | None, first: bool) -> bool:
    """Whether encoding plain text adds ``token_id`` at the start (first) or end (not first)."""
    if token_id is None:
        return False
    ids = tokenizer("probe")["input_ids"]
    bare = tokenizer("probe", add_special_tokens=False)["input_ids"]
    return len(ids) > len(bare) and (ids[0] if first else ids[-1]) == token_id


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
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    rope = getattr(config, "rope_parameters", None) or {}
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
    # transformers reads rope.dimension_count back as head_dim; llama.cpp wants key/value length
    # only when they differ from hidden_size / heads.
    writer.add_rope_dimension_count(int(head_dim))
    if head_dim * n_heads != config.hidden_size:
        writer.add_key_length(int(head_dim))
        writer.add_value_length(int(head_dim))
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(n_vocab))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["token_types"])
    writer.add_token_merges(vocab["merges"])
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
