"""Training checkpoints in safetensors + JSON (never pickle), written atomically and durably.

A process can die at any instant (SIGKILL, OOM killer, power loss). A checkpoint is written into a
hidden temporary folder, every file fsynced, then renamed to ``step-NNNNNNN`` in one step and the
parent folder fsynced, so a ``step-*`` folder is always complete; leftovers of an interrupted write
keep their hidden temporary name and are swept away by the next save.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file

from ..errors import TunewrightError
from ..io import atomic_dir

_STEP_DIR = "step-{:07d}"
_STEP_RE = re.compile(r"step-\d{7}")
_FILES = ("trainable.safetensors", "optimizer.safetensors", "rng.safetensors", "optimizer.json", "trainer_state.json")


@dataclass
class TrainerState:
    step: int
    tokens_seen: int
    losses: list[float]
    scheduler: dict
    config_sha256: str

    def to_json(self) -> dict:
        return self.__dict__.copy()


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {}
    for param_id, slots in state["state"].items():
        for slot, value in slots.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"state.{param_id}.{slot}"] = tensor.contiguous()
    return tensors, {"param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int | str, dict] = {}
    for key, value in tensors.items():
        # Ids are positions for a plain optimizer, dotted parameter names for a sharded one's full state.
        param_id, slot = key.split(".", 1)[1].rsplit(".", 1)
        state.setdefault(int(param_id) if param_id.isdigit() else param_id, {})[slot] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    folder: Path,
    *,
    trainable_state: dict[str, torch.Tensor],
    optimizer_state: dict | None,
    state: TrainerState,
    rng_states: Sequence[torch.Tensor] | None = None,
) -> Path:
    """``optimizer_state`` is an optimizer's ``state_dict()``; None where it cannot be gathered (ZeRO-3)."""
    target = folder / _STEP_DIR.format(state.step)
    optim_tensors, optim_meta = _flatten_optimizer(optimizer_state or {"state": {}, "param_groups": []})
    optim_meta["saved"] = optimizer_state is not None
    rng_states = list(rng_states or [torch.get_rng_state()])
    rng = {"torch": rng_states[0], **{f"torch.rank{r}": s for r, s in enumerate(rng_states) if r}}
    with atomic_dir(target) as tmp:
        save_file({k: v.detach().contiguous() for k, v in trainable_state.items()}, tmp / "trainable.safetensors")
        save_file(optim_tensors, tmp / "optimizer.safetensors")
        save_file(rng, tmp / "rng.safetensors")
        (tmp / "optimizer.json").write_text(json.dumps(optim_meta))
        (tmp / "trainer_state.json").write_text(json.dumps(state.to_json()))
        # Rename is atomic against a crash of this process; fsync makes it so against the machine's.
        for name in _FILES:
            _fsync(tmp / name)
        _fsync(tmp)
    _fsync(folder)
    return target


def _complete(path: Path) -> bool:
    return bool(_STEP_RE.fullmatch(path.name)) and all((path / name).is_file() for name in _FILES)


def latest_checkpoint(folder: Path) -> Path | None:
    # Hidden temporary folders of a write that never finished do not match step-NNNNNNN.
    steps = sorted(p for p in folder.glob("step-*") if _complete(p))
    return steps[-1] if steps else None


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints; sweep temporary folders that crashed writes left."""
    steps = sorted(p for p in folder.glob("step-*") if p.is_dir())
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in folder.glob(".step-*"):
        shutil.rmtree(stale, ignore_errors=True)


@dataclass
class LoadedCheckpoint:
    trainable_state: dict[str, torch.Tensor]
    optimizer_state: dict | None
    rng_states: dict[str, torch.Tensor]
    state: TrainerState

    def rng_state(self, rank: int = 0) -> torch.Tensor:
        return self.rng_states.get(f"torch.rank{rank}", self.rng_states["torch"])


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    meta = json.loads((path / "optimizer.json").read_text())
    optimizer_state = _unflatten_optimizer(load_file(path / "optimizer.safetensors"), meta)
    return LoadedCheckpoint(
        trainable_state=load_file(path / "trainable.safetensors"),
        optimizer_state=optimizer_state if meta.get("saved", True) else None,
        rng_states=load_file(path / "rng.safetensors"),
        state=TrainerState(**json.loads((path / "trainer_state.json").read_text())),
    )


@contextmanager
def hold_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock that the OS drops when its holder dies, however it dies.

    This is how ``train --resume`` tells a run that is still training from one whose process was
    killed and left its registry status at "running".
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks; trust the registry status
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TunewrightError(f"{what} is still running in another process", file=path) from None
        yield
    finally:
        os.close(fd)
