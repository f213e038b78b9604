"""Every registered PEFT method on the tiny model: trains, saves, reloads identically, merges or refuses to.

Plus the checks that refuse options which cannot work, each naming the recipe field.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from tunewright.config import TrainSpec
from tunewright.errors import TunewrightError
from tunewright.models import load_model, load_tokenizer, prepare_base_model
from tunewright.methods.attach import load_adapter, merge_adapter
from tunewright.train.loop import train_adapter
from tunewright.methods import METHODS, available_methods, check_method, get_method, merge_policy

from helpers import qa_rows

TRAINABLE = [name for name in available_methods() if name != "qlora"]  # qlora needs CUDA + bitsandbytes
# Learning rates that move each method visibly within 8 steps on a random 2-layer model.
LEARNING_RATE = {"ia3": 0.1, "llama-adapter": 0.05, "prompt-tuning": 0.1, "p-tuning": 0.02, "prefix-tuning": 0.05}
SETTINGS = {"prefix-tuning": {"num_virtual_tokens": 8}, "prompt-tuning": {"num_virtual_tokens": 8},
            "p-tuning": {"num_virtual_tokens": 8, "encoder_hidden_size": 32}, "llama-adapter": {"adapter_len": 4},
            "bottleneck": {"bottleneck_size": 8}}
LORA_FAMILY = {"lora", "rslora", "dora", "pissa", "olora", "loraplus", "qlora"}


@pytest.fixture(scope="module")
def tiny_base(tiny_model_dir):
    return prepare_base_model(str(tiny_model_dir))


def _spec(method: str, **overrides) -> TrainSpec:
    fields = dict(method=method, method_settings=SETTINGS.get(method, {}), learning_rate=LEARNING_RATE.get(method, 0.02),
                  batch_size=4, max_steps=8, checkpoint_every=100, seed=0, max_length=128)
    if method in LORA_FAMILY:
        fields.update(r=4, alpha=8)
    return TrainSpec(**{**fields, **overrides})


def _train_keeping_model(tiny_base, tmp_path, monkeypatch, spec):
    """Train through the real loop and keep the model it trained (the loop returns only the files)."""
    cls, kept = METHODS.get_class(spec.method), []
    original = cls.wrap

    def wrap(self, model, spec):
        kept.append(wrapped := original(self, model, spec))
        return wrapped

    monkeypatch.setattr(cls, "wrap", wrap)
    result = train_adapter(base=tiny_base, rows=qa_rows(16), spec=spec, run_dir=tmp_path / "run",
                           adapter_dir=tmp_path / "adapter")
    return result, kept[-1].eval()


def _logits(model, batch):
    with torch.inference_mode():
        return model(**batch).logits


def _generate_matches_forward(model, ids, n=4) -> bool:
    """``generate``, with its key/value cache, scores each step as a plain forward pass over the text so far.

    Compared on scores, not tokens: a barely trained adapter rarely changes a greedy token, so a
    generation path that silently drops the adapter would still pass a token comparison.
    """
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=0, eos_token_id=None, output_scores=True, return_dict_in_generate=True)
        tokens = out.sequences[:, ids.shape[1]:]
        for step, scores in enumerate(out.scores):
            prefix = torch.cat([ids, tokens[:, :step]], dim=1)
            if not torch.allclose(scores, model(input_ids=prefix).logits[:, -1], atol=1e-4):
                return False
    return True


@pytest.mark.parametrize("method", TRAINABLE)
def test_method_trains_saves_reloads_and_merges_or_refuses(method, tiny_base, tmp_path, monkeypatch):
    from peft import PeftModel

    from tunewright.models.generation import generate_responses

    from safetensors import safe_open

    spec = _spec(method)
    result, trained = _train_keeping_model(tiny_base, tmp_path, monkeypatch, spec)
    losses = result.losses
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert min(losses[-3:]) < losses[0], losses  # every method learns something in 8 steps
    assert 0 < result.extra["trainable_share"] < 1 and result.extra["trainable_params"] > 0
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == get_method(method).peft_type
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    if config["peft_type"] == "LORA":
        # The variants differ from plain LoRA only by these switches: one that does not reach the
        # file reloads, everywhere else, as plain LoRA with another scale or without its magnitudes.
        assert config["use_rslora"] is (method == "rslora") and config["use_dora"] is (method == "dora")
        with safe_open(str(result.adapter_dir / "adapter_model.safetensors"), framework="pt") as saved:
            assert any("lora_magnitude_vector" in key for key in saved.keys()) == (method == "dora")

    tokenizer = load_tokenizer(tiny_base, padding_side="left")
    texts = ["<|im_start|>user\nHow much does item 3 cost?<|im_end|>\n<|im_start|>assistant\n",
             "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    # Plain peft, as a user outside tunewright would load it (bottleneck: once our tuner module is imported).
    unmerged = PeftModel.from_pretrained(load_model(tiny_base), result.adapter_dir).eval()
    if method in {"lora", "rslora", "dora", "loraplus"}:
        from peft.tuners.lora import LoraLayer

        # What the switches mean once plain peft reads them: rsLoRA scales by alpha/sqrt(r), not alpha/r.
        scale = spec.alpha / (math.sqrt(spec.r) if method == "rslora" else spec.r)
        layers = [m for m in unmerged.modules() if isinstance(m, LoraLayer)]
        assert layers and all(layer.scaling["default"] == pytest.approx(scale) for layer in layers)
        assert all(bool(layer.use_dora["default"]) is (method == "dora") for layer in layers)
    expected = _logits(trained, batch)
    assert torch.allclose(_logits(unmerged, batch), expected, atol=1e-5), (_logits(unmerged, batch) - expected).abs().max()
    conversations = [[{"role": "user", "content": "How much does item 3 cost?"}], [{"role": "user", "content": "hi"}]]
    answers = generate_responses(trained, tokenizer, conversations, max_new_tokens=6)
    assert _generate_matches_forward(trained, tokenizer(texts[:1], return_tensors="pt")["input_ids"])

    attached = load_adapter(load_model(tiny_base), result.adapter_dir)
    assert attached.merged == get_method(method).supports_merge == merge_policy(config["peft_type"]).mergeable
    assert generate_responses(attached.model, tokenizer, conversations, max_new_tokens=6) == answers
    if attached.merged:
        assert not hasattr(attached.model, "peft_config")  # a plain transformers model again
        assert torch.allclose(_logits(attached.model, batch), expected, atol=1e-4)
        merged = merge_adapter(unmerged)
        assert torch.allclose(_logits(merged, batch), expected, atol=1e-4)
    else:
        assert attached.not_merged_because
        with pytest.raises(TunewrightError, match=f"method {method} cannot be merged into the base: "):
            merge_adapter(unmerged)


def test_loraplus_gives_lora_b_its_own_learning_rate(tiny_base):
    method = get_method("loraplus")
    for settings, ratio in (({}, 16.0), ({"loraplus_ratio": 4}, 4.0)):
        spec = _spec("loraplus", method_settings=settings)
        model = method.wrap(load_model(tiny_base), spec)
        groups = method.optimizer_groups(model, spec)
        names = {id(p): n for n, p in model.named_parameters()}
        b_group = next(g for g in groups if any("lora_B" in names[id(p)] for p in g["params"]))
        assert b_group["lr"] == pytest.approx(spec.learning_rate * ratio)
        assert all("lora_B" in names[id(p)] for p in b_group["params"])
        rest = [p for g in groups if g is not b_group for p in g["params"]]
        assert rest and all("lora_B" not in names[id(p)] for p in rest) and all(g["lr"] == spec.learning_rate
                                                                               for g in groups if g is not b_group)
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        assert trainable == {id(p) for g in groups for p in g["params"]}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_qlora_without_cuda_refuses_before_loading_anything(tiny_base, tmp_path, monkeypatch):
    import transformers

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
    with pytest.raises(TunewrightError) as info:
        train_adapter(base=tiny_base, rows=qa_rows(4), spec=_spec("qlora"), run_dir=tmp_path / "r",
                      adapter_dir=tmp_path / "a")
    message = str(info.value)
    assert "field 'train.method'" in message and "CUDA GPU" in message and "bitsandbytes" in message
    assert "method: lora" in message and "dora" in message
    with pytest.raises(TunewrightError, match="CUDA"):
        check_method(_spec("qlora"))


def _refused(tiny_base, tmp_path, spec) -> str:
    """Training is refused before any step and before any adapter is written; the message."""
    def no_steps(info):
        raise AssertionError("a training step ran")

    with pytest.raises(TunewrightError) as info:
        train_adapter(base=tiny_base, rows=qa_rows(4), spec=spec, run_dir=tmp_path / "r", adapter_dir=tmp_path / "a",
                      callbacks=[no_steps])
    assert not (tmp_path / "a").exists()
    return str(info.value)


def test_unknown_method_lists_the_known_ones(tiny_base, tmp_path):
    message = _refused(tiny_base, tmp_path, TrainSpec(method="lora-xl"))
    assert "field 'train.method'" in message and "unknown PEFT method 'lora-xl'" in message
    assert all(name in message for name in ("bottleneck", "dora", "prefix-tuning", "qlora"))


def test_lora_rank_on_prompt_tuning_is_refused(tiny_base, tmp_path):
    message = _refused(tiny_base, tmp_path, TrainSpec(method="prompt-tuning", r=8))
    assert "field 'train.r'" in message and "a LoRA rank on prompt-tuning" in message
    assert "num_virtual_tokens" in message  # points at the method's own settings
    with pytest.raises(TunewrightError, match="field 'train.target_modules'"):
        check_method(TrainSpec(method="ia3", target_modules=["q_proj"]))
    # `tunewright init` writes every default into the recipe: an unchanged default is not an error.
    check_method(TrainSpec(method="prompt-tuning", r=16, alpha=32, dropout=0.0, target_modules="all-linear"))


def test_target_module_matching_nothing_names_it_and_lists_the_linear_layers(tiny_base, tmp_path):
    message = _refused(tiny_base, tmp_path, _spec("lora", target_modules=["q_proj", "qkv_proj"]))
    assert "field 'train.target_modules'" in message and "'qkv_proj' matches nothing" in message
    assert "q_proj" in message.split("linear modules:")[1] and "down_proj" in message
    assert "lm_head" not in message
    message = _refused(tiny_base, tmp_path, _spec("bottleneck", method_settings={"mlp_output": "fc2"}))
    assert "field 'train.method_settings.mlp_output'" in message and "'fc2'" in message
    message = _refused(tiny_base, tmp_path, _spec("ia3", method_settings={"target_modules": ["k_proj", "wq"]}))
    assert "field 'train.method_settings.target_modules'" in message and "'wq'" in message


@pytest.mark.parametrize(
    ("method", "settings", "field", "text"),
    [
        ("lora", {"rank": 8}, "train.method_settings.rank", "unknown setting for PEFT method 'lora' (its settings: none)"),
        ("prompt-tuning", {"num_virtual_token": 8}, "train.method_settings.num_virtual_token", "num_virtual_tokens"),
        ("prompt-tuning", {"num_virtual_tokens": 0}, "train.method_settings.num_virtual_tokens", "greater than or equal"),
        ("loraplus", {"loraplus_ratio": -1}, "train.method_settings.loraplus_ratio", "greater than 0"),
        ("bottleneck", {"variant": "adapterdrop"}, "train.method_settings.variant", "houlsby"),
        ("bottleneck", {"reduction_factor": 8, "bottleneck_size": 4}, "train.method_settings", "not both"),
        ("ia3", {"target_modules": ["k_proj"], "feedforward_modules": ["down_proj"]}, "train.method_settings",
         "must be among target_modules"),
        ("prefix-tuning", {"encoder_hidden_size": 64}, "train.method_settings", "prefix_projection"),
    ],
)
def test_bad_method_settings_name_the_field(method, settings, field, text):
    with pytest.raises(TunewrightError) as info:
        check_method(TrainSpec(method=method, method_settings=settings))
    assert f"field '{field}'" in str(info.value) and text in str(info.value)


def test_model_specific_refusals(tiny_base, tmp_path):
    message = _refused(tiny_base, tmp_path, _spec("llama-adapter", method_settings={"adapter_layers": 5}))
    assert "field 'train.method_settings.adapter_layers'" in message and "2 decoder layers" in message
    message = _refused(tiny_base, tmp_path, _spec("prefix-tuning", gradient_checkpointing=True))
    assert "field 'train.gradient_checkpointing'" in message


def test_every_method_describes_itself_and_says_whether_it_merges():
    for name in available_methods():
        cls = METHODS.get_class(name)
        assert cls.description and cls.peft_type and isinstance(cls.supports_merge, bool)
        assert cls.supports_merge or cls.merge_refusal
    assert {n for n in available_methods() if METHODS.get_class(n).supports_merge} == LORA_FAMILY | {"ia3"}


def test_merge_adapter_on_a_plain_model_is_a_clear_error(tiny_base):
    with pytest.raises(TunewrightError, match="no adapter loaded"):
        merge_adapter(load_model(tiny_base))


@pytest.mark.parametrize(
    ("method", "settings"),
    [("p-tuning", None), ("prefix-tuning", {"num_virtual_tokens": 8, "prefix_projection": True, "encoder_hidden_size": 16}),
     ("bottleneck", None), ("dora", None)],
)
def test_resume_restores_what_training_updates(method, settings, tiny_base, tmp_path):
    """P-tuning's and projected prefix-tuning's adapter files hold the encoder's output, not the
    encoder; a checkpoint must keep the encoder itself or a resumed run drifts from the clean one."""
    from safetensors.torch import load_file

    spec = _spec(method, checkpoint_every=3, **({"method_settings": settings} if settings else {}))
    common = dict(base=tiny_base, rows=qa_rows(16), spec=spec)
    clean = train_adapter(**common, run_dir=tmp_path / "clean", adapter_dir=tmp_path / "clean-adapter")

    def crash(info):
        if info.step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_adapter(**common, run_dir=tmp_path / "crash", adapter_dir=tmp_path / "crash-adapter", callbacks=[crash])
    resumed = train_adapter(**common, run_dir=tmp_path / "crash", adapter_dir=tmp_path / "crash-adapter", resume=True)
    assert resumed.resumed_from_step == 3 and resumed.losses == pytest.approx(clean.losses, abs=1e-6)
    expected = load_file(clean.adapter_dir / "adapter_model.safetensors")
    got = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert set(got) == set(expected)
    assert all(torch.allclose(got[k], expected[k], atol=1e-6) for k in expected)


def test_sequence_length_beyond_the_model_context_is_refused(tiny_base, tmp_path):
    from transformers import AutoConfig

    context = AutoConfig.from_pretrained(tiny_base.folder).max_position_embeddings
    message = _refused(tiny_base, tmp_path, _spec("lora", max_length=context + 1))
    assert "field 'train.max_length'" in message and f"beyond the model's context of {context} tokens" in message
    message = _refused(tiny_base, tmp_path, _spec("prompt-tuning", max_length=context - 4))
    assert "plus 8 virtual tokens" in message


def test_what_other_stages_ask_is_answered_by_the_method_class():
    from tunewright.methods import adapter_shares_lane, get_method, vllm_refusal
    from tunewright.plan.memory import ModelShape, weight_bytes

    # The server's shared LoRA lane and vLLM: plain LoRA yes, DoRA and other peft types no, each with a reason.
    assert adapter_shares_lane({"peft_type": "LORA"}) and vllm_refusal({"peft_type": "LORA", "r": 8}) is None
    assert not adapter_shares_lane({"peft_type": "LORA", "use_dora": True})
    # Modules saved whole would be left out of the shared lane's merged LoRA weights (test_serve_vision).
    assert not adapter_shares_lane({"peft_type": "LORA", "modules_to_save": ["connector"]})
    assert adapter_shares_lane({"peft_type": "LORA", "modules_to_save": None})
    assert "DoRA" in vllm_refusal({"peft_type": "LORA", "use_dora": True})
    assert not adapter_shares_lane({"peft_type": "IA3"}) and "this adapter is IA3" in vllm_refusal({"peft_type": "IA3"})
    assert not adapter_shares_lane({"peft_type": "NOT_A_TYPE"}) and vllm_refusal({"peft_type": "NOT_A_TYPE"})
    # The planner's weight bytes: QLoRA holds linears in NF4 (0.5 byte + one fp32 scale per 64) and the
    # rest in bf16; every other method holds all parameters at the training dtype.
    shape = ModelShape(n_params=10**6, n_layers=2, hidden=16, intermediate=32, n_heads=2, n_kv_heads=1, head_dim=8,
                       vocab=100, tied=True)
    linear = shape.linear_params
    assert 0 < linear < shape.n_params
    assert weight_bytes(shape, "fp32", "lora") == 4 * 10**6 and weight_bytes(shape, "bf16", "ia3") == 2 * 10**6
    assert weight_bytes(shape, "fp32", "qlora") == int(linear * (0.5 + 4 / 64) + (10**6 - linear) * 2)
    assert get_method("qlora").quantized_base and not get_method("lora").quantized_base
    assert get_method("lora").smaller_alternative == "qlora" and get_method("qlora").smaller_alternative is None
    assert get_method("bottleneck").load_prelude and not get_method("lora").load_prelude


def test_a_new_method_class_is_all_the_server_and_exporters_need(monkeypatch):
    from tunewright.methods import METHODS, PeftMethod, adapter_shares_lane, merge_policy, vllm_refusal

    class Shared(PeftMethod):
        name = "test-shared"
        peft_type = "TEST_SHARED"
        supports_merge = True

        @classmethod
        def shares_lane(cls, adapter_config):
            return True

        @classmethod
        def vllm_refusal(cls, adapter_config):
            return None

    monkeypatch.setitem(METHODS._classes, Shared.name, Shared)  # registered for this test only
    config = {"peft_type": "TEST_SHARED"}
    assert adapter_shares_lane(config) and vllm_refusal(config) is None and merge_policy("TEST_SHARED").mergeable
