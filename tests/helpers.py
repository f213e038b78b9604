"""Small builders shared by tests."""

from __future__ import annotations

import io
import json
import math
import struct
import wave
from pathlib import Path

from tunewright.data.schema import ChatRow


def qa_rows(n: int, offset: int = 0) -> list[ChatRow]:
    return [
        ChatRow(
            messages=[
                {"role": "user", "content": f"How much does item {i} cost?"},
                {"role": "assistant", "content": f"Item {i} costs ${i * 7 + 3}."},
            ],
            reference=f"${i * 7 + 3}",
        )
        for i in range(offset, offset + n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def chat_records(n: int) -> list[dict]:
    return [r.to_json() for r in qa_rows(n)]


def run_cli(args, capsys) -> tuple[int, str, str]:
    """Run the Typer app in-process; the exit code and what it printed."""
    from tunewright.cli.main import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def init_cli_workspace(root: Path, base_model, capsys, recipe_tail: str = "") -> Path:
    """`tunewright init` a workspace named shop through the CLI, with ``recipe_tail`` appended to its recipe."""
    code, _, err = run_cli(["init", root, "--name", "shop", "--base-model", base_model], capsys)
    assert code == 0, err
    if recipe_tail:
        recipe = root / "tunewright.yaml"
        recipe.write_text(recipe.read_text() + recipe_tail)
    return root


def png(colour, size=(40, 30)) -> bytes:
    """A plain image, PNG-encoded."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def wav(seconds: float) -> bytes:
    """A 440 Hz tone, 16 kHz mono 16-bit WAV."""
    buffer, rate = io.BytesIO(), 16_000
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                                 for i in range(int(rate * seconds))))
    return buffer.getvalue()


class Crash(Exception):
    """Raised by ``crash_at``: a run cut short at a known step."""


def crash_at(step: int):
    """A training callback that stops the run after ``step`` (to test resuming from checkpoints)."""
    def callback(info) -> None:
        if info.step == step:
            raise Crash

    return callback


def tiny_spec(**overrides):
    """The training settings the loop tests run a tiny random model with (checkpoints every 2 steps)."""
    from tunewright.config import TrainSpec

    fields = dict(r=4, alpha=8, learning_rate=5e-3, epochs=2, batch_size=4, checkpoint_every=2, seed=3, max_length=128)
    return TrainSpec(**{**fields, **overrides})


def train_tiny(tiny_model_dir, tmp_path, name="a", rows=None, spec=None, **kwargs):
    """``train_adapter`` on the tiny model, into ``run-NAME`` and ``adapter-NAME`` under ``tmp_path``."""
    from tunewright.models import prepare_base_model
    from tunewright.train.loop import train_adapter

    return train_adapter(base=prepare_base_model(str(tiny_model_dir)), rows=rows or qa_rows(16), spec=spec or tiny_spec(),
                         run_dir=tmp_path / f"run-{name}", adapter_dir=tmp_path / f"adapter-{name}", **kwargs)
