"""Training time: the FLOPs the loop's own batches cost, over the measured matmul rate.

Per micro-batch (P = decoder linear weights, all layers; P_a = trainable adapter weights; T = tokens
the decoder runs, the shared prefix once; S = padded width; L = layers; d_q = query width; V·h = the
output head; n = labelled positions):

* forward:  2·P·T + 2·P_a·T + 4·S·d_q·L·T (scores and weighted values) + 2·V·h·n
* backward: the base is frozen, so no weight gradients for it: only the input gradients, as many
  FLOPs as its forward (2·P·T, 2·V·h·n); the adapter needs both input and weight gradients
  (4·P_a·T); attention has only activation operands, so both of its matmuls get two gradients
  (8·S·d_q·L·T).
* total ≈ 4·P·T + 6·P_a·T + 12·S·d_q·L·T + 4·V·h·n, i.e. ~4 FLOPs per parameter per token rather
  than the 6 of full fine-tuning; gradient checkpointing runs the decoder forward again (+2·P·T +
  2·P_a·T + 4·S·d_q·L·T).

seconds = (FLOPs + T0 x per-token decoder FLOPs per decoder pass) / (measured fp32 matmul rate x
efficiency). T0 is what a pass costs beyond its FLOPs, in tokens of work: thin matmuls (a few
hundred rows by 576) run far below the square-matmul rate, and the shared prompt's own pass of ~24
rows worst of all. Fitted on three runs measured on the reference 2-core machine at 115 GFLOP/s
(demo: 156 steps in 364 s; `make bench` batch 8 with and without prefix sharing, 202.5 and 158.8
tokens/s): efficiency 0.79, T0 72 tokens, all three within 5%. That machine is a VM whose speed
drifts by 10-20% over minutes (the same demo later took 439 s), which bounds how close any time
prediction made from a one-second matmul measurement can be. ``tunewright plan --calibrate``
re-fits the efficiency from a few real steps on the machine at hand.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .memory import MicroBatch, ModelShape, fixed_bytes

CPU_EFFICIENCY = 0.79
CUDA_EFFICIENCY = 0.35  # assumption, not measured: small decoders keep a GPU far from its peak
PASS_OVERHEAD_TOKENS = {"cpu": 72, "cuda": 512}  # a GPU needs thousands of rows per matmul to fill up: assumption
PROFILE_ROW_LIMIT = 20_000
CALIBRATION_BUDGET_S = 12.0


@dataclass
class DataProfile:
    """Token counts of the rows as the loop encodes them (same template, same truncation)."""

    lengths: list[int]
    labelled: list[int]
    rows: list[int]  # index of each profiled row in the dataset
    prefix: int  # shared prefix the loop runs once per batch (0 if it would not share)
    dropped: int
    scale: float = 1.0  # rows represented per profiled row, when a large dataset was sampled

    @property
    def tokens(self) -> int:
        return round(sum(self.lengths) * self.scale)


def profile_rows(tokenizer, rows, max_length: int) -> DataProfile:
    from ..data.batching import shared_prefix_length
    from ..data.tokenize import encode_chat

    step = max(1, math.ceil(len(rows) / PROFILE_ROW_LIMIT))  # an even sample keeps a huge dataset's plan quick
    encoded, kept, dropped = [], [], 0
    for index in range(0, len(rows), step):
        item = encode_chat(tokenizer, [m.model_dump() for m in rows[index].messages], max_length)
        if item.n_trainable == 0:
            dropped += 1
        else:
            encoded.append(item)
            kept.append(index)
    prefix = shared_prefix_length(encoded) if encoded else 0
    return DataProfile(lengths=[len(e.input_ids) for e in encoded], rows=kept,
                       labelled=[sum(1 for x in e.labels[1:] if x != -100) for e in encoded],
                       prefix=prefix, dropped=dropped * step, scale=len(rows) / max(1, len(rows[::step])))


def micro_batches(profile: DataProfile, *, batch_size: int, epochs: float, seed: int, max_steps: int | None,
                  grad_accum: int, share_prefix: bool) -> list[list[MicroBatch]]:
    """The loop's own batch plan (same function, same seed), as shapes: optimizer steps of micro-batches."""
    from ..data.batching import plan_micro_batches
    from ..data.batching import MIN_SHARED_PREFIX

    if not profile.lengths:
        return []
    prefix = profile.prefix if share_prefix and profile.prefix >= MIN_SHARED_PREFIX else 0
    steps = plan_micro_batches(profile.lengths, batch_size, epochs, seed, max_steps, grad_accum)
    return [[MicroBatch(rows=len(mb), width=max(profile.lengths[i] for i in mb),
                        labelled=sum(profile.labelled[i] for i in mb), prefix=prefix if len(mb) > 1 else 0,
                        tokens=sum(profile.lengths[i] for i in mb))
             for mb in step] for step in steps]


def micro_batch_flops(shape: ModelShape, mb: MicroBatch, *, adapter_params: int, checkpointing: bool) -> float:
    tokens = mb.rows * (mb.width - mb.prefix) + mb.prefix
    attention = 4 * mb.width * shape.q_dim * shape.n_layers * tokens
    forward = 2 * shape.linear_params * tokens + 2 * adapter_params * tokens + attention
    total = (4 * shape.linear_params * tokens + 6 * adapter_params * tokens + 3 * attention
             + 4 * shape.vocab * shape.hidden * mb.labelled)
    return float(total + (forward if checkpointing else 0))


@dataclass
class TimeEstimate:
    steps: int
    micro_batches: int
    tokens: int  # non-padding tokens the run sees (the loop's tokens/s counts these)
    flops: float
    rate: float  # FLOP/s of the precision the run uses, measured
    efficiency: float
    overhead_s: float
    seconds: float
    calibrated: bool = False
    calibration: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_per_second": self.tokens_per_second}


