"""Packing after the shared prefix: no row sees another, and the loss is the unpacked one."""

from __future__ import annotations

import pytest
import torch

from tunewright.data.batching import shared_prefix_length
from tunewright.train.loop import supervised_loss_sum, train_adapter
from tunewright.train.packing import pack_after_prefix, packing_pays, supports_packing
from tunewright.data.tokenize import IGNORE_INDEX, collate, encode_chat

from helpers import qa_rows


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    rows = [encode_chat(tokenizer, [m.model_dump() for m in r.messages], 128) for r in qa_rows(4)]
    return tokenizer, model, rows


def test_mask_lets_each_row_see_only_the_prefix_and_itself(tiny):
    tokenizer, _model, rows = tiny
    prefix = shared_prefix_length(rows)
    packed = pack_after_prefix(collate(rows, tokenizer.pad_token_id), prefix)
    mask, segments = packed.allowed, packed.segments
    additive = packed.attention_mask[0, 0]  # what the model gets: 0 where allowed, the float minimum elsewhere
    assert torch.equal(additive == 0, mask) and bool((additive[~mask] == torch.finfo(torch.float32).min).all())
    assert packed.input_ids.shape[1] == prefix + sum(len(r.input_ids) - prefix for r in rows)  # no padding
    for query in range(len(segments)):
        for key in range(len(segments)):
            allowed = key <= query and (segments[key] == segments[query] or segments[key] == -1)
            assert bool(mask[query, key]) == bool(allowed)
    for row_index, row in enumerate(rows):  # each row keeps the positions and ids it has alone
        where = segments == row_index
        assert packed.input_ids[0, where].tolist() == row.input_ids[prefix:]
        assert packed.position_ids[0, where].tolist() == list(range(prefix, len(row.input_ids)))
        labelled = [t for t in packed.targets[0, where].tolist() if t != IGNORE_INDEX]
        assert labelled == [t for t in row.labels[prefix + 1 :] if t != IGNORE_INDEX]


def test_changing_one_row_changes_no_other_rows_outputs(tiny):
    tokenizer, model, rows = tiny
    prefix = shared_prefix_length(rows)
    batch = collate(rows, tokenizer.pad_token_id)

    def hidden(batch):
        packed = pack_after_prefix(batch, prefix)
        with torch.no_grad():
            out = model.get_decoder()(input_ids=packed.input_ids, position_ids=packed.position_ids,
                                      attention_mask=packed.attention_mask, use_cache=False).last_hidden_state[0]
        return out, packed.segments

    before, segments = hidden(batch)
    changed = {k: v.clone() for k, v in batch.items()}
    length = int(changed["attention_mask"][1].sum())
    changed["input_ids"][1, prefix:length] = (changed["input_ids"][1, prefix:length] + 7) % model.config.vocab_size
    after, _ = hidden(changed)
    others = segments != 1
    assert torch.equal(before[others], after[others])  # rows 0, 2, 3 and the prefix: bit for bit
    assert not torch.allclose(before[segments == 1], after[segments == 1])


def test_packed_loss_and_gradients_equal_the_unpacked_ones(tiny_model_dir, tiny):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    tokenizer, _model, rows = tiny
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules="all-linear"))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    batch = collate(rows, tokenizer.pad_token_id)

    def loss_and_grads(prefix_len, packing):
        model.zero_grad()
        loss = supervised_loss_sum(model, batch, prefix_len, packing=packing)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    unpacked_loss, unpacked_grads = loss_and_grads(0, "off")  # every row alone, full length, no sharing
    packed_loss, packed_grads = loss_and_grads(shared_prefix_length(rows), "on")
    assert packed_loss == pytest.approx(unpacked_loss, rel=1e-5)
    for name, grad in unpacked_grads.items():
        assert torch.allclose(packed_grads[name], grad, atol=1e-5), name


