"""The architecture matrix: tiny random models of each common open family, each with its own chat
template and end-of-turn token, trained through the real loop (packed where packing applies), saved,
reloaded by plain peft and compared, and counted by the planner. Nothing is downloaded: configs are
built here and the tokenizers come from ``test_chat_families``.

What each family must show, against an independent reference:
- the loop's loss on a batch equals the model's own forward loss, row by row (softcapping included);
- every PEFT method either trains, and reloads from its folder with the trained model's logits, or is
  refused before training with a message naming the recipe field;
- the planner's trainable-parameter count equals the wrapped model's;
- generation stops at the family's end-of-turn token.
"""

from __future__ import annotations

import math

import pytest
import torch

from test_chat_families import FAMILIES as TEMPLATES
from test_chat_families import family_tokenizer
from tunewright.config import TrainSpec
from tunewright.data.batching import shared_prefix_length
from tunewright.data.schema import ChatRow
from tunewright.data.tokenize import collate, encode_chat, IGNORE_INDEX
from tunewright.errors import TunewrightError
from tunewright.models import load_model, prepare_base_model
from tunewright.models.stops import stop_token_ids
from tunewright.train.loop import supervised_loss_sum, train_adapter

LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# family -> (config class, chat template family in test_chat_families, or (template, bos, eos, end) here)
FAMILY_SPECS = {
    "llama": ("LlamaConfig", (LLAMA3, "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>")),
    "qwen2": ("Qwen2Config", (CHATML, None, "<|im_end|>", "<|im_end|>")),
    "qwen3": ("Qwen3Config", "qwen3"),
    "mistral": ("MistralConfig", "mistral-v0.3"),
    "gemma2": ("Gemma2Config", "gemma2"),
    "gemma3": ("Gemma3TextConfig", "gemma2"),  # Gemma 3 keeps Gemma 2's turn format
    "phi3": ("Phi3Config", "phi3"),
}
METHODS = ["lora", "dora", "ia3", "prefix-tuning", "prompt-tuning", "bottleneck"]
SETTINGS = {"prefix-tuning": {"num_virtual_tokens": 4}, "prompt-tuning": {"num_virtual_tokens": 4},
            "bottleneck": {"bottleneck_size": 8}}
SYSTEM = "Answer from the price list."
# peft knows no default IA3 layers for Phi-3's fused projections: the recipe must name them.
REFUSED = {("phi3", "ia3")}


def _rows(n=12):
    return [ChatRow(messages=[{"role": "system", "content": SYSTEM},
                              {"role": "user", "content": f"How much does item {i} cost?"},
                              {"role": "assistant", "content": f"Item {i} costs ${i * 7 + 3}."}]) for i in range(n)]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    import transformers

    made = {}
    for family, (config_name, template) in FAMILY_SPECS.items():
        if isinstance(template, tuple):
            TEMPLATES[f"_{family}"] = template
            template = f"_{family}"
        tokenizer = family_tokenizer(template)
        shape = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                     bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id)
        config = getattr(transformers, config_name)(**shape)
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config)
        folder = tmp_path_factory.mktemp(family)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        made[family] = folder
    return made


@pytest.mark.parametrize("family", sorted(FAMILY_SPECS))
def test_the_loops_loss_is_the_models_own_and_generation_stops_at_the_end_of_turn(family, family_dirs):
    from transformers import AutoTokenizer

    base = prepare_base_model(str(family_dirs[family]))
    model, tokenizer = load_model(base), AutoTokenizer.from_pretrained(base.folder)
    rows = [encode_chat(tokenizer, [m.model_dump() for m in r.messages], 256) for r in _rows(4)]
    expected = 0.0
    for row in rows:
        labels = torch.tensor([row.labels])
        with torch.no_grad():
            expected += model(input_ids=torch.tensor([row.input_ids]), labels=labels).loss.item() * int(
                (labels[:, 1:] != IGNORE_INDEX).sum())
    batch = collate(rows, tokenizer.pad_token_id)
    with torch.no_grad():
        for packing, prefix in (("on", shared_prefix_length(rows)), ("off", 0)):
            assert supervised_loss_sum(model, batch, prefix, packing=packing).item() == pytest.approx(expected, rel=1e-5)
    end = FAMILY_SPECS[family][1][3] if isinstance(FAMILY_SPECS[family][1], tuple) else TEMPLATES[FAMILY_SPECS[family][1]][3]
    assert tokenizer.convert_tokens_to_ids(end) in stop_token_ids(tokenizer, model.generation_config)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", sorted(FAMILY_SPECS))
def test_each_method_trains_and_reloads_or_is_refused_by_field(family, method, family_dirs, tmp_path, monkeypatch):
    from peft import PeftModel

    from tunewright.methods import METHODS

    from tunewright.plan.memory import model_shape, trainable_params

    base = prepare_base_model(str(family_dirs[family]))
    fields = dict(method=method, method_settings=SETTINGS.get(method, {}), learning_rate=0.02, batch_size=4,
                  max_steps=3, checkpoint_every=100, seed=0, max_length=128)
    if method in ("lora", "dora"):
        fields.update(r=4, alpha=8)
    spec = TrainSpec(**fields)
    cls, kept = METHODS.get_class(method), []
    original = cls.wrap

    def wrap(self, model, spec):  # keep the model the loop trains, to compare the reloaded one with
        kept.append(wrapped := original(self, model, spec))
        return wrapped

    monkeypatch.setattr(cls, "wrap", wrap)
    try:
        result = train_adapter(base=base, rows=_rows(), spec=spec, run_dir=tmp_path / "run",
                               adapter_dir=tmp_path / "adapter")
    except TunewrightError as refused:
        assert refused.field and refused.field.startswith("train."), str(refused)
        assert not (tmp_path / "adapter").exists()
        assert (family, method) in REFUSED, str(refused)
        return
    assert (family, method) not in REFUSED
    assert len(result.losses) == 3 and all(math.isfinite(x) for x in result.losses)
    counted, _, _ = trainable_params(base.folder, model_shape(base.folder), spec)
    assert counted == result.extra["trainable_params"]
    # Plain peft reloads what the loop trained: the same logits as the trained model, not the base's.
    reloaded = PeftModel.from_pretrained(load_model(base), result.adapter_dir).eval()
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        # Prompt learning puts its virtual tokens first: compare the positions of the text itself.
        real = next(m for m in kept if not next(m.parameters()).is_meta)  # the planner wraps a meta copy too
        trained, loaded = (m.eval()(input_ids=ids).logits[:, -ids.shape[1]:] for m in (real, reloaded))
        plain = load_model(base)(input_ids=ids).logits
    assert torch.allclose(trained, loaded, atol=1e-5), (trained - loaded).abs().max()
    assert not torch.allclose(loaded, plain)

