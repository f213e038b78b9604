"""Launching the training workers: one process per device, on one machine or several.

The launching process keeps the registry (start, finish, register the adapter) and never trains;
workers get everything they need from a job file in the run folder and report back through files
there: ``progress.jsonl`` (one line per step, replayed into the caller's callbacks),
``result.json`` from rank 0, ``error.json`` when a worker refuses the job. DDP goes through
``torch.distributed.run``; FSDP and ZeRO-3 through ``accelerate launch`` with a config file
written for the run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..config import TrainSpec
from ..errors import TunewrightError
from ..io import atomic_write_json
from ..models import BaseModelInfo
from .distributed import MODES, SHARDED_MODES
from .loop import StepInfo, TrainResult
from .sharded import write_launch_config

log = logging.getLogger(__name__)
WORKER_MODULE = "tunewright.train.worker"


@dataclass(frozen=True)
class LaunchOptions:
    mode: str = "none"
    nproc: int = 1  # worker processes per machine
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None
    dry_run: bool = False

    @property
    def in_process(self) -> bool:
        return self.mode == "none"

    def validate(self) -> None:
        if self.mode not in MODES:
            raise TunewrightError(f"unknown --distributed '{self.mode}'; use one of: {', '.join(MODES)}")
        if self.in_process and (self.nproc > 1 or self.num_machines > 1):
            raise TunewrightError("--nproc and --num-machines need --distributed ddp, fsdp or zero3")
        if self.in_process and self.dry_run:
            raise TunewrightError("--dry-run shows a distributed launch; add --distributed ddp, fsdp or zero3")
        if self.nproc < 1 or self.num_machines < 1 or not 0 <= self.machine_rank < self.num_machines:
            raise TunewrightError("need --nproc >= 1, --num-machines >= 1 and 0 <= --machine-rank < --num-machines")
        if self.num_machines > 1 and not self.main_process_ip:
            raise TunewrightError("several machines need --main-process-ip (the address of machine 0)")
        if self.dry_run:
            return
        if self.machine_rank > 0:
            raise TunewrightError(
                "the run is created and registered once, on machine 0: start 'tunewright train' there and run "
                "the worker command it prints for this machine (or see it with --dry-run)"
            )
        if self.mode in SHARDED_MODES and not torch.cuda.is_available():
            raise TunewrightError(
                f"--distributed {self.mode} shards the model over CUDA GPUs and this machine has none "
                "(accelerate would quietly fall back to plain data parallelism on a CPU). Use --distributed ddp "
                "to train on several CPU processes, or --dry-run to write the launch config and print the command"
            )
        if self.mode == "zero3":
            try:
                import deepspeed  # noqa: F401
            except ImportError:
                raise TunewrightError("--distributed zero3 needs DeepSpeed: pip install deepspeed") from None


def launch_command(options: LaunchOptions, job_file: Path, config_file: Path | None,
                   machine_rank: int | None = None) -> list[str]:
    rank = str(options.machine_rank if machine_rank is None else machine_rank)
    port = str(options.main_process_port or 29500)
    worker = ["-m", WORKER_MODULE, str(job_file)]
    if options.mode == "ddp":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(options.nproc)]
        if options.num_machines == 1:
            command.append("--standalone")  # a free local port: runs side by side never collide
        else:
            command += ["--nnodes", str(options.num_machines), "--node_rank", rank,
                        "--master_addr", options.main_process_ip, "--master_port", port]
        return command + worker
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
               "--num_processes", str(options.nproc * options.num_machines),
               "--num_machines", str(options.num_machines), "--machine_rank", rank]
    if options.num_machines > 1:
        command += ["--main_process_ip", options.main_process_ip, "--main_process_port", port]
    return command + worker


@dataclass(frozen=True)
class LaunchPlan:
    job_file: Path
    config_file: Path | None  # the accelerate config (fsdp, zero3)
    command: list[str]
    other_machines: dict[int, list[str]]  # the command each other machine runs

    def describe(self) -> str:
        lines = [shlex.join(self.command)]
        lines += [f"machine {rank}: {shlex.join(cmd)}" for rank, cmd in self.other_machines.items()]
        return "\n".join(lines)


def prepare_launch(options: LaunchOptions, *, base: BaseModelInfo, dataset_path: str | Path, spec: TrainSpec,
                   run_dir: Path, adapter_dir: Path, resume: bool, run_id: int | None) -> LaunchPlan:
    """Write the job file (and accelerate config) into ``run_dir``; return the commands to start it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    job = {
        "mode": options.mode, "run_id": run_id, "resume": resume, "spec": spec.model_dump(mode="json"),
        "base": {"ref": base.ref, "folder": str(base.folder), "sha256": base.sha256},
        "dataset_path": str(dataset_path), "run_dir": str(run_dir), "adapter_dir": str(adapter_dir),
    }
    job_file = run_dir / "job.json"
    atomic_write_json(job_file, job)
    config_file = None
    if options.mode in SHARDED_MODES:
        config_file = write_launch_config(
            options.mode, spec, run_dir, model_folder=base.folder, nproc=options.nproc,
            num_machines=options.num_machines, machine_rank=options.machine_rank,
            main_process_ip=options.main_process_ip, main_process_port=options.main_process_port,
        )
    others = {r: launch_command(options, job_file, config_file, r)
              for r in range(options.num_machines) if r != options.machine_rank}
    return LaunchPlan(job_file, config_file, launch_command(options, job_file, config_file), others)


def _die_with_parent() -> None:
    # If the launching process is killed, the launcher (and through it the workers) must not train on
    # unsupervised, racing a later --resume. Linux only; elsewhere the workers' own lock still guards.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _replay_progress(path: Path, offset: int, callbacks: Sequence[Callable[[StepInfo], None]]) -> int:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return offset
    complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next poll
    for line in complete.splitlines():
        info = StepInfo(**json.loads(line))
        for callback in callbacks:
            callback(info)
    return offset + len(complete)


def run_workers(plan: LaunchPlan, run_dir: Path, callbacks: Sequence[Callable[[StepInfo], None]] = ()) -> TrainResult:
    for name in ("progress.jsonl", "result.json", "error.json"):
        (run_dir / name).unlink(missing_ok=True)
    for rank, command in plan.other_machines.items():
        log.info("start the workers of machine %d with: %s", rank, shlex.join(command))
    process = subprocess.Popen(plan.command, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    offset = 0
    try:
        while True:
            finished = process.poll() is not None
            offset = _replay_progress(run_dir / "progress.jsonl", offset, callbacks)
            if finished:
                break
            time.sleep(0.2)
    finally:
        if process.poll() is None:  # a callback raised or we were interrupted: stop the workers too
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if process.returncode != 0:
        error = run_dir / "error.json"
        if error.is_file():
            raise TunewrightError(json.loads(error.read_text())["message"])
        raise TunewrightError(f"the training workers stopped with exit status {process.returncode}; their output is above")
    data = json.loads((run_dir / "result.json").read_text())
    return TrainResult(**{**data, "adapter_dir": Path(data["adapter_dir"])})


def result_json(result: TrainResult) -> dict:
    return {**dataclasses.asdict(result), "adapter_dir": str(result.adapter_dir)}
