"""GGUF export beyond Llama: tiny Mistral, Qwen2, Gemma 2 and Gemma 3 models written by our writer and
read back by transformers' own GGUF reader (an independent implementation): every tensor bit for bit
in F32 (Gemma's norms within one rounding, as they travel plus one) and the same logits; SentencePiece
tokenizers encode alike after the round trip; architectures the writer would get wrong are refused
by field."""

from __future__ import annotations

import pytest
import torch

from tunewright.errors import TunewrightError
from tunewright.export.gguf_writer import check_gguf_supported, write_gguf


def _tiny(family: str, tokenizer, **overrides):
    import transformers

    config_class = {"mistral": transformers.MistralConfig, "qwen2": transformers.Qwen2Config,
                    "qwen3": transformers.Qwen3Config, "phi3": transformers.Phi3Config,
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
    ({"model_type": "phi"}, "GGUF export supports gemma2, gemma3, gemma3_text, llama, mistral, phi3, qwen2, qwen3 "
                            "models; this base is 'phi'"),
    ({"model_type": "phi3", "rope_scaling": {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [2.0]}},
     "'longrope' rope scaling"),
    ({"model_type": "qwen3", "use_sliding_window": True}, "qwen3 models with use_sliding_window"),
    ({**{"model_type": "gemma2", "hidden_size": 32, "num_attention_heads": 4, "head_dim": 8, "num_hidden_layers": 2},
      "query_pre_attn_scalar": 256}, "query_pre_attn_scalar 256, where llama.cpp uses 8"),
    ({"model_type": "gemma2", "hidden_size": 32, "num_attention_heads": 4, "head_dim": 8, "num_hidden_layers": 2,
      "layer_types": ["full_attention", "full_attention"]}, "every 2th layer full"),
    ({"model_type": "gemma2", "hidden_size": 32, "num_attention_heads": 4, "head_dim": 8, "num_hidden_layers": 2,
      "attn_logit_softcapping": None, "final_logit_softcapping": 30.0}, "attn_logit_softcapping is unset"),
    ({"model_type": "gemma3_text", "hidden_size": 32, "num_attention_heads": 4, "head_dim": 8, "num_hidden_layers": 2,
      "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                          "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}}},
     "full layers' scaling 'linear'"),
    ({"model_type": "mistral", "sliding_window": 4096}, "mistral models with sliding_window"),
    ({"model_type": "qwen2", "use_sliding_window": True}, "use_sliding_window"),
    ({"model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "'yarn' rope scaling"),
    ({"model_type": "mistral", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "'llama3' rope scaling"),
])
def test_what_the_writer_would_get_wrong_is_refused_by_field(config, message):
    with pytest.raises(TunewrightError, match=message) as caught:
        check_gguf_supported(config)
    assert caught.value.field == "formats"


@pytest.mark.parametrize("family,overrides", [
    ("qwen3", {"head_dim": 16}),  # wider than hidden/heads, as every Qwen3 size is
    ("qwen3", {"head_dim": 8}),  # equal to hidden/heads, so the file states no key_length
    ("phi3", {"sliding_window": 64}),
    ("phi3", {"partial_rotary_factor": 0.5}),  # Phi-4-mini rotates part of each head
])
def test_qwen3_and_phi3_read_back_as_llama_cpp_runs_them(family, overrides, tiny_model_dir, tmp_path):
    """Qwen3 (q/k norms, its own head width) and Phi-3 (fused qkv and gate_up) read back by
    transformers' reader plus the settings llama.cpp takes from the file and that reader drops
    (key_length, rope.dimension_count): every tensor bit for bit and the same logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewright.export.check import _load_gguf

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _tiny(family, tokenizer, **overrides)
    path = write_gguf(model, tokenizer, tmp_path / f"{family}.gguf", dtype="f32", name=f"tiny-{family}")
    loaded, _ = _load_gguf(path)
    expected, got = model.state_dict(), loaded.state_dict()
    assert any(k.endswith(("q_norm.weight", "qkv_proj.weight")) for k in expected)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    ids = torch.arange(3, 43).remainder(len(tokenizer)).unsqueeze(0)
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, loaded(input_ids=ids).logits, atol=1e-5)
    if "partial_rotary_factor" in overrides:  # transformers' reader alone rotates the whole head
        alone = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
        with torch.no_grad():
            assert not torch.allclose(model(input_ids=ids).logits, alone(input_ids=ids).logits, atol=1e-3)


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def test_llama3_rope_scaling_travels_as_llama_cpp_rope_factors(tiny_model_dir, tmp_path):
    """Llama 3.1's frequency-dependent scaling: head_dim 8 gives four frequencies with wavelengths
    6, 63, 628 and 6283 positions against an original context of 64, so one is kept, one is on the
    ramp and two are slowed 8x. Read back the way llama.cpp reads the file, the model is the same;
    without the factors (transformers' reader alone) it is not, so the factors are what carries it."""
    from gguf import GGUFReader
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
        assert apply_rope_factors(loaded, GGUFReader(path))
        assert torch.allclose(expected, loaded(input_ids=ids).logits, atol=1e-4)
    plain = write_gguf(_tiny("llama", tokenizer), tokenizer, tmp_path / "plain.gguf", dtype="f32", name="plain")
    assert not apply_rope_factors(loaded, GGUFReader(plain))  # no scaling, no tensor: nothing changes


# --- Gemma: SentencePiece-style vocabulary, norms stored plus one, settings llama.cpp fixes -------

GEMMA_TEXTS = ["What does the Ridgeback 2 Tent cost?", "It costs $189 and weighs 2.1 kg.",
               "Returns are free within 60 days.  Two  spaces, then a tab\there.", "naïve café ☕ déjà vu"]
SPM_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]


def spm_tokenizer(prefix: bool):
    """A Gemma-style tokenizer (prefix False) or a Mistral v0.3 one (prefix True): BPE over text whose
    spaces are '▁', byte fallback for unseen characters, ids in merge order as in the real ones."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from test_chat_families import GEMMA2

    space = normalizers.Replace(" ", "\u2581")
    learner = Tokenizer(models.BPE())
    learner.normalizer = space
    learner.train_from_iterator(GEMMA_TEXTS[:3] * 4, trainer=trainers.BpeTrainer(vocab_size=200, show_progress=False))
    learned = json.loads(learner.to_str())["model"]
    pieces = [token for token, _ in sorted(learned["vocab"].items(), key=lambda item: item[1])]
    vocab = {token: i for i, token in enumerate(SPM_SPECIALS + [f"<0x{b:02X}>" for b in range(256)] + pieces)}
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    if prefix:  # as Mistral v0.3's file has it
        core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    else:  # as Gemma 3's file has it: the Split is a no-op after the normalizer, which the writer must see
        core.normalizer = space
        core.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    core.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
                                     + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    core.add_special_tokens(SPM_SPECIALS)
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>", unk_token="<unk>")
    tokenizer.chat_template = GEMMA2
    return tokenizer


def _gemma(family: str, tokenizer, **overrides):
    import transformers

    config_class = {"gemma2": transformers.Gemma2Config, "gemma3": transformers.Gemma3TextConfig}[family]
    shape = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, max_position_embeddings=512,
                 sliding_window=4, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                 pad_token_id=tokenizer.pad_token_id)
    if family == "gemma2":  # small caps, so capping shapes these tiny logits
        shape.update(num_hidden_layers=2, attn_logit_softcapping=2.0, final_logit_softcapping=1.5)
    else:  # one full layer after five sliding ones, and one more sliding
        shape.update(num_hidden_layers=7, rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 50000.0}})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config_class(**{**shape, **overrides})).eval()
    with torch.no_grad():  # norms away from zero, so a norm read without its offset shows
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(std=0.5)
    return model


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_gemma_reads_back_as_llama_cpp_runs_it(family, tmp_path):
    """Read back with transformers' reader plus what llama.cpp takes from the file (attention scale,
    soft-capping): the same logits over 12 positions, three times the sliding window. transformers'
    reader alone leaves those at its class defaults (softcaps 50/30, scale 1/16) and differs."""
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunewright.export.gguf_writer import llama_cpp_reading

    tokenizer = spm_tokenizer(prefix=False)
    model = _gemma(family, tokenizer)
    path = write_gguf(model, tokenizer, tmp_path / f"{family}.gguf", dtype="f32", name=f"tiny-{family}")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
    config = AutoConfig.from_pretrained(tmp_path, gguf_file=path.name)
    llama_cpp_reading(config, GGUFReader(path))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, config=config,
                                                  dtype=torch.float32).eval()
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.allclose(expected[key], got[key], atol=1e-6, rtol=0), key  # norms: (w + 1) - 1
    ids = torch.tensor([[2, 17, 42, 99, 3, 150, 7, 8, 9, 10, 11, 12]])
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        assert torch.allclose(reference, loaded(input_ids=ids).logits, atol=1e-5)
        assert not torch.allclose(reference, plain(input_ids=ids).logits, atol=1e-3)


@pytest.mark.parametrize("prefix", [False, True], ids=["gemma-style", "mistral-style"])
def test_a_sentencepiece_vocabulary_encodes_alike_after_the_round_trip(prefix, tmp_path, tiny_model_dir):
    """Every text, including characters the vocabulary lacks (byte fallback) and runs of spaces, and a
    rendered chat prompt, gives the same ids from the GGUF's tokenizer as from the original."""
    from transformers import AutoTokenizer

    from tunewright.export.gguf_vocab import tokenizer_fields
    from tunewright.models.chat import render

    tokenizer = spm_tokenizer(prefix=prefix)
    family = "mistral" if prefix else "gemma2"
    model = _tiny("mistral", tokenizer) if prefix else _gemma("gemma2", tokenizer)
    fields = tokenizer_fields(tokenizer, len(tokenizer))
    assert fields["model"] == "llama" and fields["add_space_prefix"] is prefix
    assert fields["token_types"][SPM_SPECIALS.index("<end_of_turn>")] == 3  # CONTROL: kept whole
    assert fields["token_types"][len(SPM_SPECIALS)] == 6  # <0x00>: BYTE
    path = write_gguf(model, tokenizer, tmp_path / f"{family}.gguf", dtype="f32", name="spm")
    loaded = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    prompt = render(tokenizer, [{"role": "user", "content": "What does the tent cost?"}])
    for text in GEMMA_TEXTS + [prompt]:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"], text
    assert any(tokenizer.convert_ids_to_tokens(i).startswith("<0x") for i in tokenizer(GEMMA_TEXTS[3])["input_ids"])


