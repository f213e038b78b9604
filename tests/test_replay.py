"""Replay rows against forgetting: the base model's own answers, disjoint from what measures
forgetting, cached, cut-off answers dropped, and mixed into training with the run recording them."""

from __future__ import annotations

import json

import pytest

from tunewright.config import Recipe, ReplaySpec, TrainSpec
from tunewright.data.api import import_files
from tunewright.errors import TunewrightError
from tunewright.evaluate.forgetting import load_general_prompts, load_retention_probes
from tunewright.models import prepare_base_model
from tunewright.train import replay as replay_module
from tunewright.train.api import train
from tunewright.train.replay import replay_rows, shipped_prompts
from tunewright.workspace import Workspace

from helpers import chat_records, write_jsonl


def _prompts(tmp_path, texts):
    return write_jsonl(tmp_path / "replay.jsonl", [{"id": f"p{i}", "prompt": t} for i, t in enumerate(texts)])


def _measured():
    return {"KL prompts": [p.prompt for p in load_general_prompts()],
            "retention probes": [p.question for p in load_retention_probes()]}


def test_the_shipped_replay_prompts_are_disjoint_from_the_forgetting_sets():
    prompts = load_general_prompts(shipped_prompts())
    assert len(prompts) >= 200 and len({p.prompt for p in prompts}) == len(prompts)
    replay_module.check_disjoint(prompts, shipped_prompts(), _measured())


def test_a_prompt_that_overlaps_a_retention_probe_is_refused_naming_its_line(tmp_path):
    probe = load_retention_probes()[0].question  # "What is the capital of France?"
    path = _prompts(tmp_path, ["Write a limerick about a cat.", f"Quick: {probe.lower()}"])
    with pytest.raises(TunewrightError, match=r"replay\.jsonl:2: field 'prompt': replay prompt overlaps the retention probes"):
        replay_module.check_disjoint(load_general_prompts(path), path, _measured())
    # Sharing a 5-word run is enough, whatever surrounds it.
    kl = load_general_prompts()[0].prompt
    path = _prompts(tmp_path, ["Please tell me: " + " ".join(kl.split()[:6]) + " today"])
    with pytest.raises(TunewrightError, match="overlaps the KL prompts"):
        replay_module.check_disjoint(load_general_prompts(path), path, _measured())


def test_base_answers_are_cached_and_cut_off_answers_kept_open_ended(tmp_path, tiny_model_dir, monkeypatch):
    base = prepare_base_model(str(tiny_model_dir))
    path = _prompts(tmp_path, ["Name a colour.", "Write a long story.", "Say hello."])
    calls = []

    def fake_generate(model, tokenizer, conversations, *, max_new_tokens, batch_size):
        calls.append(len(conversations))
        long = " ".join(["word"] * (4 * max_new_tokens))  # far past the budget: the base was cut off
        return [long if "story" in c[0]["content"] else "Blue." for c in conversations]

    monkeypatch.setattr("tunewright.models.generation.generate_responses", fake_generate)
    spec = ReplaySpec(rows=3, max_new_tokens=16)
    first = replay_rows(base=base, spec=spec, prompts_path=path, measured=_measured(), cache_dir=tmp_path / "cache")
    assert calls == [3]
    assert all(r.meta["replay"] for r in first.rows) and len(first.rows) == 3
    short = [r for r in first.rows if not r.meta.get("open_end")]
    assert sorted(r.messages[0].content for r in short) == ["Name a colour.", "Say hello."]
    assert all(r.messages[-1].content == "Blue." for r in short)
    [cut] = [r for r in first.rows if r.meta.get("open_end")]  # cut off by the budget: kept without its end
    assert cut.messages[0].content == "Write a long story."
    assert first.record["asked"] == 3 and first.record["finished"] == 2 and first.record["open_ended"] == 1
    again = replay_rows(base=base, spec=spec, prompts_path=path, measured=_measured(), cache_dir=tmp_path / "cache")
    assert calls == [3] and [r.to_json() for r in again.rows] == [r.to_json() for r in first.rows]
    # Other settings are another cache entry: the rows follow the settings, never a stale file.
    replay_rows(base=base, spec=ReplaySpec(rows=2, max_new_tokens=16), prompts_path=path, measured=_measured(),
                cache_dir=tmp_path / "cache")
    assert calls == [3, 2]


