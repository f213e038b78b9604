"""Training checkpoints in safetensors + JSON (never pickle), written atomically."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..io import atomic_dir

_STEP_DIR = "step-{:07d}"


@dataclass
class TrainerState:
    step: int
    tokens_seen: int
    losses: list[float]
    scheduler: dict
    config_sha256: str

    def to_json(self) -> dict:
        return self.__dict__.copy()


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors = {}
    for param_id, slots in state["state"].items():
        for slot, value in slots.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"state.{param_id}.{slot}"] = tensor.contiguous()
    return tensors, {"param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, param_id, slot = key.split(".", 2)
        state.setdefault(int(param_id), {})[slot] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    folder: Path,
    *,
    adapter_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
) -> Path:
    target = folder / _STEP_DIR.format(state.step)
    optim_tensors, optim_meta = _flatten_optimizer(optimizer)
    with atomic_dir(target) as tmp:
        save_file({k: v.detach().contiguous() for k, v in adapter_state.items()}, tmp / "adapter.safetensors")
        save_file(optim_tensors, tmp / "optimizer.safetensors")
        save_file({"torch": torch.get_rng_state()}, tmp / "rng.safetensors")
        (tmp / "optimizer.json").write_text(json.dumps(optim_meta))
        (tmp / "trainer_state.json").write_text(json.dumps(state.to_json()))
    return target


def latest_checkpoint(folder: Path) -> Path | None:
    # Only fully renamed step folders count; a crash mid-write leaves a hidden temp folder behind.
    steps = sorted(p for p in folder.glob("step-*") if (p / "trainer_state.json").is_file())
    return steps[-1] if steps else None


@dataclass
class LoadedCheckpoint:
    adapter_state: dict[str, torch.Tensor]
    optimizer_state: dict
    rng_state: torch.Tensor
    state: TrainerState


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    meta = json.loads((path / "optimizer.json").read_text())
    return LoadedCheckpoint(
        adapter_state=load_file(path / "adapter.safetensors"),
        optimizer_state=_unflatten_optimizer(load_file(path / "optimizer.safetensors"), meta),
        rng_state=load_file(path / "rng.safetensors")["torch"],
        state=TrainerState(**json.loads((path / "trainer_state.json").read_text())),
    )
