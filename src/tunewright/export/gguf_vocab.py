"""A Hugging Face fast tokenizer as a GGUF vocabulary, in the one of llama.cpp's two BPE flavours
it really is. Inferred from the tokenizer actually used in training, not from where the base came
from: the exported model must split text the way the adapter saw it.

- Byte-level BPE (GPT-2 style: Llama 3, Qwen, SmolLM) is llama.cpp's ``gpt2`` vocabulary: tokens in
  id order, merges, token types, and the pre-tokenizer's name (``tokenizer.ggml.pre``), since the
  split before BPE differs between models.
- SentencePiece-style BPE with byte fallback (Gemma, Mistral v0.1-v0.3, Llama 2: spaces written as
  ``▁``, unknown characters as ``<0xNN>`` byte tokens) is llama.cpp's ``llama`` vocabulary: tokens,
  token types and a score per token, with no merges. llama.cpp merges the adjacent pair whose
  joined token scores highest, so each merge product scores minus its merge rank, which replays the
  tokenizer's merge order; transformers' reader rebuilds merges from the same vocabulary. Whether a
  leading ``▁`` is added (Mistral, Llama 2) or not (Gemma) is ``add_space_prefix``. llama.cpp adds
  it after every special token too, as SentencePiece's own Llama tokenizer did, where a Metaspace
  "first" tokenizer (Mistral v0.3's file) adds it once: a GGUF format limit, not something this
  writer can carry, and one llama.cpp's own converter shares.

Added special tokens are CONTROL (kept whole, never produced from text by merges), other added
tokens USER_DEFINED; embedding rows no token uses (padding to a round size) get placeholders.
"""

from __future__ import annotations

import json
import re

from ..errors import TunewrightError

SPACE = "\u2581"  # SentencePiece's visible space
_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def _backend(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TunewrightError("GGUF export needs a fast (tokenizers) tokenizer")
    return json.loads(backend.to_str())


def _is_byte_level(node: dict | None, *, use_regex: bool | None = None) -> bool:
    return bool(node) and node.get("type") == "ByteLevel" and (use_regex is None or node.get("use_regex", True) == use_regex)


def pretokenizer_name(data: dict) -> str:
    """llama.cpp's name (tokenizer.ggml.pre) for how a byte-level tokenizer splits text before BPE."""
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


def _steps(node: dict | None) -> list[dict]:
    if not node:
        return []
    return list(node.get("normalizers") or node.get("pretokenizers") or []) if node.get("type") == "Sequence" else [node]


def space_prefix(data: dict) -> bool | None:
    """For a SentencePiece-style tokenizer: whether text gets a leading ``▁``. None when spaces are
    not turned into ``▁`` the way llama.cpp's ``llama`` vocabulary does it (nothing else to carry)."""
    normalizers, pre = _steps(data.get("normalizer")), _steps(data.get("pre_tokenizer"))
    replaces = any(n.get("type") == "Replace" and (n.get("pattern") or {}).get("String") == " "
                   and n.get("content") == SPACE for n in normalizers)
    prepends = any(n.get("type") == "Prepend" and n.get("prepend") == SPACE for n in normalizers)
    others = [n for n in normalizers if n.get("type") not in ("Replace", "Prepend")]
    # Gemma's files may add Split(" ") before BPE: a no-op, since no space is left after the normalizer.
    splits_on_space = all(p.get("type") == "Split" and (p.get("pattern") or {}).get("String") == " " for p in pre)
    if replaces and splits_on_space and not others:
        return prepends
    if len(pre) == 1 and pre[0].get("type") == "Metaspace" and pre[0].get("replacement") == SPACE \
            and not normalizers and not pre[0].get("split", False):
        return pre[0].get("prepend_scheme", "always") != "never"
    return None


def _token_table(data: dict, model: dict, n_vocab: int, normal_type) -> tuple[list[str], list[int]]:
    from gguf import TokenType

    vocab: dict[int, str] = {int(i): token for token, i in model["vocab"].items()}
    types: dict[int, int] = {i: normal_type(token) for i, token in vocab.items()}
    for added in data.get("added_tokens") or []:
        vocab[int(added["id"])] = added["content"]
        types[int(added["id"])] = TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED
    if max(vocab) >= n_vocab:
        raise TunewrightError(f"the tokenizer has ids up to {max(vocab)} but the model only {n_vocab} embeddings")
    tokens = [vocab.get(i, f"[PAD{i}]") for i in range(n_vocab)]
    return tokens, [int(types.get(i, TokenType.UNUSED)) for i in range(n_vocab)]


def _merges(model: dict) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]


def tokenizer_fields(tokenizer, n_vocab: int) -> dict:
    """The tokenizer as a GGUF vocabulary: ``model`` ("gpt2" or "llama"), ``tokens`` by id,
    ``token_types``, and ``merges`` and ``pre`` (gpt2) or ``scores`` and ``add_space_prefix`` (llama)."""
    from gguf import TokenType

    data = _backend(tokenizer)
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise TunewrightError(f"GGUF export supports BPE tokenizers (byte-level or SentencePiece-style); this one is "
                              f"{model.get('type')}")
    if _is_byte_level(data.get("decoder")):
        if (data.get("normalizer") or {}).get("type") not in (None, "NFC"):
            raise TunewrightError(f"GGUF export cannot carry the tokenizer's {data['normalizer']['type']} normalizer")
        pre = pretokenizer_name(data)
        tokens, types = _token_table(data, model, n_vocab, lambda token: TokenType.NORMAL)
        return {"model": "gpt2", "tokens": tokens, "token_types": types, "merges": _merges(model), "pre": pre}

    prefix = space_prefix(data)
    if not model.get("byte_fallback") or prefix is None:
        raise TunewrightError("GGUF export supports byte-level BPE and SentencePiece-style BPE (spaces as '▁', byte "
                              "fallback) tokenizers; this one is neither, and llama.cpp would split text differently")
    unk = model.get("unk_token")

    def normal_type(token: str) -> int:
        if _BYTE_TOKEN.match(token):
            return TokenType.BYTE
        return TokenType.UNKNOWN if token == unk else TokenType.NORMAL

    tokens, types = _token_table(data, model, n_vocab, normal_type)
    rank: dict[str, float] = {}
    for i, pair in enumerate(model.get("merges") or []):
        rank.setdefault("".join(pair if isinstance(pair, list) else pair.split(" ")), -float(i))
    # A token no merge makes (characters, bytes, specials) never wins a merge, so its score is moot.
    scores = [rank.get(token, 0.0) for token in tokens]
    return {"model": "llama", "tokens": tokens, "token_types": types, "scores": scores, "add_space_prefix": prefix}


def adds_token(tokenizer, token_id: int | None, first: bool) -> bool:
    """Whether encoding plain text adds ``token_id`` at the start (first) or end (not first)."""
    if token_id is None:
        return False
    ids = tokenizer("probe")["input_ids"]
    bare = tokenizer("probe", add_special_tokens=False)["input_ids"]
    return len(ids) > len(bare) and (ids[0] if first else ids[-1]) == token_id
