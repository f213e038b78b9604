"""The training stage as a user would call it: train the recipe's adapter on a registered dataset."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Sequence

from ..data.api import load_split
from ..env_info import hardware, library_versions
from ..errors import TunewrightError
from ..data.pii_scan import require_resolved
from ..io import atomic_write_jsonl, sha256_file
from ..models import prepare_base_model
from ..plan.api import measured_against_plan, planned_spec, spec_as_planned
from ..plan.hardware import cpu_generation_dtype
from .checkpoint import hold_lock
from .launch import LaunchOptions, LaunchPlan, prepare_launch, run_workers
from .loop import StepInfo, TrainResult, train_adapter
from .replay import replay_rows, shipped_prompts


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
    if spec.vision is not None:
        return _train_vision(workspace, spec, adapter=adapter, dataset=dataset, resume=resume, launch=launch,
                             callbacks=callbacks, allow_pii=allow_pii)
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
            rows, _ = with_replay(workspace, base, spec, rows)
            # A killed process leaves its run "running"; its locks died with it, a live one's did not.
            run_dir = _run_dir(workspace, run.id)
            held.enter_context(hold_lock(run_dir / "train.lock", f"run {run.id}"))
            with hold_lock(run_dir / "workers.lock", f"training workers of run {run.id}"):
                pass
            run = registry.resume_run(run.id)
        else:
            pii_override = require_resolved(workspace, dataset_record, allow_pii=allow_pii)
            rows, replay = with_replay(workspace, base, spec, rows)
            spec, plan_record = planned_spec(base, rows, spec)  # the recipe's explicit fields win; the plan fills the rest
            config = {"recipe": workspace.recipe.resolved(), "train": spec.model_dump(mode="json"), "adapter": adapter,
                      "dataset": {"name": dataset_record.name, "version": dataset_record.version}, "plan": plan_record}
            if replay is not None:
                config["replay"] = replay
            if pii_override is not None:
                config["pii_override"] = pii_override
            run = _start_run(workspace, adapter, config, spec, dataset_record, base)
            run_dir = _run_dir(workspace, run.id)
            held.enter_context(hold_lock(run_dir / "train.lock", f"run {run.id}"))
        adapter_dir = workspace.dir("adapters") / adapter / f"run-{run.id:04d}"
        try:
            if launch.in_process:
                result = train_adapter(base=base, rows=rows, spec=spec, run_dir=run_dir, adapter_dir=adapter_dir,
                                       resume=resume, callbacks=callbacks)
            else:
                plan = prepare_launch(launch, base=base, dataset_path=_rows_folder(run_dir, rows, dataset_record, spec),
                                      spec=spec, run_dir=run_dir,
                                      adapter_dir=adapter_dir, resume=resume, run_id=run.id)
                result = run_workers(plan, run_dir, callbacks)
        except BaseException as exc:
            # An interrupted run stays resumable; its status says why it stopped.
            registry.finish_run(run.id, status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        _record_retrieval(dataset_record, adapter_dir)
        _record_alignment(dataset_record, adapter_dir)
        metrics = {**_metrics(result), **measured_against_plan(run.config.get("plan"))}
        run, record = _complete(registry, run, metrics, adapter, adapter_dir, spec, base)
    return run, record, result


def _start_run(workspace, adapter: str, config: dict, spec, dataset_record, base):
    return workspace.registry.start_run(
        name=adapter, kind="train", config=config, seed=spec.seed, hardware=hardware(),
        library_versions=library_versions(), dataset_id=dataset_record.id, base_model_ref=base.ref,
        base_model_sha256=base.sha256, output_path=str(workspace.dir("adapters") / adapter),
    )


def _complete(registry, run, metrics: dict, adapter: str, adapter_dir: Path, spec, base):
    """The run completed and its adapter registered, by the hash of the weights file on disk."""
    return registry.complete_training(run.id, metrics=metrics, adapter=dict(
        name=adapter, path=str(adapter_dir), weights_sha256=sha256_file(adapter_dir / "adapter_model.safetensors"),
        method=spec.method, base_model_ref=base.ref, base_model_sha256=base.sha256,
    ))


def _train_vision(workspace, spec, *, adapter: str, dataset: str | None, resume: bool, launch: LaunchOptions,
                  callbacks, allow_pii: str | None):
    """Native multi-modal PEFT (``train.vision``): a local vision-language model folder trained on
    rows that keep their image parts, registered like any adapter. What the text path adds on top
    (planner, replay, resume, several processes) is refused by name rather than skipped."""
    from ..data.vision import require_image_rows
    from .vision import train_vision_adapter

    unsupported = {"train.replay": spec.replay is not None, "--resume": resume, "--nproc": not launch.in_process}
    for what, asked in unsupported.items():
        if asked:
            raise TunewrightError(f"{what} is not available for vision-language training yet", field="train.vision")
    dataset_record, rows = load_split(workspace, dataset or spec.dataset, "train", text_only=False)
    require_image_rows(rows, Path(dataset_record.path) / "train.jsonl")
    base = prepare_base_model(workspace.recipe.base_model, vision=True)
    pii_override = require_resolved(workspace, dataset_record, allow_pii=allow_pii)
    config = {"recipe": workspace.recipe.resolved(), "train": spec.model_dump(mode="json"), "adapter": adapter,
              "dataset": {"name": dataset_record.name, "version": dataset_record.version}}
    if pii_override is not None:
        config["pii_override"] = pii_override
    registry = workspace.registry
    run = _start_run(workspace, adapter, config, spec, dataset_record, base)
    adapter_dir = workspace.dir("adapters") / adapter / f"run-{run.id:04d}"
    with hold_lock(_run_dir(workspace, run.id) / "train.lock", f"run {run.id}"):
        try:
            result = train_vision_adapter(folder=base.folder, rows=rows, media_folder=dataset_record.path, spec=spec,
                                          adapter_dir=adapter_dir, callbacks=callbacks)
        except BaseException as exc:
            registry.finish_run(run.id, status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        run, record = _complete(registry, run, _metrics(result), adapter, adapter_dir, spec, base)
    return run, record, result


def with_replay(workspace, base, spec, rows: list) -> tuple[list, dict | None]:
    """The training rows plus the recipe's replay rows (the base model's own answers), and what the
    run config records about them; the rows unchanged when ``train.replay`` is unset."""
    if spec.replay is None:
        return rows, None
    from ..evaluate.forgetting import load_general_prompts, load_retention_probes

    forgetting = workspace.recipe.govern.forgetting
    measured = {
        "KL prompts": [p.prompt for p in load_general_prompts(
            workspace.path(forgetting.prompts) if forgetting.prompts else None, field="govern.forgetting.prompts")],
        "retention probes": [p.question for p in load_retention_probes(
            workspace.path(forgetting.probes) if forgetting.probes else None, field="govern.forgetting.probes")],
    }
    prompts = workspace.path(spec.replay.prompts) if spec.replay.prompts else shipped_prompts()
    # An explicit fp32 run answers in fp32; otherwise the CPU's fastest precision (the answers are
    # generated on the CPU whatever device trains).
    precision = "fp32" if spec.precision == "fp32" else cpu_generation_dtype(spec.threads)
    replay = replay_rows(base=base, spec=spec.replay, prompts_path=prompts, measured=measured,
                         cache_dir=workspace.dir("cache"), precision=precision)
    return [*rows, *replay.rows], replay.record


def _rows_folder(run_dir: Path, rows: list, dataset_record, spec) -> Path:
    """Workers read their rows from a dataset folder: the registered one, or, with replay rows mixed
    in, a copy of the training split written under the run."""
    if spec.replay is None:
        return Path(dataset_record.path)
    folder = run_dir / "train-rows"
    atomic_write_jsonl(folder / "train.jsonl", [r.to_json() for r in rows])
    return folder


def _record_retrieval(dataset_record, adapter_dir: Path) -> None:
    """An adapter trained on open-book rows is asked the same way everywhere: its folder says how."""
    open_book = (dataset_record.spec or {}).get("open_book")
    if open_book:
        from ..retrieval.context import RetrievalConfig

        name, _, version = open_book["index"].partition("@")
        RetrievalConfig(index=name, trained_version=version, index_sha256=open_book["index_sha256"],
                        k=open_book["k"]).save(adapter_dir)


def _record_alignment(dataset_record, adapter_dir: Path) -> None:
    """An adapter trained on aligned rows (`data align`) reads image and audio parts the same way at
    inference (the server): its folder says with which engines and settings."""
    from ..align.adapter import AlignmentConfig

    config = AlignmentConfig.from_dataset(dataset_record)
    if config is not None:
        config.save(adapter_dir)


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
    rows, _ = with_replay(workspace, base, spec, rows)  # the workers must train on the replay rows too
    spec, _ = planned_spec(base, rows, spec)  # the values a real start would train with
    folder = workspace.dir("runs") / "dry-run"
    return prepare_launch(launch, base=base, dataset_path=_rows_folder(folder, rows, dataset_record, spec), spec=spec,
                          run_dir=folder, adapter_dir=folder / "adapter", resume=False, run_id=None)


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
