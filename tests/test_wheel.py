"""`pip install tunewright` works like any package: the wheel built from this tree installs into a
clean virtual environment (torch first, pinned, so pip takes the CPU build; then the wheel, which
brings its declared dependencies, held to the tested versions by constraints.txt), its command
runs, and a tiny model trains and answers there. A missing declaration fails here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TRAIN_AND_ANSWER = r'''
import json, sys
from pathlib import Path
from tunewright.config import TrainSpec
from tunewright.data.schema import ChatRow
from tunewright.models import load_model, load_tokenizer, prepare_base_model
from tunewright.train.loop import train_adapter
from tunewright.methods.attach import attach_adapter
from tunewright.models.generation import generate_responses

folder, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = [ChatRow(messages=[{"role": "user", "content": f"How much does item {i} cost?"},
                          {"role": "assistant", "content": f"Item {i} costs ${i * 7 + 3}."}]) for i in range(16)]
base = prepare_base_model(str(folder))
spec = TrainSpec(r=4, alpha=8, batch_size=4, max_steps=3, learning_rate=1e-2, max_length=128)
result = train_adapter(base=base, rows=rows, spec=spec, run_dir=out / "run", adapter_dir=out / "adapter")
model, tokenizer = attach_adapter(load_model(base), result.adapter_dir), load_tokenizer(base, padding_side="left")
answers = generate_responses(model, tokenizer, [[{"role": "user", "content": "How much does item 3 cost?"}]],
                             max_new_tokens=8)
print(json.dumps({"losses": result.losses, "answer": answers[0],
                  "files": sorted(p.name for p in result.adapter_dir.iterdir())}))
'''


def _run(*args, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(list(map(str, args)), capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.integration
def test_the_wheel_installs_in_a_clean_venv_and_trains(tmp_path, tiny_model_dir):
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", ROOT)
    (wheel,) = (tmp_path / "dist").glob("tunewright-*.whl")
    _run(sys.executable, "-m", "venv", tmp_path / "venv")
    pip = [tmp_path / "venv" / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-compile"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run(*pip, "torch==2.13.0", env=env)  # first, so the wheel's torch range is already met by the CPU build
    _run(*pip, "-c", ROOT / "constraints.txt", wheel, env=env)
    bin_dir = tmp_path / "venv" / "bin"
    assert "Usage" in _run(bin_dir / "tunewright", "--help", env=env).stdout
    # The package came from the wheel, not from this tree.
    where = _run(bin_dir / "python", "-c", "import tunewright; print(tunewright.__file__)", env=env, cwd=tmp_path).stdout
    assert str(tmp_path / "venv") in where
    script = tmp_path / "train_and_answer.py"
    script.write_text(TRAIN_AND_ANSWER)
    result = json.loads(_run(bin_dir / "python", script, tiny_model_dir, tmp_path / "out", env=env,
                             cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert len(result["losses"]) == 3 and all(loss > 0 for loss in result["losses"])
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(result["files"])
    assert isinstance(result["answer"], str)