def test_a_tokenizer_of_neither_flavour_is_refused():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from tunewright.export.gguf_vocab import tokenizer_fields

    wordlevel = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, "[UNK]")))
    with pytest.raises(TunewrightError, match="supports BPE tokenizers"):
        tokenizer_fields(wordlevel, 2)
    no_fallback = spm_tokenizer(prefix=False)
    data = no_fallback.backend_tokenizer.to_str().replace('"byte_fallback":true', '"byte_fallback":false')
    broken = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(data))
    with pytest.raises(TunewrightError, match="neither"):
        tokenizer_fields(broken, len(no_fallback))


def test_a_gemma_base_exports_through_the_api_and_passes_its_own_parity_check(tmp_path):
    """The whole path a user takes: export_adapter writes the GGUF of a Gemma 2 base (SentencePiece
    vocabulary, soft-capping, norms plus one) and its check, which reads the file as llama.cpp does,
    agrees with the model token for token and in logits. (Its Modelfile is refused: Gemma 2's
    template rejects a system message, tested in test_export.)"""
    from tunewright.export import export_adapter
    from tunewright.models.loading import BaseModelInfo

    tokenizer = spm_tokenizer(prefix=False)
    folder = tmp_path / "gemma2"
    _gemma("gemma2", tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    probes = [[{"role": "user", "content": "What does the tent cost?"}]]
    result = export_adapter(BaseModelInfo("gemma2", folder, "0"), None, tmp_path / "out", name="g2",
                            formats=("gguf",), check=True, probes=probes, max_new_tokens=12)
    assert result.passed, result.check["failures"]
    assert result.check["formats"]["gguf"]["max_logit_diff"] < 1e-4
    assert result.check["reference_outputs"][0]["new_tokens"] > 1  # real text was compared