def predict_time(shape: ModelShape, steps: list[list[MicroBatch]], *, adapter_params: int, checkpointing: bool,
                 rate: float, device: str, efficiency: float | None = None, scale: float = 1.0) -> TimeEstimate:
    """``scale``: rows each planned row stands for, when the plan was made from a sample of a large dataset."""
    efficiency = efficiency or (CUDA_EFFICIENCY if device == "cuda" else CPU_EFFICIENCY)
    flops = scale * sum(micro_batch_flops(shape, mb, adapter_params=adapter_params, checkpointing=checkpointing)
                        for step in steps for mb in step)
    n_micro = round(scale * sum(len(step) for step in steps))
    tokens = round(scale * sum(mb.tokens for step in steps for mb in step))
    per_token = 4 * shape.linear_params + 6 * adapter_params
    passes = sum((2 if mb.prefix else 1) + (1 if checkpointing else 0) for step in steps for mb in step)
    extra = scale * passes * PASS_OVERHEAD_TOKENS[device] * per_token
    overhead = extra / (rate * efficiency) if rate > 0 else float("inf")
    seconds = flops / (rate * efficiency) + overhead if rate > 0 else float("inf")
    return TimeEstimate(steps=round(scale * len(steps)), micro_batches=n_micro, tokens=tokens, flops=flops, rate=rate,
                        efficiency=efficiency, overhead_s=overhead, seconds=seconds)


# --- calibration: a few real steps of the real loop, in a child process ----------------------------------------


def run_calibration(base, rows, spec, steps: int, timeout_s: float = 300) -> dict:
    """Train ``steps`` real steps in a fresh process; return per-step elapsed seconds and its peak memory.

    A child process because peak RSS is a lifetime high-water mark: measured here it would include
    whatever this process did before, and the child's model load is what a real run pays too.
    """
    with tempfile.TemporaryDirectory(prefix="tunewright-calibrate-") as tmp:
        request = Path(tmp) / "request.json"
        request.write_text(json.dumps({
            "base": {"ref": base.ref, "folder": str(base.folder), "sha256": base.sha256},
            "rows": [r.model_dump(mode="json") for r in rows],
            "spec": spec.model_copy(update={"max_steps": steps, "checkpoint_every": 10**9}).model_dump(mode="json"),
            "out": str(Path(tmp) / "out"),
        }))
        # The child trains (``train.calibration``): named as a module to run, not imported, because
        # training uses the planner and the planner sits below it.
        done = subprocess.run([sys.executable, "-m", CALIBRATION_MODULE, str(request)], capture_output=True,
                              text=True, timeout=timeout_s)
        if done.returncode != 0:
            from ..errors import TunewrightError

            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise TunewrightError(f"the calibration run failed: {tail[0]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


CALIBRATION_MODULE = "tunewright.train.calibration"


def calibrate(planner, base, rows, rec) -> dict:
    """Run a few real steps (the longest rows first, for the memory peak) and re-fit efficiency and allocator factor."""
    whole = planner.time(planner.steps(rec.batch_size, rec.grad_accum, rec.gradient_checkpointing),
                         rec.gradient_checkpointing, rec.precision, scaled=False)
    n_steps = max(3, min(10, round(CALIBRATION_BUDGET_S * whole.steps / max(whole.seconds, 1e-3))))
    profile, per_step_rows = planner.profile, rec.batch_size * rec.grad_accum
    order = sorted(range(len(profile.lengths)), key=lambda i: -profile.lengths[i])
    rest = order[per_step_rows:]
    random.Random(planner.spec.seed).shuffle(rest)
    chosen = sorted(order[:per_step_rows] + rest[: per_step_rows * (n_steps - 1)])
    spec = planner.spec.model_copy(update={"batch_size": rec.batch_size, "grad_accum": rec.grad_accum,
                                           "gradient_checkpointing": rec.gradient_checkpointing,
                                           "precision": rec.precision, "method": rec.method})
    measured = run_calibration(base, [rows[profile.rows[i]] for i in chosen], spec, n_steps)
    sub = DataProfile(lengths=[profile.lengths[i] for i in chosen], labelled=[profile.labelled[i] for i in chosen],
                      rows=chosen, prefix=measured["shared_prefix_tokens"], dropped=0)
    steps = planner.steps(rec.batch_size, rec.grad_accum, rec.gradient_checkpointing, profile=sub, max_steps=n_steps)
    predicted = planner.time(steps[1:], rec.gradient_checkpointing, rec.precision, scaled=False)
    took = measured["elapsed"][-1] - measured["elapsed"][0]  # step 1 pays one-off allocations: left out
    scale = took / predicted.seconds if predicted.seconds > 0 and took > 0 else 1.0
    planner.efficiency = predicted.efficiency / scale
    memory = planner.memory(steps, rec.gradient_checkpointing, rec.precision, rec.method)
    variable = memory.total - fixed_bytes(memory)
    factor_before = planner.allocator_factor
    if variable > 0.1 * memory.total:  # otherwise the peak is all fixed costs and says nothing about the factor
        fitted = planner.allocator_factor * (measured["peak_bytes"] - fixed_bytes(memory)) / variable
        planner.allocator_factor = min(4.0, max(1.0, fitted))
    return {"steps": n_steps, "rows": len(chosen), "measured_seconds": took, "predicted_seconds": predicted.seconds,
            "measured_peak_bytes": measured["peak_bytes"], "predicted_peak_bytes": memory.total,
            "efficiency": planner.efficiency, "allocator_factor_before": factor_before,
            "allocator_factor": planner.allocator_factor}
