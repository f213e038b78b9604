"""SIGKILL at any moment: `tunewright train` in a subprocess is killed after a checkpoint, in the
middle of writing one, and at a random moment; every checkpoint left behind is whole, and
`train --resume` finishes with the adapter of a run that was never interrupted, bit for bit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunewright.data.api import import_files
from tunewright.errors import TunewrightError
from tunewright.train.api import train
from tunewright.train.checkpoint import hold_lock, latest_checkpoint, load_checkpoint
from tunewright.workspace import Workspace

from helpers import chat_records, write_jsonl

# The CLI as users run it, plus two test hooks: a marker file once training starts, and an
# optional pause after each checkpoint's first file so a kill can land inside the write.
BOOT = """
import os, sys, time
import tunewright.train.api as api, tunewright.train.checkpoint as checkpoint
real_train, real_save = api.train_adapter, checkpoint.save_file
def train_adapter(**kwargs):
    open(os.environ["TW_TEST_MARKER"], "w").close()
    return real_train(**kwargs)
def save_file(tensors, path, *args, **kwargs):
    real_save(tensors, path, *args, **kwargs)
    if path.name == "trainable.safetensors":
        time.sleep(float(os.environ.get("TW_TEST_SLOW_SAVE", "0")))
api.train_adapter, checkpoint.save_file = train_adapter, save_file
from tunewright.cli.main import main
main(sys.argv[1:])
"""


def _workspace(root, tiny_model_dir, data_file) -> Workspace:
    from tunewright.config import Recipe, TrainSpec

    # One thread: the subprocess and this process must do the same float operations in the same order.
    spec = TrainSpec(r=4, alpha=8, learning_rate=1e-2, batch_size=4, max_steps=12, checkpoint_every=2, max_length=128,
                     dropout=0.1, threads=1)
    workspace = Workspace.init(root, Recipe(name="shop", base_model=str(tiny_model_dir), train=spec))
    import_files(workspace, [data_file], eval_fraction=0.2, seed=1)
    return workspace


def _wait_for(condition, what: str, process: subprocess.Popen, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            pytest.fail(f"training ended (exit {process.returncode}) before {what}")
        time.sleep(0.002)
    pytest.fail(f"timed out waiting for {what}")


class Trainer:
    def __init__(self, root: Path, tmp_path: Path):
        self.root, self.marker = root, tmp_path / "started"
        self.checkpoints = root / "runs" / "run-0001" / "checkpoints"

    def start(self, *args: str, slow_save: float = 0.0) -> subprocess.Popen:
        self.marker.unlink(missing_ok=True)
        env = {**os.environ, "TW_TEST_MARKER": str(self.marker), "TW_TEST_SLOW_SAVE": str(slow_save)}
        return subprocess.Popen([sys.executable, "-c", BOOT, "-w", str(self.root), "train", *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def kill(self, process: subprocess.Popen) -> bool:
        """SIGKILL; False when the run had already finished."""
        process.send_signal(signal.SIGKILL)
        _, err = process.communicate()
        if process.returncode == 0:
            return False
        assert process.returncode == -signal.SIGKILL, err.decode()[-2000:]
        return True

    def state_after_kill(self) -> str:
        """What the registry says once the process is gone, checking it is one of the two whole states.

        'running': nobody was left to record the kill, no adapter is registered, and every visible
        checkpoint is complete. 'completed': the kill came after the run finished, and then its adapter
        is registered with it (one transaction). A fast CPU can finish the last steps before a kill
        lands, so which of the two a random kill finds depends on the machine; either is correct.
        """
        registry = Workspace.open(self.root).registry
        [run] = registry.list_runs()
        adapters = registry.list_adapters()
        if run.status == "completed":
            [adapter] = adapters
            assert adapter.run_id == run.id
            return "completed"
        assert run.status == "running"
        assert adapters == []
        for folder in self.checkpoints.glob("step-*"):
            loaded = load_checkpoint(folder)  # every visible checkpoint is complete and readable
            assert f"step-{loaded.state.step:07d}" == folder.name
        return "running"


def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_adapter(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", chat_records(20))
    _, clean, _ = train(_workspace(tmp_path / "clean", tiny_model_dir, data))
    expected = load_file(Path(clean.path) / "adapter_model.safetensors")

    workspace = _workspace(tmp_path / "killed", tiny_model_dir, data)
    trainer = Trainer(workspace.root, tmp_path)

    # 1. Killed once the first checkpoint exists. The pause in each later checkpoint write (5 of them
    # remain) keeps the run alive well past the kill on any CPU.
    process = trainer.start(slow_save=0.5)
    _wait_for(lambda: (trainer.checkpoints / "step-0000002").is_dir(), "the first checkpoint", process)
    assert trainer.kill(process)
    assert trainer.state_after_kill() == "running"
    # The run says "running" but its process is gone; a live holder of the run's lock is refused.
    with hold_lock(trainer.checkpoints.parent / "train.lock", "test"):
        with pytest.raises(TunewrightError, match="still running in another process"):
            train(Workspace.open(workspace.root), resume=True)

    # 2. Killed in the middle of writing a checkpoint.
    process = trainer.start("--resume", slow_save=5.0)
    partial = _wait_for(
        lambda: next((p for p in trainer.checkpoints.glob(".step-*") if (p / "trainable.safetensors").is_file()), None),
        "a checkpoint write to begin", process,
    )
    assert trainer.kill(process)
    assert not (partial / "trainer_state.json").exists()  # half-written, and only under its temporary name
    partial_step = int(partial.name.split(".")[1].split("-")[1])
    assert latest_checkpoint(trainer.checkpoints).name < f"step-{partial_step:07d}"
    assert trainer.state_after_kill() == "running"

    # 3. Killed at a random moment once training has moved past a given checkpoint (seeded, so a
    # failure replays): anywhere in a step, a checkpoint write or the final save.
    finished, rng = False, random.Random(7)
    for target in (6, 10):
        process = trainer.start("--resume", slow_save=0.05)
        _wait_for(lambda: (trainer.checkpoints / f"step-{target:07d}").is_dir(), f"checkpoint {target}", process)
        time.sleep(rng.uniform(0.0, 0.4))
        # The kill may come after the run was registered as completed (while the process exits):
        # nothing is left to interrupt then, as when the process had already exited.
        if not trainer.kill(process) or trainer.state_after_kill() == "completed":
            finished = True
            break

    # 4. Resume to the end.
    if not finished:
        process = trainer.start("--resume")
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-3000:]
    registry = Workspace.open(workspace.root).registry
    [run] = registry.list_runs()
    [adapter] = registry.list_adapters()
    assert run.status == "completed" and adapter.run_id == run.id
    got = load_file(Path(adapter.path) / "adapter_model.safetensors")
    assert got.keys() == expected.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert adapter.weights_sha256 == clean.weights_sha256
    assert [e.action for e in registry.events()].count("run.resumed") >= 2
