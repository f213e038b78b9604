"""One training process under a launcher: ``python -m tunewright.train.worker RUN_DIR/job.json``.

Workers never touch the registry: the launching process created the run and registers the adapter
rank 0 saves. Rank 0 also holds ``workers.lock`` while it trains, so ``train --resume`` can tell
workers that outlived their launcher from a run that is really gone.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from contextlib import nullcontext
from pathlib import Path

from ..config import TrainSpec
from ..data.prepare import read_split
from ..errors import TunewrightError
from ..io import atomic_write_json
from ..models import BaseModelInfo
from .checkpoint import hold_lock
from .distributed import DistContext
from .launch import result_json
from .loop import StepInfo, train_adapter


def _progress_writer(path: Path):
    handle = open(path, "a", encoding="utf-8")

    def on_step(info: StepInfo) -> None:
        handle.write(json.dumps(dataclasses.asdict(info)) + "\n")
        handle.flush()

    return on_step


def run_job(job_file: Path) -> None:
    job = json.loads(job_file.read_text())
    run_dir = Path(job["run_dir"])
    dist = DistContext.from_env(job["mode"], grad_accum=job["spec"]["grad_accum"])
    try:
        lock = hold_lock(run_dir / "workers.lock", f"run {job['run_id']}") if dist.is_main else nullcontext()
        with lock:
            result = train_adapter(
                base=BaseModelInfo(ref=job["base"]["ref"], folder=Path(job["base"]["folder"]), sha256=job["base"]["sha256"]),
                rows=read_split(job["dataset_path"], "train"),
                spec=TrainSpec.model_validate(job["spec"]),
                run_dir=run_dir,
                adapter_dir=Path(job["adapter_dir"]),
                resume=job["resume"],
                callbacks=[_progress_writer(run_dir / "progress.jsonl")] if dist.is_main else [],
                dist=dist,
            )
            if dist.is_main:
                atomic_write_json(run_dir / "result.json", result_json(result))
    except TunewrightError as exc:
        # Every rank meets the same refusal (changed settings, no checkpoint); one message is enough.
        if dist.is_main:
            atomic_write_json(run_dir / "error.json", {"message": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    finally:
        dist.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m tunewright.train.worker RUN_DIR/job.json")
    run_job(Path(args[0]))


if __name__ == "__main__":
    main()
