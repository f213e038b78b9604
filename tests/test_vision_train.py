"""`tunewright train` with `train.vision`: a local vision-language model folder trained natively on a
registered dataset whose rows keep their image parts, and registered like any adapter; what the
native path does not do yet is refused by name, before a run is registered."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
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
