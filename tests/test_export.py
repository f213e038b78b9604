"""Export on the tiny random Llama: merged folder, GGUF round trip, engine files, parity check, refusals."""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from tunewright.config import TrainSpec
from tunewright.errors import TunewrightError
from tunewright.export import EXPORT_FORMATS, export_adapter
from tunewright.models import prepare_base_model
from tunewright.models.loading import BaseModelInfo
from tunewright.train.loop import train_adapter

from helpers import qa_rows

PROBES = [
    [{"role": "user", "content": "How much does item 3 cost?"}],
    [{"role": "system", "content": "yes no maybe"}, {"role": "user", "content": "hello world how are you"}],
]
CHAT = [{"role": "user", "content": "How much does the Ridgeback 2 Tent cost?"}]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return prepare_base_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def adapter(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("export-train")
    spec = TrainSpec(r=8, alpha=16, learning_rate=2e-2, batch_size=4, max_steps=4, checkpoint_every=100, seed=0)
    train_adapter(base=tiny, rows=qa_rows(12), spec=spec, run_dir=root / "run", adapter_dir=root / "adapter")
    return root / "adapter"


@pytest.fixture(scope="module")
def exported(tiny, adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "out"
    return export_adapter(tiny, adapter, out, name="tiny", check=True, probes=PROBES, max_new_tokens=12)


def _peft_model(tiny, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny.folder), adapter).eval()


def _ids(tokenizer, messages=CHAT):
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])


def test_export_writes_every_format_atomically(exported):
    assert set(exported.files) == set(EXPORT_FORMATS)
    assert all(path.exists() for path in exported.files.values())
    assert exported.passed and exported.check["passed"]
    assert not [p for p in exported.out_dir.parent.iterdir() if p.name.startswith(".")]  # no temp left over
    saved = json.loads((exported.out_dir / "check.json").read_text())
    assert saved["passed"] and saved["formats"].keys() == {"merged", "gguf"}


def test_merged_folder_reloads_with_plain_transformers_and_matches_peft(tiny, adapter, exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = exported.files["merged"]
    assert not [p for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pkl"}]
    merged = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(tiny.folder).chat_template
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = merged.generation_config.eos_token_id
    assert end in (eos if isinstance(eos, list) else [eos])
    ids = _ids(tokenizer)
    with torch.inference_mode():
        expected, got = _peft_model(tiny, adapter)(input_ids=ids).logits, merged(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-5), (expected - got).abs().max()


def test_stop_ids_add_the_chat_end_of_turn_when_eos_differs(tiny):
    from transformers import AutoTokenizer, GenerationConfig

    from tunewright.models.stops import stop_token_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny.folder)
    tokenizer.eos_token = "<|endoftext|>"  # a base whose eos is not the template's end of turn
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(tokenizer, GenerationConfig(eos_token_id=0)) == [0, end]


def test_gguf_f32_round_trips_weights_and_tokenizer_exactly(tiny, exported):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = exported.files["gguf"]
    reader = GGUFReader(path)
    names = {t.name for t in reader.tensors}
    assert "token_embd.weight" in names and "output.weight" not in names  # tied head written once
    assert "blk.1.attn_q.weight" in names and {t.tensor_type.name for t in reader.tensors} == {"F32"}
    assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert reader.fields["general.name"].contents() == "tiny"

    merged = AutoModelForCausalLM.from_pretrained(exported.files["merged"])
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    assert loaded.config.tie_word_embeddings
    expected, got = merged.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:  # q/k included: the reader's inverse permutation restores them bit for bit
        assert torch.equal(expected[key], got[key]), key

    base_tok = AutoTokenizer.from_pretrained(tiny.folder)
    gguf_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert gguf_tok.get_vocab() == base_tok.get_vocab()
    assert gguf_tok.chat_template == base_tok.chat_template
    assert (gguf_tok.eos_token, gguf_tok.bos_token, gguf_tok.pad_token) == ("<|im_end|>", "<|im_start|>", "<|endoftext|>")
    assert torch.equal(_ids(gguf_tok), _ids(base_tok))
    assert gguf_tok.decode(_ids(base_tok)[0]) == base_tok.decode(_ids(base_tok)[0])


def test_gguf_f16_loads_and_stays_close(tiny, adapter, exported, tmp_path):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = export_adapter(tiny, adapter, tmp_path / "f16", name="tiny16", formats=["gguf"], gguf_dtype="f16")
    path = result.files["gguf"]
    kinds = {t.name: t.tensor_type.name for t in GGUFReader(path).tensors}
    assert kinds["blk.0.attn_q.weight"] == "F16" and kinds["token_embd.weight"] == "F16"
    assert kinds["blk.0.attn_norm.weight"] == "F32" and kinds["output_norm.weight"] == "F32"
    assert path.stat().st_size < exported.files["gguf"].stat().st_size * 0.6

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    merged = AutoModelForCausalLM.from_pretrained(exported.files["merged"]).eval()
    ids = _ids(tokenizer)
    with torch.inference_mode():
        diff = (loaded(input_ids=ids).logits - merged(input_ids=ids).logits).abs().max()
    assert 0 < diff < 1e-3, diff


def _modelfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) pairs by the Modelfile grammar: a keyword, then a triple-quoted block
    (which may span lines) or the rest of the line; blank lines and # comments skipped."""
    out, pos = [], 0

    def line_end(at):
        found = text.find("\n", at)
        return len(text) if found < 0 else found

    while pos < len(text):
        if text[pos].isspace():
            pos += 1
        elif text[pos] == "#":
            pos = line_end(pos)
        else:
            keyword = re.match(r"([A-Za-z]+)[ \t]+", text[pos:])
            assert keyword, f"not an instruction: {text[pos:line_end(pos)]!r}"
            pos += keyword.end()
            if text.startswith('"""', pos):
                close = text.index('"""', pos + 3)
                argument, pos = text[pos + 3:close], close + 3
                assert not text[pos:line_end(pos)].strip(), "text after a closing triple quote"
            else:
                argument, pos = text[pos:line_end(pos)].strip(), line_end(pos)
            out.append((keyword.group(1).upper(), argument))
    return out