def test_bf16_answers_come_from_bf16_weights_and_are_their_own_cache_entry(tmp_path, tiny_model_dir, monkeypatch):
    import torch

    base = prepare_base_model(str(tiny_model_dir))
    path = _prompts(tmp_path, ["Name a colour.", "Say hello."])
    dtypes = []

    def fake_generate(model, tokenizer, conversations, *, max_new_tokens, batch_size):
        dtypes.append(next(model.parameters()).dtype)
        return ["Blue." for _ in conversations]

    monkeypatch.setattr("tunewright.models.generation.generate_responses", fake_generate)
    spec = ReplaySpec(rows=2, max_new_tokens=8)
    fp32 = replay_rows(base=base, spec=spec, prompts_path=path, measured=_measured(), cache_dir=tmp_path / "cache")
    bf16 = replay_rows(base=base, spec=spec, prompts_path=path, measured=_measured(), cache_dir=tmp_path / "cache",
                       precision="bf16")
    assert dtypes == [torch.float32, torch.bfloat16]  # the second call did not read the fp32 answers
    assert (fp32.record["precision"], bf16.record["precision"]) == ("fp32", "bf16")
    assert len(list((tmp_path / "cache").glob("replay-*.jsonl"))) == 2


@pytest.mark.parametrize("rates, expected", [({"bf16": 2315e9, "fp32": 355e9}, "bf16"),  # AMX
                                             ({"bf16": 1.2e9, "fp32": 115e9}, "fp32"),  # bf16 emulated
                                             ({"bf16": 120e9, "fp32": 111e9}, "fp32")])  # a near tie
def test_cpu_generation_precision_follows_the_measured_rates(monkeypatch, rates, expected):
    from tunewright.plan import hardware

    monkeypatch.setattr(hardware, "measure_matmul", lambda dtype, device="cpu", threads=None: rates[dtype])
    assert hardware.cpu_generation_dtype() == expected


def test_training_mixes_in_replay_rows_and_records_them(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr("tunewright.models.generation.generate_responses",
                        lambda model, tokenizer, conversations, **kw: ["Fine, thanks." for _ in conversations])
    recipe = Recipe(name="shop", base_model=str(tiny_model_dir),
                    train=TrainSpec(r=4, alpha=8, batch_size=4, max_steps=2, max_length=128,
                                    replay=ReplaySpec(rows=5)))
    workspace = Workspace.init(tmp_path / "ws", recipe)
    import_files(workspace, [write_jsonl(tmp_path / "rows.jsonl", chat_records(12))], eval_fraction=0.0, seed=1)
    seen = []
    monkeypatch.setattr("tunewright.train.api.train_adapter",
                        lambda **kw: seen.append(kw["rows"]) or pytest.skip("rows captured"))
    with pytest.raises(pytest.skip.Exception):
        train(workspace)
    [rows] = seen
    assert len(rows) == 12 + 5 and sum(bool(r.meta.get("replay")) for r in rows) == 5
    [run] = workspace.registry.list_runs()
    assert run.config["replay"]["kept"] == 5 and run.config["replay"]["prompts_sha256"]
    cached = list((workspace.root / "cache").glob("replay-*.jsonl"))
    assert len(cached) == 1 and all(json.loads(line)["answer"] == "Fine, thanks." for line in cached[0].open())


def test_an_open_ended_answer_is_trained_without_its_end_of_turn_token(tiny_tokenizer):
    from tunewright.data.tokenize import IGNORE_INDEX, encode_chat

    messages = [{"role": "user", "content": "Tell me a story."}, {"role": "assistant", "content": "Once upon a time"}]
    closed = encode_chat(tiny_tokenizer, messages, 256)
    opened = encode_chat(tiny_tokenizer, messages, 256, open_end=True)
    assert closed.input_ids == opened.input_ids
    trained = lambda row: [t for t, label in zip(row.input_ids, row.labels) if label != IGNORE_INDEX]  # noqa: E731
    answer = tiny_tokenizer("Once upon a time", add_special_tokens=False)["input_ids"]
    # The open-ended row learns exactly the answer's tokens; the finished one also its end of turn.
    assert trained(opened) == answer
    assert trained(closed)[: len(answer)] == answer and len(trained(closed)) > len(answer)
    assert tiny_tokenizer.convert_tokens_to_ids("<|im_end|>") in trained(closed)[len(answer):]
