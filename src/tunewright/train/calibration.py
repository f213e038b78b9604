"""The planner's calibration run: a few real training steps in a fresh process, whose timings and
memory peak it reads back from stdout (``plan.speed.run_calibration`` writes the request)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def calibration_child(request_file: str) -> None:
    import torch

    from ..config import TrainSpec
    from ..data.schema import ChatRow
    from ..models import BaseModelInfo
    from ..plan.hardware import peak_rss_bytes
    from .loop import train_adapter

    request = json.loads(Path(request_file).read_text())
    base = BaseModelInfo(ref=request["base"]["ref"], folder=Path(request["base"]["folder"]),
                         sha256=request["base"]["sha256"])
    elapsed: list[float] = []
    result = train_adapter(
        base=base, rows=[ChatRow.model_validate(r) for r in request["rows"]],
        spec=TrainSpec.model_validate(request["spec"]), run_dir=Path(request["out"]) / "run",
        adapter_dir=Path(request["out"]) / "adapter", callbacks=[lambda info: elapsed.append(info.elapsed)],
    )
    # On a GPU the memory that can run out is the device's; the planner predicts that one there.
    peak = torch.cuda.max_memory_reserved() if torch.cuda.is_available() else peak_rss_bytes()
    print(json.dumps({"elapsed": elapsed, "tokens_seen": result.tokens_seen, "peak_bytes": peak,
                      "shared_prefix_tokens": result.extra.get("shared_prefix_tokens", 0)}))


if __name__ == "__main__":
    calibration_child(sys.argv[1])