def _render_ollama_template(template: str, messages: list[dict], system: str | None) -> str:
    """What Ollama renders from a TEMPLATE, for the Go-template subset our templates use
    (``range .Messages``, ``if eq .Role "x"``, ``if ne (index .Messages 0).Role "x"``, ``else``,
    ``end``, ``.Role``, ``.Content``, ``{{-``/``-}}`` trimming), with Ollama's SYSTEM inserted
    when the conversation has no system turn. Any other action fails the test instead of rendering
    wrongly."""
    if system and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system}, *messages]
    pieces = re.split(r"(\{\{.*?\}\})", template, flags=re.S)
    for i, piece in enumerate(pieces):
        if piece.startswith("{{-") and i > 0:
            pieces[i - 1] = pieces[i - 1].rstrip(" \t\r\n")
        if piece.endswith("-}}") and i + 1 < len(pieces):
            pieces[i + 1] = pieces[i + 1].lstrip(" \t\r\n")
    items = [("action", p.strip("{}").strip("-").strip()) if p.startswith("{{") else ("text", p) for p in pieces]

    def block(at: int) -> tuple[list, int, str | None]:
        """Nodes up to the ``else`` or ``end`` that closes this block (or the end of the template)."""
        nodes = []
        while at < len(items):
            kind, value = items[at]
            if kind == "text" or value in (".Role", ".Content"):
                nodes.append((kind, value))
                at += 1
            elif value in ("else", "end"):
                return nodes, at + 1, value
            elif value == "range .Messages" or value.startswith("if "):
                body, at, closer = block(at + 1)
                other = []
                if closer == "else":
                    other, at, closer = block(at)
                assert closer == "end", f"unclosed {value!r}"
                nodes.append(("block", (value, body, other)))
            else:
                raise AssertionError(f"template action this test cannot render: {value!r}")
        return nodes, at, None

    def test(condition: str, message: dict | None) -> bool:
        found = re.fullmatch(r'if eq \.Role "(\w+)"', condition)
        if found:
            return message["role"] == found.group(1)
        found = re.fullmatch(r'if ne \(index \.Messages 0\)\.Role "(\w+)"', condition)
        assert found, f"condition this test cannot render: {condition!r}"
        return messages[0]["role"] != found.group(1)

    def run(nodes, message=None) -> str:
        out = []
        for kind, value in nodes:
            if kind == "text":
                out.append(value)
            elif kind == "action":
                assert message is not None, f"{value} outside range"
                out.append(message[value[1:].lower()])
            elif value[0] == "range .Messages":
                out.extend(run(value[1], m) for m in messages)
            else:
                out.append(run(value[1] if test(value[0], message) else value[2], message))
        return "".join(out)

    nodes, _, closer = block(0)
    assert closer is None, "an end without its block"
    return run(nodes)


