"""The training stage as a user would call it: train the recipe's adapter on a registered dataset."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Sequence

from ..data.api import load_split
from ..env_info import hardware, library_versions
from ..errors import TunewrightError
from ..govern.pii import require_resolved
from ..io import sha256_file
from ..models import prepare_base_model
from ..plan.api import measured_against_plan, planned_spec, spec_as_planned
from .checkpoint import hold_lock
from .launch import LaunchOptions, LaunchPlan, prepare_launch, run_workers
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
    launch: LaunchOptions | None = None,
    allow_pii: str | None = None,
):
    """Train, save the adapter in standard PEFT layout, and register run and adapter.

    With ``launch`` (distributed), this process keeps the registry and the workers it starts train.
    """
    launch = launch or LaunchOptions()
    launch.validate()
    if launch.dry_run:
        raise TunewrightError("a dry run trains nothing; call plan_launch")
    spec = workspace.recipe.train.model_copy(update=overrides or {})
    adapter = adapter or spec.adapter or workspace.recipe.name
    dataset_record, rows = load_split(workspace, dataset or spec.dataset, "train")
    base = prepare_base_model(workspace.recipe.base_model)
    registry = workspace.registry

    with ExitStack() as held:
        if resume:
            run = _resumable_run(workspace, adapter)
            if run is None:
                raise TunewrightError(f"no unfinished training run of adapter '{adapter}' to resume")
            if run.config.get("dataset") != {"name": dataset_record.name, "version": dataset_record.version}:
                raise TunewrightError(f"run {run.id} trained on dataset {run.config.get('dataset')}; pass --dataset to match")
            spec = spec_as_planned(spec, run.config)
            # A killed process leaves its run "running"; its locks died with it, a live one's did not.
            run_dir = _run_dir(workspace, run.id)
            held.enter_context(hold_lock(run_dir / "train.lock", f"run {run.id}"))
            with hold_lock(run_dir / "workers.lock", f"training workers of run {run.id}"):
                pass
            run = registry.resume_run(run.id)
        else:
            pii_override = require_resolved(workspace, dataset_record, allow_pii=allow_pii)
            spec, plan_record = planned_spec(base, rows, spec)  # the recipe's explicit fields win; the plan fills the rest
            config = {"recipe": workspace.recipe.resolved(), "train": spec.model_dump(mode="json"), "adapter": adapter,
                      "dataset": {"name": dataset_record.name, "version": dataset_record.version}, "plan": plan_record}
            if pii_override is not None:
                config["pii_override"] = pii_override
            run = registry.start_run(
                name=adapter, kind="train", config=config, seed=spec.seed, hardware=hardware(),
                library_versions=library_versions(), dataset_id=dataset_record.id, base_model_ref=base.ref,
                base_model_sha256=base.sha256, output_path=str(workspace.dir("adapters") / adapter),
            )
            run_dir = _run_dir(workspace, run.id)
            held.enter_context(hold_lock(run_dir / "train.lock", f"run {run.id}"))
        adapter_dir = workspace.dir("adapters") / adapter / f"run-{run.id:04d}"
        try:
            if launch.in_process:
                result = train_adapter(base=base, rows=rows, spec=spec, run_dir=run_dir, adapter_dir=adapter_dir,
                                       resume=resume, callbacks=callbacks)
            else:
                plan = prepare_launch(launch, base=base, dataset_path=dataset_record.path, spec=spec, run_dir=run_dir,
                                      adapter_dir=adapter_dir, resume=resume, run_id=run.id)
                result = run_workers(plan, run_dir, callbacks)
        except BaseException as exc:
            # An interrupted run stays resumable; its status says why it stopped.
            registry.finish_run(run.id, status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        metrics = {**_metrics(result), **measured_against_plan(run.config.get("plan"))}
        run, record = registry.complete_training(run.id, metrics=metrics, adapter=dict(
            name=adapter, path=str(adapter_dir), weights_sha256=sha256_file(adapter_dir / "adapter_model.safetensors"),
            peft_type=spec.method, base_model_ref=base.ref, base_model_sha256=base.sha256,
        ))
    return run, record, result


def _run_dir(workspace, run_id: int) -> Path:
    return workspace.dir("runs") / f"run-{run_id:04d}"


def plan_launch(workspace, *, launch: LaunchOptions, dataset: str | None = None,
                overrides: dict | None = None) -> LaunchPlan:
    """--dry-run: write the job and launch config into runs/dry-run/ and return the commands.

    Nothing is registered; the command trains into that folder if run by hand.
    """
    launch.validate()
    spec = workspace.recipe.train.model_copy(update=overrides or {})
    dataset_record, rows = load_split(workspace, dataset or spec.dataset, "train")
    base = prepare_base_model(workspace.recipe.base_model)
    spec, _ = planned_spec(base, rows, spec)  # the values a real start would train with
    folder = workspace.dir("runs") / "dry-run"
    return prepare_launch(launch, base=base, dataset_path=dataset_record.path, spec=spec, run_dir=folder,
                          adapter_dir=folder / "adapter", resume=False, run_id=None)


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
