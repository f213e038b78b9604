"""The forgetting check: KL drift on general prompts and the retention probe, alone and inside `tunewright eval`."""

from __future__ import annotations

import json

import pytest
import torch

from tunewright.config import TrainSpec
from tunewright.errors import TunewrightError
from tunewright.evaluate.forgetting import (
    SUMMARY_KEYS,
    ForgettingCheck,
    GeneralPrompt,
    RetentionProbe,
    _selected_log_probs,
    continuation_kl,
    greedy_continuations,
    load_general_prompts,
    load_retention_probes,
    score_retention,
)
from tunewright.evaluate.matching import answer_matches
from tunewright.models import load_model, load_tokenizer, prepare_base_model
from tunewright.methods.attach import load_adapter
from tunewright.methods import available_methods, get_method

from helpers import chat_records, init_cli_workspace, run_cli, write_jsonl

# One per kind of adapter module: rslora, pissa, olora, loraplus and qlora (CUDA only) differ from lora
# only in initialisation, optimiser or base precision, not in how a loaded adapter runs.
METHODS = [name for name in ("lora", "dora", "ia3", "prefix-tuning", "prompt-tuning", "p-tuning", "llama-adapter",
                             "bottleneck") if name in available_methods()]
SETTINGS = {"prefix-tuning": {"num_virtual_tokens": 4}, "prompt-tuning": {"num_virtual_tokens": 4},
            "p-tuning": {"num_virtual_tokens": 4, "encoder_hidden_size": 16}, "llama-adapter": {"adapter_len": 4},
            "bottleneck": {"bottleneck_size": 8}}
EASY = {"cap-01", "cap-03", "num-01", "opp-01", "time-10"}  # SmolLM2-135M answers these
PROMPTS = [GeneralPrompt("a", "greeting", "hello world how are you"), GeneralPrompt("b", "shop", "the price is 189"),
           GeneralPrompt("c", "shop", "How much does the Ridgeback 2 Tent cost?")]


@pytest.fixture(scope="module")
def tiny_base(tiny_model_dir):
    return prepare_base_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    return load_tokenizer(tiny_base, padding_side="left")


@pytest.fixture(scope="module")
def plain(tiny_base):
    """The base model, never given an adapter."""
    return load_model(tiny_base)


@pytest.fixture(scope="module")
def sequences(plain, tokenizer):
    result = greedy_continuations(plain, tokenizer, [p.prompt for p in PROMPTS], max_new_tokens=5, batch_size=3)
    assert all(prompt and 1 <= len(cont) <= 5 for prompt, cont in result)
    return result


def _save_adapter(tiny_base, folder, method: str = "lora", noise: float = 0.0):
    """A freshly initialised adapter, its trainable weights optionally moved by seeded noise, saved to ``folder``."""
    fields = {"method": method, "method_settings": SETTINGS.get(method, {}), "max_length": 128}
    if get_method(method).uses_lora_options:
        fields.update(r=4, alpha=8)
    spec = TrainSpec(**fields)
    torch.manual_seed(0)  # peft initialises A from the global generator: keep it independent of test order
    model = get_method(method).wrap(load_model(tiny_base), spec)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad and noise:
                param.add_(torch.randn(param.shape, generator=generator) * noise)
    model.save_pretrained(folder)
    return folder


def _unmerged(tiny_base, folder):
    return load_adapter(load_model(tiny_base), folder, merge=False).model


def _check(prompts=PROMPTS, probes=(), **kwargs) -> ForgettingCheck:
    return ForgettingCheck(prompts, list(probes), max_new_tokens=6, batch_size=2, **kwargs)


def test_kl_of_an_adapter_that_changes_nothing_is_exactly_zero(tiny_base, plain, tokenizer, tmp_path):
    tuned = _unmerged(tiny_base, _save_adapter(tiny_base, tmp_path / "a"))  # LoRA starts with B = 0
    check = _check()
    check.observe_base(plain, tokenizer)
    details = check.compare(tuned, base_context=tuned.disable_adapter)
    assert details["kl"] == 0.0 and details["kl_median"] == 0.0
    assert details["n_general_prompts"] == 3 and set(details["kl_by_topic"]) == {"greeting", "shop"}
    assert [item["id"] for item in details["top_kl"]] and details["retention"] is None