def test_modelfile_is_chatml_with_default_system_and_stop(tiny, exported):
    from transformers import AutoTokenizer

    path = exported.files["ollama"]
    instructions = _modelfile_instructions(path.read_text())
    by_name: dict[str, list[str]] = {}
    for name, argument in instructions:
        by_name.setdefault(name, []).append(argument)
    assert set(by_name) == {"FROM", "TEMPLATE", "SYSTEM", "PARAMETER"}, by_name
    assert all(len(by_name[name]) == 1 for name in ("FROM", "TEMPLATE", "SYSTEM"))

    # FROM is the GGUF written beside the Modelfile, relative so the folder can move.
    (source,) = by_name["FROM"]
    assert not Path(source).is_absolute() and (path.parent / source).resolve() == exported.files["gguf"].resolve()

    # TEMPLATE (with SYSTEM) must prompt the model exactly as its own chat template did in training.
    tokenizer = AutoTokenizer.from_pretrained(tiny.folder)
    (template,), (system,) = by_name["TEMPLATE"], by_name["SYSTEM"]
    conversations = [*PROBES, CHAT,
                     [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."},
                      {"role": "user", "content": "How heavy is the tent?"}]]
    for messages in conversations:
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert _render_ollama_template(template, messages, system) == expected, messages
    assert system == "You are a helpful assistant."  # the default the tiny model's template inserts

    # PARAMETER stop: the token the template closes an assistant turn with, which is also eos.
    parameters = [argument.split(None, 1) for argument in by_name["PARAMETER"]]
    assert {key for key, _ in parameters} == {"stop"}
    stops = [json.loads(value) if value.startswith('"') else value for _, value in parameters]
    closed = tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": "A."}],
                                           tokenize=False)
    after_reply = closed[closed.rindex("A.") + 2:]
    assert stops == [tokenizer.eos_token] and after_reply.startswith(tokenizer.eos_token)


def _modelfile(text: str) -> dict[str, list[str]]:
    by_name: dict[str, list[str]] = {}
    for name, argument in _modelfile_instructions(text):
        by_name.setdefault(name, []).append(argument)
    return by_name


@pytest.mark.parametrize("family", ["phi3", "qwen3", "llama3.1"])
@pytest.mark.parametrize("bos_added", [False, True])
def test_modelfile_template_prompts_each_family_as_training_did(family, bos_added):
    from test_chat_families import FAMILIES, family_tokenizer

    from tunewright.export.engines import modelfile_text
    from tunewright.models.chat import render

    tokenizer = family_tokenizer(family)
    _template, bos, eos, end = FAMILIES[family]
    if bos_added and not bos:
        pytest.skip("the family has no bos token")
    by_name = _modelfile(modelfile_text(tokenizer, "x.gguf", bos_added=bos_added))
    (template,) = by_name["TEMPLATE"]
    system = by_name.get("SYSTEM", [None])[0]
    conversations = [[{"role": "user", "content": "What does the tent cost?"}],
                     [{"role": "system", "content": "Answer from the records.\n[1] tent: $189"},
                      {"role": "user", "content": "What does the tent cost?"}],
                     [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."},
                      {"role": "user", "content": "How heavy is the tent?"}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "And the lamp?"}]]
    for messages in conversations:
        expected = render(tokenizer, messages)  # what the model is prompted with in training and eval
        if bos_added and expected.startswith(bos):
            expected = expected[len(bos):]  # llama.cpp puts it in front of the tokens itself
        assert _render_ollama_template(template, messages, system) == expected, (family, messages)
    stops = [json.loads(argument.split(None, 1)[1]) for argument in by_name["PARAMETER"]]
    assert stops == list(dict.fromkeys([end, eos]))


def test_modelfile_refuses_a_template_it_cannot_translate_and_says_why(tiny):
    from test_chat_families import family_tokenizer
    from transformers import AutoTokenizer

    from tunewright.export.engines import modelfile_text

    tokenizer = AutoTokenizer.from_pretrained(tiny.folder)
    tokenizer.chat_template = "{% for m in messages %}{{ loop.index }}. {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(TunewrightError, match="not a fixed prefix and suffix per role") as caught:
        modelfile_text(tokenizer, "x.gguf", bos_added=False)
    assert caught.value.field == "chat_template"
    with pytest.raises(TunewrightError, match="rejects a system message"):  # Gemma 2
        modelfile_text(family_tokenizer("gemma2"), "x.gguf", bos_added=False)
    with pytest.raises(TunewrightError, match="system message does not appear as its own turn"):  # Mistral v0.3
        modelfile_text(family_tokenizer("mistral-v0.3"), "x.gguf", bos_added=False)
    # A bos token that llama.cpp would add before every prompt, though training never saw one.
    with pytest.raises(TunewrightError, match="puts <s> before every prompt"):
        modelfile_text(_with_bos(family_tokenizer("qwen3")), "x.gguf", bos_added=True)


