"""The training stage as a user would call it: train the recipe's adapter on a registered dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ..data.api import load_split
from ..env_info import hardware, library_versions
from ..errors import TunewrightError
from ..io import sha256_file
from ..models import prepare_base_model
from .loop import StepInfo, TrainResult, train_adapter


def _resumable_run(workspace, adapter: str):
    for run in reversed(workspace.registry.list_runs()):
        if run.kind == "train" and run.name == adapter:
            return run if run.status != "completed" else None
    return None


def train(
    workspace,
    *,
    adapter: str | None = None,
    dataset: str | None = None,
    resume: bool = False,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
    overrides: dict | None = None,
):
    """Train, save the adapter in standard PEFT layout, and register run and adapter."""
    spec = workspace.recipe.train.model_copy(update=overrides or {})
    adapter = adapter or spec.adapter or workspace.recipe.name
    dataset_record, rows = load_split(workspace, dataset or spec.dataset, "train")
    base = prepare_base_model(workspace.recipe.base_model)
    registry = workspace.registry

    if resume:
        run = _resumable_run(workspace, adapter)
        if run is None:
            raise TunewrightError(f"no unfinished training run of adapter '{adapter}' to resume")
        if run.config.get("dataset") != {"name": dataset_record.name, "version": dataset_record.version}:
            raise TunewrightError(f"run {run.id} trained on dataset {run.config.get('dataset')}; pass --dataset to match")
        if run.status != "running":
            run = registry.resume_run(run.id)
    else:
        config = {"recipe": workspace.recipe.resolved(), "train": spec.model_dump(mode="json"), "adapter": adapter,
                  "dataset": {"name": dataset_record.name, "version": dataset_record.version}}
        run = registry.start_run(
            name=adapter, kind="train", config=config, seed=spec.seed, hardware=hardware(),
            library_versions=library_versions(), dataset_id=dataset_record.id, base_model_ref=base.ref,
            base_model_sha256=base.sha256, output_path=str(workspace.dir("adapters") / adapter),
        )
    run_dir = workspace.dir("runs") / f"run-{run.id:04d}"
    adapter_dir = workspace.dir("adapters") / adapter / f"run-{run.id:04d}"
    try:
        result = train_adapter(
            base=base, rows=rows, spec=spec, run_dir=run_dir, adapter_dir=adapter_dir, resume=resume, callbacks=callbacks
        )
    except BaseException as exc:
        # An interrupted run stays resumable; its status says why it stopped.
        registry.finish_run(run.id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    metrics = _metrics(result)
    run = registry.finish_run(run.id, status="completed", metrics=metrics)
    record = registry.add_adapter(
        name=adapter, path=str(adapter_dir), weights_sha256=sha256_file(adapter_dir / "adapter_model.safetensors"),
        peft_type=spec.method, run_id=run.id, base_model_ref=base.ref, base_model_sha256=base.sha256,
    )
    return run, record, result


def _metrics(result: TrainResult) -> dict:
    return {
        "steps": result.steps,
        "losses": result.losses,
        "final_loss": result.losses[-1] if result.losses else None,
        "tokens_seen": result.tokens_seen,
        "tokens_per_second": result.tokens_per_second,
        "train_seconds": result.train_seconds,
        "rows": result.n_rows,
        "rows_dropped_too_long": result.n_dropped,
        "resumed_from_step": result.resumed_from_step,
        **result.extra,
    }