def test_kl_is_positive_and_grows_as_the_adapter_is_scaled_up(tiny_base, plain, tokenizer, tmp_path):
    tuned = _unmerged(tiny_base, _save_adapter(tiny_base, tmp_path / "a", noise=0.2))
    check = _check()
    check.observe_base(plain, tokenizer)
    b_weights = [p for name, p in tuned.named_parameters() if "lora_B" in name]
    originals = [p.detach().clone() for p in b_weights]
    kls = []
    for scale in (0.5, 1.0, 2.0):  # small moves, where KL grows with the square of the step
        with torch.no_grad():
            for param, original in zip(b_weights, originals):
                param.copy_(original * scale)
        kls.append(check.compare(tuned, base_context=tuned.disable_adapter)["kl"])
    assert 0 < kls[0] < kls[1] < kls[2], kls


@pytest.mark.parametrize("method", METHODS)
def test_every_method_compares_the_same_real_positions(method, tiny_base, plain, sequences, tokenizer, tmp_path):
    tuned = _unmerged(tiny_base, _save_adapter(tiny_base, tmp_path / "a", method, noise=0.3))
    pad = tokenizer.pad_token_id
    # Padded batches (virtual tokens, prefixes and all) score each sequence as it scores alone.
    batched = continuation_kl(tuned, sequences, base_context=tuned.disable_adapter, pad_id=pad, batch_size=3)
    alone = continuation_kl(tuned, sequences, base_context=tuned.disable_adapter, pad_id=pad, batch_size=1)
    assert all(k > 0 for k in batched), batched
    assert batched == pytest.approx(alone, rel=1e-3, abs=1e-6)
    # And the base side really is the base model, on the same positions.
    prompt, cont = sequences[0]
    ids = torch.tensor([prompt + cont])
    mask, select = torch.ones_like(ids), torch.zeros_like(ids, dtype=torch.bool)
    select[0, len(prompt) - 1 : -1] = True
    with torch.inference_mode(), tuned.disable_adapter():
        via_peft = _selected_log_probs(tuned, ids, mask, select)
    with torch.inference_mode():
        expected = _selected_log_probs(plain, ids, mask, select)
    assert torch.allclose(via_peft, expected, atol=1e-5)


def test_retention_keeps_only_base_correct_probes_with_a_controlled_generator(tiny_base, plain, tokenizer,
                                                                              tmp_path):
    probes = [RetentionProbe("p1", "Capital of France?", ("Paris",)), RetentionProbe("p2", "Legs on a spider?", ("8",)),
              RetentionProbe("p3", "Sky colour?", ("blue",)), RetentionProbe("p4", "Opposite of hot?", ("cold",))]
    base_says = {"Capital of France?": "It is Paris.", "Legs on a spider?": "Eight legs.",
                 "Sky colour?": "Green, I think.", "Opposite of hot?": "Cold"}
    tuned_says = {"Capital of France?": "paris!", "Legs on a spider?": "A spider has 18 legs",
                  "Opposite of hot?": "COLD."}
    tuned = _unmerged(tiny_base, _save_adapter(tiny_base, tmp_path / "a"))
    asked = {"base": [], "tuned": []}

    def answer(model, questions):
        side, table = ("base", base_says) if model is plain else ("tuned", tuned_says)
        asked[side].append(list(questions))
        return [table[q] for q in questions]

    phases = []
    check = _check(probes=probes, answer=answer, on_phase=lambda name, total: phases.append((name, total)))
    check.observe_base(plain, tokenizer)
    details = check.compare(tuned, base_context=tuned.disable_adapter)
    assert asked["tuned"] == [["Capital of France?", "Legs on a spider?", "Opposite of hot?"]]  # never the miss
    assert details["n_retention_probes"] == 4 and details["n_base_correct"] == 3 and details["n_tuned_kept"] == 2
    assert details["retention"] == pytest.approx(2 / 3)
    assert details["lost"] == [{"id": "p2", "question": "Legs on a spider?", "expected": ["8"],
                                "base_answer": "Eight legs.", "tuned_answer": "A spider has 18 legs"}]
    assert [name for name, _ in phases] == ["retention probes (base)", "general prompts (base continuations)",
                                            "KL on general prompts", "retention probes (tuned)"]
    assert dict(phases)["retention probes (tuned)"] == 3
    assert score_retention(probes, ["no", "no", "no", "no"], [])["retention"] is None