def _with_bos(tokenizer):
    tokenizer.bos_token = "<s>"
    return tokenizer


def _vllm_arguments(argv: list[str]) -> tuple[str, dict[str, str | bool]]:
    """The model and the options of ``vllm serve MODEL [--flag [value]]...``; a flag given twice fails."""
    assert argv[:2] == ["vllm", "serve"], argv
    model, options, rest = argv[2], {}, argv[3:]
    while rest:
        flag, rest = rest[0], rest[1:]
        assert flag.startswith("--") and flag not in options, (flag, argv)
        if rest and not rest[0].startswith("--"):
            options[flag], rest = rest[0], rest[1:]
        else:
            options[flag] = True
    return model, options


def _check_vllm_arguments(argv: list[str], *, model: Path, adapter: str) -> None:
    served, options = _vllm_arguments(argv)
    assert Path(served) == model
    assert set(options) == {"--enable-lora", "--lora-modules", "--max-lora-rank", "--max-loras"}, options
    assert options["--enable-lora"] is True
    name, _, path = options["--lora-modules"].partition("=")
    assert (name, path) == ("tiny", adapter)
    assert int(options["--max-lora-rank"]) == 8  # the adapter's r (8) is itself a rank vLLM accepts
    assert int(options["--max-loras"]) == 1


