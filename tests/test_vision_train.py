"""`tunewright train` with `train.vision`: a local vision-language model folder trained natively on a
registered dataset whose rows keep their image parts, and registered like any adapter; what the
native path does not do yet is refused by name, before a run is registered."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from helpers import init_cli_workspace, run_cli as run, write_jsonl
from vision_models import save_tiny_vlm

VISION = ("train:\n  r: 8\n  alpha: 16\n  learning_rate: 0.01\n  batch_size: 3\n  max_steps: 12\n"
          "  warmup_ratio: 0.0\n  max_length: 256\n  vision:\n    targets: [language, connector]\n")
COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20)}


@pytest.fixture(scope="module")
def smolvlm(tiny_model_dir, tmp_path_factory):
    """A tiny Idefics3 (the SmolVLM architecture) folder."""
    return save_tiny_vlm("idefics3", tiny_model_dir, tmp_path_factory.mktemp("idefics3"))


def _rows(folder: Path, with_audio: bool = False) -> Path:
    rows = []
    for name, rgb in COLOURS.items():
        Image.new("RGB", (40, 30), rgb).save(folder / f"{name}.png")
        rows.append({"messages": [
            {"role": "user", "content": [{"type": "image", "image": f"{name}.png"}, {"type": "text", "text": "Which colour?"}]},
            {"role": "assistant", "content": f"It is {name}."}], "meta": {"split": "train"}})
    if with_audio:
        import wave

        with wave.open(str(folder / "q.wav"), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16_000)
            out.writeframes(b"\x00\x10" * 8000)
        rows.append({"messages": [{"role": "user", "content": [{"type": "audio", "audio": "q.wav"}]},
                                  {"role": "assistant", "content": "Two years."}], "meta": {"split": "train"}})
    return write_jsonl(folder / "rows.jsonl", rows)


def _workspace(tmp_path, base, capsys, recipe=VISION, with_audio=False) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    ws = init_cli_workspace(tmp_path / "ws", base, capsys, recipe)
    code, _, err = run(["-w", ws, "data", "import", _rows(data, with_audio), "--eval-fraction", "0"], capsys)
    assert code == 0, err
    return ws


def _registry(ws):
    from tunewright.workspace import Workspace

    return Workspace.open(ws).registry


def test_train_registers_a_standard_adapter_of_the_named_parts(tmp_path, smolvlm, capsys):
    ws = _workspace(tmp_path, smolvlm, capsys)
    code, out, err = run(["-w", ws, "train"], capsys)
    assert code == 0, err
    registry = _registry(ws)
    [adapter] = registry.list_adapters()
    [run_record] = [r for r in registry.list_runs() if r.kind == "train"]
    assert run_record.status == "completed"
    folder = Path(adapter.path)
    # Lineage: the weights file registered is the one on disk, and the base is the folder's weights.
    assert adapter.weights_sha256 == hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()
    weights = hashlib.sha256()
    weights.update(b"model.safetensors")
    weights.update(hashlib.sha256((smolvlm / "model.safetensors").read_bytes()).digest())
    assert adapter.base_model_sha256 == weights.hexdigest()
    # Standard PEFT layout, adapting the language model and the connector and nothing of the tower.
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "LORA"
    keys = safe_open(folder / "adapter_model.safetensors", "pt").keys()
    parts = {key.split(".")[3] for key in keys}  # base_model.model.model.<part>....
    assert parts == {"text_model", "connector"}
    losses = run_record.metrics["losses"]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < losses[0] - 0.3, losses  # as test_train_loop asks
    assert run_record.metrics["vision_targets"] == ["language", "connector"]


def test_a_text_base_with_train_vision_is_refused_naming_model_type(tmp_path, tiny_model_dir, capsys):
    ws = _workspace(tmp_path, tiny_model_dir, capsys)
    code, _, err = run(["-w", ws, "train"], capsys)
    assert code == 2 and "model_type 'llama' is not a vision-language model" in " ".join(err.split())
    assert not [r for r in _registry(ws).list_runs() if r.kind == "train"]


def test_a_vision_base_without_train_vision_says_to_set_it(tmp_path, smolvlm, capsys):
    ws = init_cli_workspace(tmp_path / "ws", smolvlm, capsys, "train:\n  max_steps: 2\n")
    rows = [{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}] * 2
    code, _, err = run(["-w", ws, "data", "import", write_jsonl(tmp_path / "rows.jsonl", rows), "--eval-fraction", "0"],
                       capsys)
    assert code == 0, err
    code, _, err = run(["-w", ws, "train"], capsys)
    err = " ".join(err.split())
    assert code == 2 and "model_type 'idefics3' is a vision-language model; set train.vision" in err
    assert not [r for r in _registry(ws).list_runs() if r.kind == "train"]


def test_replay_is_refused_by_name_before_a_run_is_registered(tmp_path, smolvlm, capsys):
    ws = _workspace(tmp_path, smolvlm, capsys, recipe=VISION + "  replay: {rows: 4}\n")
    code, _, err = run(["-w", ws, "train"], capsys)
    assert code == 2 and "train.replay is not available for vision-language training" in " ".join(err.split())
    assert not [r for r in _registry(ws).list_runs() if r.kind == "train"]


def test_an_audio_part_is_refused_and_leaves_no_adapter(tmp_path, smolvlm, capsys):
    ws = _workspace(tmp_path, smolvlm, capsys, with_audio=True)
    code, _, err = run(["-w", ws, "train"], capsys)
    err = " ".join(err.split())
    assert code == 2 and "train.jsonl:4: field 'messages[0].content[0]': a vision-language model cannot read audio" in err
    assert not [r for r in _registry(ws).list_runs() if r.kind == "train"] and not (ws / "adapters" / "shop").exists()


def test_eval_asks_base_and_adapter_with_the_images_and_records_both(tmp_path, smolvlm, capsys):
    """`tunewright eval` on a native adapter: each held-out row answered with its image by the base
    and by the adapter; the answers are what plain transformers + peft generate from the same row
    (up to the first end-of-turn token), scored, written and registered like a text adapter's."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from tunewright.config import EvalSpec

    ws = _workspace(tmp_path, smolvlm, capsys)
    assert run(["-w", ws, "train"], capsys)[0] == 0
    code, out, err = run(["-w", ws, "eval", "--split", "train", "--show", "0"], capsys)
    assert code == 0, err
    report = json.loads((ws / "reports" / "shop" / "report.json").read_text())
    results = [json.loads(line) for line in (ws / "reports" / "shop" / "results.jsonl").read_text().splitlines()]
    assert [r["question"] for r in results] == [f"[image: {_stored(ws, n)}] Which colour?" for n in COLOURS]

    processor = AutoProcessor.from_pretrained(smolvlm)
    base = AutoModelForImageTextToText.from_pretrained(smolvlm).eval()
    adapter = Path(_registry(ws).list_adapters()[0].path)

    def reference(model, name: str) -> str:
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which colour?"}]}]
        text = processor.apply_chat_template(conversation, add_generation_prompt=True)
        inputs = processor(text=[text], images=[[Image.open(tmp_path / "data" / f"{name}.png").convert("RGB")]],
                           return_tensors="pt", add_special_tokens=False)
        out = model.generate(**inputs, max_new_tokens=EvalSpec().max_new_tokens, do_sample=False)
        return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    expected_base = [reference(base, n) for n in COLOURS]
    tuned = PeftModel.from_pretrained(base, adapter).eval()
    expected_tuned = [reference(tuned, n) for n in COLOURS]
    for result, want_base, want_tuned in zip(results, expected_base, expected_tuned):
        assert want_base.startswith(result["base_response"]) and want_tuned.startswith(result["tuned_response"])
        assert result["after"]["contains"] == float(result["expected"].lower() in result["tuned_response"].lower())
    assert report["after"]["metrics"]["contains"] == sum(r["after"]["contains"] for r in results) / 3
    assert "forgetting" not in report and "questions" not in report
    evaluations = _registry(ws).list_evaluations()
    assert sorted(e.model_ref for e in evaluations) == ["base", "shop"]

    # `generate` takes the same rows from a file (images beside it) and answers as eval did.
    asked = write_jsonl(tmp_path / "data" / "ask.jsonl", [{"messages": [{"role": "user", "content": [
        {"type": "image", "image": f"{n}.png"}, {"type": "text", "text": "Which colour?"}]}]} for n in COLOURS])
    code, _, err = run(["-w", ws, "generate", "--model", "shop", "-i", asked, "-o", tmp_path / "out.jsonl"], capsys)
    assert code == 0, err
    answers = [json.loads(line)["response"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert answers == [r["tuned_response"] for r in results]


def _stored(ws: Path, name: str) -> str:
    """The content-addressed ref the import gave an image (media/<sha256>.png)."""
    digest = hashlib.sha256((ws.parent / "data" / f"{name}.png").read_bytes()).hexdigest()
    return f"media/{digest}.png"


def test_eval_refuses_customer_questions_and_audio_rows_for_a_vision_adapter(tmp_path, smolvlm, capsys):
    ws = _workspace(tmp_path, smolvlm, capsys, with_audio=True)
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question": "Colour?", "accept": ["red"], "kind": "x"}])
    code, _, err = run(["-w", ws, "eval", "--split", "train", "--questions", questions], capsys)
    assert code == 2 and "field 'eval.questions'" in err and "vision-language" in " ".join(err.split())
    spoken = write_jsonl(tmp_path / "ask.jsonl", [{"messages": [{"role": "user", "content": [
        {"type": "audio", "audio": str(tmp_path / "data" / "q.wav")}]}]}])
    code, _, err = run(["-w", ws, "generate", "--model", "base", "-i", spoken, "-o", tmp_path / "out.jsonl"], capsys)
    err = " ".join(err.split())
    assert code == 2 and f"{spoken}:1: field 'messages[0].content[0]': a vision-language model cannot read audio" in err
    assert not (tmp_path / "out.jsonl").exists()
    code, _, err = run(["-w", ws, "eval", "--split", "train", "--adapter", "base"], capsys)
    assert code == 2 and "name the adapter" in err
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    folder = tmp_path / "lora"
    get_peft_model(AutoModelForImageTextToText.from_pretrained(smolvlm), LoraConfig(r=2, target_modules=["q_proj"])
                   ).save_pretrained(folder)
    code, _, err = run(["-w", ws, "eval", "--split", "train", "--adapter", str(folder)], capsys)
    err = " ".join(err.split())
    assert code == 2 and "train.jsonl:4: field 'messages[0].content[0]': a vision-language model cannot read audio" in err
    assert not (ws / "reports" / "shop").exists() and not _registry(ws).list_evaluations()


def test_export_writes_a_merged_folder_plain_transformers_loads_and_checks_it(tmp_path, smolvlm, capsys):
    """`tunewright export` of a native adapter: the merged folder answers an image question as the
    adapter on its base does (plain transformers on the folder against plain peft on the base), the
    parity check passes on the held-out rows, and text-model formats are refused naming `formats`."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    ws = _workspace(tmp_path, smolvlm, capsys)
    assert run(["-w", ws, "train"], capsys)[0] == 0
    code, _, err = run(["-w", ws, "export", "shop", "--format", "merged,gguf", "-o", tmp_path / "refused"], capsys)
    assert code == 2 and "field 'formats'" in err and "'gguf' is a text-model export" in " ".join(err.split())
    assert not (tmp_path / "refused").exists()
    # No eval split (the rows were imported with --eval-fraction 0): the check has nothing to ask.
    code, _, err = run(["-w", ws, "export", "shop", "--check", "-o", tmp_path / "nothing"], capsys)
    assert code == 2 and "field 'check'" in err and not (tmp_path / "nothing").exists()

    code, out, err = run(["-w", ws, "export", "shop", "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    merged = tmp_path / "out" / "merged"
    assert not [p for p in merged.iterdir() if p.suffix in (".bin", ".pt")]
    image = Image.open(tmp_path / "data" / "red.png").convert("RGB")
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which colour?"}]}]

    def answer(model, processor) -> tuple[str, torch.Tensor]:
        text = processor.apply_chat_template(conversation, add_generation_prompt=True)
        inputs = processor(text=[text], images=[[image]], return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
            logits = model(**inputs).logits
        return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True), logits

    adapter = Path(_registry(ws).list_adapters()[0].path)
    base = AutoModelForImageTextToText.from_pretrained(smolvlm).eval()
    want, want_logits = answer(PeftModel.from_pretrained(base, adapter).eval(), AutoProcessor.from_pretrained(smolvlm))
    got, got_logits = answer(AutoModelForImageTextToText.from_pretrained(merged).eval(), AutoProcessor.from_pretrained(merged))
    assert got == want and (got_logits - want_logits).abs().max() < 1e-4 * max(1.0, want_logits.abs().max())

    # With held-out rows (a new version of the dataset), --check asks them with their images and
    # registers the export when they match.
    data = tmp_path / "more"
    data.mkdir()
    held = [{**row, "meta": {"split": "eval"}} for row in map(json.loads, _rows(data).read_text().splitlines())]
    code, _, err = run(["-w", ws, "data", "import", write_jsonl(data / "held.jsonl", held)], capsys)
    assert code == 0, err
    code, out, err = run(["-w", ws, "export", "shop", "--check", "--probes", "2", "-o", tmp_path / "checked"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "checked" / "check.json").read_text())
    assert report["passed"] and len(report["probes"]) == 2
    assert report["probes"][0][0]["content"].startswith("[image: media/")
    assert report["formats"]["merged"]["texts_match"] and report["formats"]["merged"]["max_logit_diff"] < 1e-3
    # The check fails when the folder is not the adapter merged: the base's own weights, exported.
    from tunewright.data.api import load_split
    from tunewright.export.vision import run_vision_check
    from tunewright.models.adapters import resolve_ref
    from tunewright.workspace import Workspace

    code, _, err = run(["-w", ws, "export", "base", "-o", tmp_path / "plain"], capsys)
    assert code == 0, err
    workspace = Workspace.open(ws)
    record, rows = load_split(workspace, None, "eval", text_only=False)
    resolved = resolve_ref("shop", base_model=str(smolvlm), registry=workspace.registry, vision=True)
    wrong = run_vision_check(resolved, tmp_path / "plain" / "merged", rows, Path(record.path), max_new_tokens=8)
    assert not wrong["passed"] and any("max logit difference" in f for f in wrong["failures"])