@pytest.mark.parametrize(("response", "answers", "expected"), [
    ("The capital of France is Paris.", ["Paris"], True),
    ("PARIS!", ["paris"], True),
    ("a Parisian café", ["Paris"], False),  # whole words only
    ("It has seven days.", ["7"], True),
    ("There are 7 days.", ["seven"], True),
    ("Around 17 of them", ["7"], False),
    ("twenty-one", ["21"], True),
    ("about 1,000 people", ["1000"], True),
    ("It is the Pacific Ocean", ["Pacific", "Atlantic"], True),
    ("New York City", ["New Delhi"], False),
])
def test_answer_matching(response, answers, expected):
    assert answer_matches(response, answers) is expected


def test_shipped_sets_load_with_unique_ids_and_topics():
    prompts, probes = load_general_prompts(), load_retention_probes()
    assert 100 <= len(prompts) <= 150 and len({p.id for p in prompts}) == len(prompts)
    assert len({p.topic for p in prompts}) >= 10
    assert len(probes) >= 180 and all(p.answers for p in probes)
    # A probe whose answer is in its own question would be passed by any echo of it.
    assert not [p.id for p in probes if answer_matches(p.question, p.answers)]
    assert len(load_retention_probes(limit=5)) == 5


@pytest.mark.parametrize(("line", "where"), [
    ('{"id": "x", "question": "Q?", "answers": ["a b"]', ":2: malformed JSON"),
    ('{"id": "x", "answers": ["A"]}', ":2: field 'question': must be a non-empty string (got missing)"),
    ('{"id": "x", "question": "Q?", "answers": []}', ":2: field 'answers': must be a non-empty list"),
    ('{"id": "x", "question": "Q?", "answers": "Paris"}', ":2: field 'answers': must be a non-empty list"),
    ('{"id": "x", "question": "Q?", "answers": ["the"]}', ":2: field 'answers': answer 'the' is not text with at least one word"),
    ('{"id": "ok", "question": "Q?", "answers": ["A1"]}', ":2: field 'id': duplicate id 'ok'"),
])
def test_a_malformed_probe_row_names_file_line_and_field(tmp_path, line, where):
    path = tmp_path / "probes.jsonl"
    path.write_text('{"id": "ok", "question": "Fine?", "answers": ["yes"]}\n' + line + "\n")
    with pytest.raises(TunewrightError) as info:
        load_retention_probes(path)
    assert str(info.value).startswith(f"{path}{where}"), str(info.value)


def test_a_malformed_prompt_row_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "a", "prompt": "hi"}, {"id": "b", "topic": "x", "prompt": ""}])
    with pytest.raises(TunewrightError, match=r"prompts\.jsonl:2: field 'prompt': must be a non-empty string"):
        load_general_prompts(path)
    assert load_general_prompts(write_jsonl(tmp_path / "ok.jsonl", [{"id": 1, "prompt": "hi"}]))[0].topic == "general"


@pytest.fixture
def workspace(tmp_path, tiny_model_dir, capsys):
    return init_cli_workspace(
        tmp_path / "ws", tiny_model_dir, capsys,
        "train:\n  r: 4\n  alpha: 8\n  batch_size: 4\n  max_length: 128\n"
        "eval:\n  max_new_tokens: 4\n  batch_size: 4\n"
        "govern:\n  forgetting:\n    max_prompts: 5\n    probes: probes.jsonl\n    max_new_tokens: 6\n",
    )