def test_vllm_script_serves_base_with_the_adapter_as_lora(tiny, adapter, exported, tmp_path):
    import os
    import shlex
    import subprocess

    from tunewright.export.engines import vllm_lora_rank

    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    base, copied = tiny.folder.resolve(), exported.out_dir.resolve() / "adapter"
    _check_vllm_arguments(shlex.split(exported.vllm_command), model=base, adapter=str(copied))

    # The script: its exec line word by word, with the adapter found beside the script ($HERE) and
    # the caller's own arguments passed through.
    script = exported.files["vllm"]
    (line,) = [line for line in script.read_text().splitlines() if shlex.split(line, comments=True)[:1] == ["exec"]]
    words = shlex.split(line)[1:]
    assert words[-1] == "$@"
    _check_vllm_arguments(words[:-1], model=base, adapter="$HERE/adapter")
    # What bash makes of $HERE, run with a stand-in vllm that prints the arguments it was given.
    stub = tmp_path / "bin" / "vllm"
    stub.parent.mkdir()
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$@"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}"}
    ran = subprocess.run(["bash", str(script), "--port", "9000"], env=env, capture_output=True, check=True, cwd=tmp_path)
    argv = ["vllm", *ran.stdout.decode().split("\0")[:-1]]
    assert argv[-2:] == ["--port", "9000"]
    _check_vllm_arguments(argv[:-2], model=base, adapter=str(copied))

    assert sorted(p.name for p in copied.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert [vllm_lora_rank({"r": r}) for r in (4, 8, 12, 100)] == [8, 8, 16, 128]
    assert vllm_lora_rank({"r": 8, "rank_pattern": {"q_proj": 40}}) == 64
    with pytest.raises(TunewrightError, match="above the largest rank"):
        vllm_lora_rank({"r": 300})


def test_check_agrees_per_probe_on_a_good_export(exported):
    report = exported.check
    assert report["probes"] == PROBES and report["max_new_tokens"] == 12
    for fmt in ("merged", "gguf"):
        rows = report["formats"][fmt]["probes"]
        assert len(rows) == len(PROBES)
        for row, ref in zip(rows, report["reference_outputs"]):
            # The tiny random model may or may not reach <|im_end|>; the formats must agree with the reference.
            assert (row["text"], row["token_ids"], row["stopped_at_eos"]) == (ref["text"], ref["token_ids"], ref["stopped_at_eos"])
            assert row["prompt_tokens_match"] and row["max_logit_diff"] < 1e-5
    assert json.loads(json.dumps(report)) == report  # plain JSON


def test_base_model_exports_without_adapter_and_generates_alike(tiny, tmp_path):
    result = export_adapter(tiny, None, tmp_path / "base", name="base", formats=("gguf", "ollama", "vllm"),
                            check=True, probes=PROBES, max_new_tokens=12)
    assert result.passed, result.check["failures"]
    assert "--lora-modules" not in result.files["vllm"].read_text()
    assert not (result.out_dir / "adapter").exists()
    assert any(o["new_tokens"] > 1 for o in result.check["reference_outputs"])  # real text was compared


def test_check_fails_on_a_gguf_written_without_the_qk_permutation(tiny, adapter, tmp_path, monkeypatch):
    from tunewright.export import gguf_writer

    # What a naive converter writes: loads fine, attention subtly wrong.
    monkeypatch.setattr(gguf_writer, "write_gguf", functools.partial(gguf_writer.write_gguf, _permute_qk=False))
    result = export_adapter(tiny, adapter, tmp_path / "bad", name="bad", formats=["gguf"], check=True,
                            probes=PROBES, max_new_tokens=12)
    assert not result.passed and not result.check["formats"]["gguf"]["passed"]
    assert any(f.startswith("gguf:") and "logit" in f for f in result.check["failures"]), result.check["failures"]
    assert result.check["max_logit_diff"]["gguf"] > 1e-3
    assert json.loads((tmp_path / "bad" / "check.json").read_text())["passed"] is False  # kept for the caller


def _adapter_config(folder: Path, **config) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("kwargs, message", [
    ({"formats": ["merged", "onnx"]}, "unknown export format 'onnx' (known: merged, gguf, ollama, vllm)"),
    ({"gguf_dtype": "q4_0"}, "unknown GGUF dtype 'q4_0' (known: f32, f16)"),
    ({"name": "has space"}, "export name"),
    ({"formats": ["vllm"], "check": True}, "parity check compares"),
])
def test_bad_arguments_are_refused_before_any_work(tiny, adapter, tmp_path, kwargs, message):
    out = tmp_path / "out"
    with pytest.raises(TunewrightError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export_adapter(tiny, adapter, out, **{"name": "x", **kwargs})
    assert list(tmp_path.iterdir()) == []


def test_methods_that_cannot_merge_or_be_served_are_refused(tiny, tmp_path):
    prompt = _adapter_config(tmp_path / "prompt", peft_type="PROMPT_TUNING")
    with pytest.raises(TunewrightError, match="prompt-tuning cannot be exported as merged, ollama.*virtual tokens"):
        export_adapter(tiny, prompt, tmp_path / "out", name="x", formats=["merged", "ollama"])
    ia3 = _adapter_config(tmp_path / "ia3", peft_type="IA3")
    with pytest.raises(TunewrightError, match="vLLM serves LoRA adapters only.*IA3"):
        export_adapter(tiny, ia3, tmp_path / "out", name="x", formats=["vllm"])
    dora = _adapter_config(tmp_path / "dora", peft_type="LORA", r=8, use_dora=True)
    with pytest.raises(TunewrightError, match="DoRA"):
        export_adapter(tiny, dora, tmp_path / "out", name="x", formats=["vllm"])
    assert not (tmp_path / "out").exists()


def test_an_unsupported_architecture_and_an_untranslatable_template_are_refused(tiny, tmp_path):
    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(TunewrightError, match="GGUF export supports .* models; this base is 'gpt2'"):
        export_adapter(BaseModelInfo("gpt2", folder, "0"), None, tmp_path / "out", name="x", formats=["gguf"])
    odd = tmp_path / "odd"
    shutil.copytree(tiny.folder, odd)
    (odd / "chat_template.jinja").write_text("{% for m in messages %}{{ loop.index }}. {{ m['content'] }}\n{% endfor %}")
    with pytest.raises(TunewrightError, match="not a fixed prefix and suffix per role"):
        export_adapter(BaseModelInfo("odd", odd, "0"), None, tmp_path / "out", name="x", formats=["ollama"])
    assert not (tmp_path / "out").exists()


def test_non_empty_output_folder_is_refused_and_left_alone(tiny, adapter, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(TunewrightError, match="not empty"):
        export_adapter(tiny, adapter, out, name="x", formats=["merged"])
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_failure_midway_leaves_no_partial_output(tiny, adapter, tmp_path, monkeypatch):
    from tunewright.export import engines

    def broken(*args, **kwargs):
        raise TunewrightError("disk full")

    monkeypatch.setattr(engines, "write_vllm", broken)
    with pytest.raises(TunewrightError, match="disk full"):
        export_adapter(tiny, adapter, tmp_path / "out", name="x", formats=["merged", "vllm"])
    assert list(tmp_path.iterdir()) == []