def _tiny_family(family: str, attention: str):
    """A tiny random model of a family whose attention treats a 4D mask its own way (Gemma 2: eager only,
    softcapped logits, a sliding window on alternate layers)."""
    from transformers import AutoModelForCausalLM, Gemma2Config, LlamaConfig

    shape = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8, max_position_embeddings=256)
    config = (Gemma2Config(**shape, sliding_window=64, final_logit_softcapping=5.0) if family == "gemma2"
              else LlamaConfig(**shape))
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attention).eval()


def _shared_prefix_rows(n_rows=3, prefix=6, seed=0):
    from tunewright.data.tokenize import EncodedRow

    g = torch.Generator().manual_seed(seed)
    head = torch.randint(3, 97, (prefix,), generator=g).tolist()
    rows = []
    for n in range(n_rows):
        tail = torch.randint(3, 97, (5 + 3 * n,), generator=g).tolist()
        rows.append(EncodedRow(input_ids=head + tail, labels=[IGNORE_INDEX] * (prefix + 1) + tail[1:]))
    return rows


@pytest.mark.parametrize("family,attention", [("llama", "eager"), ("llama", "sdpa"), ("gemma2", "eager")])
def test_packed_loss_is_the_models_own_loss_on_each_row_alone(family, attention):
    model = _tiny_family(family, attention)
    rows = _shared_prefix_rows()
    # Reference: the model's own forward and loss (mean over labelled tokens, softcapping included),
    # one row at a time, no padding and no packing.
    expected = 0.0
    for row in rows:
        labels = torch.tensor([row.labels])
        with torch.no_grad():
            out = model(input_ids=torch.tensor([row.input_ids]), labels=labels)
        expected += out.loss.item() * int((labels[:, 1:] != IGNORE_INDEX).sum())
    batch = collate(rows, pad_token_id=0)
    with torch.no_grad():
        packed = supervised_loss_sum(model, batch, shared_prefix_length(rows), packing="on").item()
        padded = supervised_loss_sum(model, batch, 0, packing="off").item()
    assert packed == pytest.approx(expected, rel=1e-5)
    assert padded == pytest.approx(expected, rel=1e-5)


def test_rows_longer_than_the_sliding_window_are_not_packed():
    from transformers import Gemma2Config

    config = Gemma2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=64)
    config._attn_implementation = "eager"
    assert supports_packing(config, [40, 64]) and not supports_packing(config, [40, 65])


def test_packing_is_chosen_only_while_attention_stays_cheap():
    from transformers import LlamaConfig

    smollm2 = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                          num_key_value_heads=3, head_dim=64)
    assert packing_pays(smollm2, [58] * 8, 24)  # the demo's batches: about 300 packed tokens
    assert not packing_pays(smollm2, [250] * 32, 24)  # 7,000 packed tokens: attention would dominate
    assert not packing_pays(smollm2, [58], 24)  # one row: nothing to pack
    eager_only = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9)
    eager_only._attn_implementation = "flash_attention_2"  # ignores a 4D mask: never pack there
    assert not packing_pays(eager_only, [58] * 8, 24)


def test_training_packed_ends_where_training_unpacked_does(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from tunewright.config import TrainSpec
    from tunewright.models import prepare_base_model

    base = prepare_base_model(str(tiny_model_dir))
    adapters = {}
    for packing in ("on", "off"):
        spec = TrainSpec(r=4, alpha=8, batch_size=4, max_steps=4, learning_rate=1e-2, max_length=128, packing=packing)
        result = train_adapter(base=base, rows=qa_rows(16), spec=spec, run_dir=tmp_path / packing / "run",
                               adapter_dir=tmp_path / packing / "adapter")
        adapters[packing] = (result.losses, load_file(result.adapter_dir / "adapter_model.safetensors"))
    (on_losses, on), (off_losses, off) = adapters["on"], adapters["off"]
    assert on_losses == pytest.approx(off_losses, rel=1e-4)
    assert all(torch.allclose(on[k], off[k], atol=1e-5) for k in off)