def test_eval_stores_forgetting_with_the_tuned_evaluation(workspace, tmp_path, capsys):
    from tunewright.workspace import Workspace

    data = write_jsonl(tmp_path / "train.jsonl", chat_records(10))
    assert run_cli(["-w", workspace, "data", "import", data, "--eval-fraction", "0.2"], capsys)[0] == 0
    assert run_cli(["-w", workspace, "train", "--max-steps", "2"], capsys)[0] == 0

    probes = workspace / "probes.jsonl"
    probes.write_text('{"id": "p1", "question": "hello?", "answers": ["world"]}\n{"id": "p2", "question": "x"}\n')
    code, out, err = run_cli(["-w", workspace, "eval", "--limit", "2"], capsys)
    assert code == 2 and f"{probes}:2: field 'answers'" in err
    assert Workspace.open(workspace).registry.list_evaluations() == []

    write_jsonl(probes, [{"id": "p1", "question": "hello?", "answers": ["world"]},
                         {"id": "p2", "question": "what price?", "answers": ["189"]}])
    code, out, err = run_cli(["-w", workspace, "eval", "--limit", "2"], capsys)
    assert code == 0, err
    assert "forgetting: KL" in out and "over 5 general prompts" in out
    report = json.loads((workspace / "reports" / "shop" / "report.json").read_text())
    forgetting = report["forgetting"]
    assert forgetting["n_general_prompts"] == 5 and forgetting["n_retention_probes"] == 2
    assert forgetting["kl"] >= 0 and forgetting["sources"]["probes"] == str(probes)
    assert set(report["after"]["metrics"]) == {"exact_match", "contains", "token_f1"}  # task metrics stay flat
    base, tuned = Workspace.open(workspace).registry.list_evaluations()
    assert "forgetting" not in base.metrics
    assert tuned.metrics["forgetting"] == {key: forgetting[key] for key in SUMMARY_KEYS}
    assert "<h2>Forgetting</h2>" in (workspace / "reports" / "shop" / "report.html").read_text()


def test_print_report_and_html_show_kl_retention_and_lost_probes(tmp_path, capsys):
    from tunewright.cli.stages import print_report
    from tunewright.evaluate.report import write_report

    forgetting = {"kl": 0.0312, "kl_median": 0.02, "kl_by_topic": {"cooking": 0.05}, "n_general_prompts": 120,
                  "top_kl": [{"id": "c1", "topic": "cooking", "prompt": "Rice?", "base_continuation": "Rinse it.",
                              "kl": 0.2}],
                  "retention": 58 / 60, "n_retention_probes": 200, "n_base_correct": 60, "n_tuned_kept": 58,
                  "lost": [{"id": "p", "question": "Capital of <France>?", "expected": ["Paris"],
                            "base_answer": "Paris", "tuned_answer": "Lyon"}], "max_new_tokens": 24}
    report = {"adapter": "a", "base_model": "m", "dataset": {"name": "d", "version": "v"}, "split": "eval",
              "n_examples": 1, "created_at": "now", "before": {"metrics": {"contains": 0.0}},
              "after": {"metrics": {"contains": 1.0}}, "training": {}, "examples": [], "forgetting": forgetting}
    _, html_path = write_report(tmp_path, report)
    html = html_path.read_text()
    assert "Capital of &lt;France&gt;?" in html and "Lyon" in html and "96.7%" in html and "0.0312" in html
    report["paths"] = {"html": str(html_path)}
    print_report(report)
    out = " ".join(capsys.readouterr().out.split())
    assert ("forgetting: KL 0.031 nats/token over 120 general prompts; retention 96.7% (58 of 60 base-correct "
            "probes)") in out


@pytest.mark.integration
def test_smollm2_keeps_easy_probes_and_an_unchanged_adapter_forgets_nothing():
    smollm2 = prepare_base_model("smollm2-135m-instruct")
    tokenizer = load_tokenizer(smollm2, padding_side="left")
    probes = [p for p in load_retention_probes() if p.id in EASY]
    check = ForgettingCheck(load_general_prompts()[:2], probes, max_new_tokens=16, batch_size=8)
    model = load_model(smollm2)
    check.observe_base(model, tokenizer)
    # A fresh LoRA (B = 0) on the same weights: exactly the base model, reached through peft.
    tuned = get_method("lora").wrap(model, TrainSpec(r=4, alpha=8)).eval()
    details = check.compare(tuned, base_context=tuned.disable_adapter)
    assert details["n_base_correct"] >= len(EASY) - 1, details
    assert details["retention"] == 1.0 and details["lost"] == []
    assert details["kl"] == 0.0
