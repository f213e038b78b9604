"""`tunewright explain`: captum attributions of an answer to prompt segments, base vs tuned, on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import typer
from markupsafe import escape
from typer.testing import CliRunner

from tunewright.config import TrainSpec
from tunewright.errors import NotFoundError, TunewrightError
from tunewright.govern.explain import (SYSTEM, USER, _Scorer, _token_logprobs, build_segments, explain,
                                       explain_answer, split_prompt, template_default_system)
from tunewright.io import sha256_file
from tunewright.models import load_model, load_tokenizer, prepare_base_model
from tunewright.methods.attach import load_adapter
from tunewright.methods import available_methods, get_method

from serve_helpers import serve_workspace

QUESTION = "How much does the Ridgeback 2 Tent cost?"
SETTINGS = {"prefix-tuning": {"num_virtual_tokens": 4}, "prompt-tuning": {"num_virtual_tokens": 4},
            "p-tuning": {"num_virtual_tokens": 4, "encoder_hidden_size": 16}, "llama-adapter": {"adapter_len": 4},
            "bottleneck": {"bottleneck_size": 8}}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    info = prepare_base_model(str(tiny_model_dir))
    return info, load_tokenizer(info, padding_side="left"), load_model(info)


def _prompt_ids(tokenizer, segments, drop: int | None = None) -> torch.Tensor:
    """Prompt ids with segment ``drop`` removed, built by hand (not through captum)."""
    system = "".join(s.text for k, s in enumerate(segments) if s.role == SYSTEM and k != drop)
    user = "".join(s.text for k, s in enumerate(segments) if s.role == USER and k != drop)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


# -- segments -----------------------------------------------------------------------------------


def test_prompt_splits_into_sentences_clauses_and_words_that_join_back():
    assert split_prompt(QUESTION) == ["How", " much", " does", " the", " Ridgeback", " 2", " Tent", " cost?"]
    text = "Hi! I bought a tent last week, and it leaks. Can I return it, or do I need a warranty claim? Thanks."
    for budget in (1, 3, 5, 8, 40):
        pieces = split_prompt(text, budget)
        assert "".join(pieces) == text and len(pieces) == min(budget, len(text.split()))
    assert split_prompt(text, 4) == ["Hi!", " I bought a tent last week, and it leaks.",
                                     " Can I return it, or do I need a warranty claim?", " Thanks."]
    assert split_prompt(text, 6)[1:3] == [" I bought a tent last week,", " and it leaks."]  # a clause, not mid-phrase
    assert split_prompt("one\ntwo three", 2) == ["one", "\ntwo three"]  # a line break ends a sentence


def test_template_default_system_prompt_becomes_a_segment(tiny, tiny_tokenizer):
    _, tokenizer, _ = tiny
    assert template_default_system(tokenizer, QUESTION) == "You are a helpful assistant."
    assert template_default_system(tiny_tokenizer, QUESTION) is None  # plain ChatML has no default
    segments = build_segments(tokenizer, QUESTION)
    assert segments[0].role == SYSTEM and segments[0].text == "You are a helpful assistant."
    assert [s.text for s in build_segments(tokenizer, QUESTION, system="Be brief.")][:2] == ["Be brief.", "How"]
    assert all(s.role == USER for s in build_segments(tiny_tokenizer, QUESTION))


# -- attributions -------------------------------------------------------------------------------


def test_ablation_shapes_sums_and_meaning(tiny):
    _, tokenizer, model = tiny
    exp = explain_answer(model, tokenizer, QUESTION, max_new_tokens=6)
    n_tokens, n_segments = len(exp.answer_ids), len(exp.segments)
    assert n_segments == 9 and 1 <= n_tokens <= 6 and len(exp.answer_tokens) == n_tokens
    assert exp.seq_attr.shape == (n_segments,) and exp.token_attr.shape == (n_tokens, n_segments)
    # log p(answer) is the sum of the token log-probs, so the sequence attribution is the tokens' sum.
    assert torch.allclose(exp.seq_attr, exp.token_attr.sum(0), atol=1e-4)
    # Each value is the drop in log p(answer) when that segment is removed, checked by hand for two.
    scorer, answer = _Scorer(model), torch.tensor(exp.answer_ids)
    for j in (0, 5):
        ablated = _token_logprobs(scorer, _prompt_ids(tokenizer, exp.segments, j), answer)
        assert torch.allclose(exp.token_attr[:, j], exp.answer_logprobs - ablated, atol=1e-4)
    assert exp.completeness_gap is None and exp.seconds > 0


def test_gradient_shapes_and_completeness(tiny):
    _, tokenizer, model = tiny
    exp = explain_answer(model, tokenizer, QUESTION, method="gradient", max_new_tokens=4, n_steps=64)
    n_tokens, n_segments = len(exp.answer_ids), len(exp.segments)
    assert exp.seq_attr.shape == (n_segments,) and exp.token_attr.shape == (n_tokens, n_segments)
    assert torch.allclose(exp.seq_attr, exp.token_attr.sum(0), atol=1e-5)
    # Integrated gradients' completeness, per answer token: the attributions over all segments add up
    # to log p(token | real prompt) - log p(token | baseline prompt).
    change = exp.answer_logprobs - exp.baseline_logprobs
    assert change.abs().max() > 1e-3  # the baseline really differs, so the check below is not 0 == 0
    assert torch.allclose(exp.token_attr.sum(1), change, atol=1e-3 + 0.02 * float(change.abs().max()))
    assert abs(exp.completeness_gap) < 1e-2


@pytest.mark.parametrize("method", ["ablation", "gradient"])
def test_a_model_blind_to_the_prompt_gives_every_segment_zero(tiny, method):
    """With every attention output zeroed, a position sees only its own token: the prompt cannot matter."""
    info, tokenizer, _ = tiny
    blind = load_model(info)
    with torch.no_grad():
        for layer in blind.model.layers:
            layer.self_attn.o_proj.weight.zero_()
    exp = explain_answer(blind, tokenizer, QUESTION, method=method, max_new_tokens=3)
    assert exp.token_attr.abs().max() < 1e-5, exp.token_attr


def _zero_lora(tiny_model_dir: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")).save_pretrained(out)  # B = 0
    return out


@pytest.mark.parametrize("method", [m for m in available_methods() if m != "qlora"])  # qlora needs CUDA
def test_every_peft_method_explains_by_ablation_and_gradient(method, tiny, tmp_path):
    info, tokenizer, _ = tiny
    spec = TrainSpec(method=method, method_settings=SETTINGS.get(method, {}), r=4, alpha=8, max_length=64)
    torch.manual_seed(0)
    get_method(method).wrap(load_model(info), spec).save_pretrained(tmp_path / "adapter")
    tuned = load_adapter(load_model(info), tmp_path / "adapter").model
    for how in ("ablation", "gradient"):
        exp = explain_answer(tuned, tokenizer, QUESTION, method=how, max_new_tokens=3, n_steps=4)
        assert exp.token_attr.shape == (len(exp.answer_ids), len(exp.segments))
        assert torch.isfinite(exp.token_attr).all()
    # The scores are read at the right positions (virtual tokens cut off): the greedy answer is
    # the most likely token at each step of a forward pass over prompt + answer.
    ids = torch.cat([_prompt_ids(tokenizer, exp.segments), torch.tensor([exp.answer_ids])], dim=1)
    with torch.no_grad():
        logits = _Scorer(tuned)(input_ids=ids).logits[0, -len(exp.answer_ids) - 1 : -1]
    assert logits.argmax(-1).tolist() == exp.answer_ids


def test_gradient_refusal_is_one_clear_line(tiny, monkeypatch):
    _, tokenizer, model = tiny
    monkeypatch.setattr(type(tokenizer), "is_fast", property(lambda self: False))
    with pytest.raises(TunewrightError, match="use --method ablation") as err:
        explain_answer(model, tokenizer, QUESTION, method="gradient", max_new_tokens=2)
    assert "\n" not in str(err.value)


# -- workspace level: report, registry, CLI ---------------------------------------------------


@pytest.fixture
def workspace(tmp_path, tiny_model_dir):
    ws = serve_workspace(tmp_path / "ws", tiny_model_dir, {"alpha": {"seed": 1}})
    folder = _zero_lora(tiny_model_dir, ws.root / "adapters" / "zero")
    ws.registry.add_adapter(name="zero", path=str(folder), weights_sha256=sha256_file(folder / "adapter_model.safetensors"),
                            method="lora", run_id=None, base_model_ref=str(tiny_model_dir), base_model_sha256=None)
    return ws


def test_zero_lora_explains_exactly_like_the_base_and_the_report_is_written_and_registered(workspace):
    from tunewright.registry.reports import ReportStore

    report = explain(workspace, QUESTION, "zero", max_new_tokens=4)
    base, tuned = report["models"]
    assert base["answer_ids"] == tuned["answer_ids"] and report["cross"] is None
    assert torch.allclose(torch.tensor(base["token_attr"]), torch.tensor(tuned["token_attr"]), atol=1e-5)
    assert "same answer" in report["changes"]["note"] and not report["changes"]["gained"]

    html_path, json_path = Path(report["paths"]["html"]), Path(report["paths"]["json"])
    assert html_path.parent == workspace.root / "reports" / "zero" / "explain" and json_path.is_file()
    html = html_path.read_text()
    for segment in report["segments"]:
        assert str(escape(segment["text"])) in html
    assert html.count("<tr><td><code>") == 2 * len(base["answer_ids"])  # a token row per answer token per model
    record = ReportStore(workspace.registry).latest_report("explain", adapter_id=report["adapter_id"])
    assert record is not None and record.path == str(html_path) and record.sha256 == sha256_file(html_path)
    assert record.summary["method"] == "ablation" and set(record.summary["top_segment"]) == {"base", "tuned"}


def _cli():
    from tunewright.cli.context import set_workspace
    from tunewright.cli.explain import register

    app = typer.Typer(pretty_exceptions_enable=False)

    @app.callback()
    def _root(ws: Path = typer.Option(None, "--workspace", "-w", envvar="TUNEWRIGHT_WORKSPACE")) -> None:
        set_workspace(ws)

    register(app)
    return app


@pytest.fixture
def cli():
    from tunewright.cli.context import set_workspace

    yield _cli()
    set_workspace(None)


def test_cli_prints_answers_top_segments_seconds_and_the_report(workspace, cli):
    result = CliRunner().invoke(cli, ["--workspace", str(workspace.root), "explain", "--prompt", QUESTION,
                                      "--adapter", "alpha", "--max-new-tokens", "4", "--method", "gradient"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "base (" in out and "tuned (alpha)" in out and "answer:" in out and "s in all" in out
    assert "[system] You are a helpful" in out or "Ridgeback" in out
    html = out.split("report: ")[1].split()[0]
    assert "-gradient-" in Path(html).name and Path(html).is_file()


@pytest.mark.parametrize("args, message", [
    (["--prompt", "   "], "the prompt is empty"),
    (["--prompt", QUESTION, "--method", "lime"], "unknown explanation method 'lime'"),
    (["--prompt", QUESTION, "--adapter", "nope"], "nope"),
])
def test_bad_input_is_one_tunewright_error_line(workspace, cli, args, message):
    result = CliRunner().invoke(cli, ["--workspace", str(workspace.root), "explain", *args])
    assert isinstance(result.exception, TunewrightError), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)
    if "nope" in args:
        assert isinstance(result.exception, NotFoundError)


def test_model_level_bad_input(tiny):
    _, tokenizer, model = tiny
    with pytest.raises(TunewrightError, match="empty"):
        explain_answer(model, tokenizer, "")
    with pytest.raises(TunewrightError, match="unknown explanation method"):
        explain_answer(model, tokenizer, QUESTION, method="shap")
    with pytest.raises(TunewrightError, match="join to the prompt"):
        explain_answer(model, tokenizer, QUESTION, segments=["How much", "cost?"])


@pytest.mark.integration
def test_smollm2_ablation_explains_its_own_answer():
    info = prepare_base_model("smollm2-135m-instruct")
    tokenizer, model = load_tokenizer(info, padding_side="left"), load_model(info)
    exp = explain_answer(model, tokenizer, QUESTION, max_new_tokens=8)
    assert exp.segments[0].role == SYSTEM and "SmolLM" in exp.segments[0].text  # the template's default
    assert exp.answer and exp.token_attr.shape == (len(exp.answer_ids), len(exp.segments))
    assert torch.allclose(exp.seq_attr, exp.token_attr.sum(0), atol=1e-3)
    top = exp.top(3)
    assert any(s.text.strip() in {"Ridgeback", "2", "Tent"} for s, _ in top), top  # the product name matters
