"""Plan a training run before it starts: what fits, what is fastest here, how long, what it costs.

``train`` plans every run and follows the plan wherever the recipe leaves a choice open
(``resolve_train_spec``); ``tunewright plan`` prints the same plan with a cost comparison.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import TrainSpec
from ..errors import TunewrightError
from ..methods import get_method
from .cost import CostRow, cost_table, find_prices, load_prices
from .hardware import Hardware, detect_hardware, fastest_dtype
from .memory import (CPU_ALLOCATOR_FACTOR, CUDA_ALLOCATOR_FACTOR, MemoryEstimate, ModelShape, model_shape,
                     predict_peak, trainable_params)
from .speed import DataProfile, TimeEstimate, micro_batches, predict_time, profile_rows
from .speed import calibrate as calibrate_plan

BATCH_SIZES = (1, 2, 4, 8, 16, 32)
BUDGET_SHARE = 0.85  # of free RAM (or GPU memory): the rest is for the OS, page cache and estimate error
MIN_USEFUL_RATE = 0.5  # an explicit bf16/fp16 slower than this share of fp32 is refused as a mistake
GIB = 2**30
PLANNED_FIELDS = ("batch_size", "grad_accum", "gradient_checkpointing", "precision", "method")


@dataclass
class Recommendation:
    method: str
    precision: str
    batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    fits: bool
    reasons: list[str] = field(default_factory=list)


@dataclass
class Plan:
    hardware: Hardware
    model: dict
    data: dict
    budget: int
    recommendation: Recommendation
    memory: MemoryEstimate
    time: TimeEstimate
    explicit: list[str]
    calibration: dict = field(default_factory=dict)
    costs: list[CostRow] = field(default_factory=list)
    prices_file: str | None = None
    gpu_memory_needed: int = 0
    planner: "_Planner | None" = field(default=None, repr=False, compare=False)

    def summary(self) -> dict:
        """What a run records, so predicted and measured can be compared afterwards."""
        return {
            "predicted_peak_bytes": self.memory.total, "budget_bytes": self.budget,
            "predicted_seconds": self.time.seconds, "predicted_tokens_per_second": self.time.tokens_per_second,
            "steps": self.time.steps, "flops": self.time.flops, "device": self.hardware.device,
            "matmul_flops_per_second": dict(self.hardware.rates), "efficiency": self.time.efficiency,
            "allocator_factor": self.memory.allocator_factor, "memory": self.memory.to_dict(),
            "recommendation": asdict(self.recommendation), "recipe_set": self.explicit,
            "calibration": self.calibration,
        }

    def to_dict(self) -> dict:
        return {"hardware": self.hardware.to_dict(), "model": self.model, "data": self.data, **self.summary(),
                "time": self.time.to_dict(), "costs": [c.to_dict() for c in self.costs],
                "prices_file": self.prices_file, "gpu_memory_needed_bytes": self.gpu_memory_needed}


class _Planner:
    """Memory and time for any (batch size, checkpointing, precision, method) of one recipe and dataset."""

    def __init__(self, shape: ModelShape, profile: DataProfile, spec: TrainSpec, hardware: Hardware, folder: Path):
        self.shape, self.profile, self.spec, self.hardware = shape, profile, spec, hardware
        self.trainable, self.lora_r, self.lora_linears = trainable_params(folder, shape, spec)
        self.allocator_factor = CUDA_ALLOCATOR_FACTOR if hardware.device == "cuda" else CPU_ALLOCATOR_FACTOR
        self.efficiency: float | None = None

    def steps(self, batch: int, grad_accum: int, checkpointing: bool, profile: DataProfile | None = None,
              max_steps: int | None = None):
        spec = self.spec
        return micro_batches(profile or self.profile, batch_size=batch, epochs=spec.epochs, seed=spec.seed,
                             max_steps=max_steps or spec.max_steps, grad_accum=grad_accum,
                             share_prefix=spec.share_prefix and not checkpointing)

    def memory(self, steps, checkpointing: bool, precision: str, method: str, device: str | None = None):
        device = device or self.hardware.device
        return predict_peak(self.shape, [mb for step in steps for mb in step], trainable=self.trainable,
                            lora_r=self.lora_r, lora_linears=self.lora_linears, checkpointing=checkpointing,
                            # On a CPU the weights stay fp32 under autocast; activations are counted as fp32
                            # too, which over-estimates a bf16 run a little (the safe side).
                            dtype=precision if device == "cuda" else "fp32",
                            method=method, device=device,
                            allocator_factor=self.allocator_factor if device == self.hardware.device else None)

    def time(self, steps, checkpointing: bool, precision: str, scaled: bool = True) -> TimeEstimate:
        rate = self.hardware.rate(precision)  # the loop autocasts to the planned precision on CPU and GPU
        return predict_time(self.shape, steps, adapter_params=self.trainable, checkpointing=checkpointing, rate=rate,
                            device=self.hardware.device, efficiency=self.efficiency,
                            scale=self.profile.scale if scaled and self.spec.max_steps is None else 1.0)

    def recommend(self, budget: int) -> Recommendation:
        spec, hardware, explicit = self.spec, self.hardware, self.spec.model_fields_set
        reasons = []
        precision = spec.precision if spec.precision != "auto" else fastest_dtype(hardware)
        if spec.precision == "auto":
            rates = ", ".join(f"{d} {r / 1e9:.1f}" for d, r in hardware.rates.items())
            reasons.append(f"precision {precision}: fastest measured on {hardware.device} (GFLOP/s: {rates})")
        cap = spec.batch_size
        batches = [cap] if "batch_size" in explicit else sorted({cap, *(b for b in BATCH_SIZES if b < cap)}, reverse=True)
        checkpointing = [spec.gradient_checkpointing] if spec.gradient_checkpointing is not None else [False, True]
        methods = [spec.method]
        smaller = get_method(spec.method).smaller_alternative
        if "method" not in explicit and hardware.device == "cuda" and smaller:
            methods.append(smaller)  # only where even the smallest run of the asked method would not fit the GPU
        for method in methods:
            for batch in batches:
                for ckpt in checkpointing:
                    estimate = self.memory(self.steps(batch, spec.grad_accum, ckpt), ckpt, precision, method)
                    if estimate.total <= budget:
                        accum = spec.grad_accum if "grad_accum" in explicit else spec.grad_accum * math.ceil(cap / batch)
                        if batch < cap:
                            reasons.append(f"batch {batch} x {accum} accumulated: batch {cap} would not fit in "
                                           f"{budget / GIB:.1f} GiB")
                        if ckpt and spec.gradient_checkpointing is None:
                            reasons.append(f"gradient checkpointing: batch {batch} needs it to fit in {budget / GIB:.1f} GiB")
                        if method != spec.method:
                            reasons.append("qlora: the unquantised base does not fit in GPU memory")
                        return Recommendation(method, precision, batch, accum, bool(ckpt), True, reasons)
        return Recommendation(spec.method, precision, batches[-1], spec.grad_accum, bool(checkpointing[-1]), False,
                              reasons + [f"nothing tried fits in {budget / GIB:.1f} GiB"])


def plan_training(base, rows, spec: TrainSpec, *, hardware: Hardware | None = None, budget: int | None = None,
                  calibrate: bool = False) -> Plan:
    """Plan training ``spec`` on ``rows`` over base model ``base``."""
    from ..models import load_tokenizer

    hardware = hardware or detect_hardware(threads=spec.threads)
    shape = model_shape(base.folder)
    profile = profile_rows(load_tokenizer(base), rows, spec.max_length)
    if not profile.lengths:
        raise TunewrightError(f"every row is longer than max_length={spec.max_length} tokens", field="train.max_length")
    budget = budget or int(BUDGET_SHARE * hardware.memory_available)
    planner = _Planner(shape, profile, spec, hardware, base.folder)
    rec = planner.recommend(budget)
    calibration = {}
    if calibrate:
        calibration = calibrate_plan(planner, base, rows, rec)
        rec = planner.recommend(budget)
    steps = planner.steps(rec.batch_size, rec.grad_accum, rec.gradient_checkpointing)
    model = {**asdict(shape), "trainable_params": planner.trainable, "folder": str(base.folder), "ref": base.ref}
    data = {"rows": len(rows), "profiled_rows": len(profile.lengths), "dropped_too_long": profile.dropped,
            "tokens": profile.tokens, "max_tokens": max(profile.lengths),
            "mean_tokens": sum(profile.lengths) / len(profile.lengths),
            "labelled_tokens": round(sum(profile.labelled) * profile.scale), "shared_prefix": profile.prefix}
    return Plan(hardware=hardware, model=model, data=data, budget=budget, recommendation=rec,
                memory=planner.memory(steps, rec.gradient_checkpointing, rec.precision, rec.method),
                time=planner.time(steps, rec.gradient_checkpointing, rec.precision), calibration=calibration,
                explicit=sorted(spec.model_fields_set), planner=planner)


def check_precision(precision: str, hardware: Hardware) -> None:
    """Refuse an explicit bf16/fp16 that this hardware runs far slower than fp32 (or cannot run)."""
    if precision in ("auto", "fp32"):
        return
    if hardware.device == "cuda" and precision == "bf16" and not (hardware.gpus and hardware.gpus[0].bf16):
        name = hardware.gpus[0].name if hardware.gpus else "this GPU"
        raise TunewrightError(f"{name} has no bf16 support; use precision: fp16 or auto", field="train.precision")
    rate, fp32 = hardware.rate(precision), hardware.rate("fp32")
    if rate < MIN_USEFUL_RATE * fp32:
        raise TunewrightError(
            f"{precision} matmuls run at {rate / 1e9:.1f} GFLOP/s on this {hardware.device} against {fp32 / 1e9:.1f} "
            f"GFLOP/s in fp32 (measured, {rate / fp32:.3f}x): no fast {precision} instructions here "
            "(avx512_bf16/amx_bf16 on a CPU). Use precision: fp32 or auto", field="train.precision")


def resolve_train_spec(spec: TrainSpec, plan: Plan) -> TrainSpec:
    """The spec ``train`` runs: the recipe's explicit fields as written, the plan's choices for the rest."""
    explicit, rec = spec.model_fields_set, plan.recommendation
    check_precision(spec.precision, plan.hardware)
    if not rec.fits:
        raise TunewrightError(
            f"batch_size {rec.batch_size} does not fit: predicted peak {plan.memory.total / GIB:.2f} GiB "
            f"against {plan.budget / GIB:.2f} GiB available for training ({BUDGET_SHARE:.0%} of "
            f"{plan.hardware.memory_available / GIB:.2f} GiB free on {plan.hardware.device})"
            + ("" if "batch_size" not in explicit else "; lower train.batch_size or remove it to let the plan choose")
            + ("; set train.gradient_checkpointing: true or leave it unset" if spec.gradient_checkpointing is False else ""),
            field="train.batch_size")
    update: dict = {}
    if "batch_size" not in explicit:
        update["batch_size"] = rec.batch_size
        if "grad_accum" not in explicit:
            update["grad_accum"] = rec.grad_accum
    if spec.gradient_checkpointing is None:
        update["gradient_checkpointing"] = rec.gradient_checkpointing
    if spec.precision == "auto":
        update["precision"] = rec.precision
    if "method" not in explicit and rec.method != spec.method:
        update["method"] = rec.method
    return spec.model_copy(update=update)


def plan_run(workspace, *, dataset: str | None = None, calibrate: bool = False, prices: str | Path | None = None,
             overrides: dict | None = None, hardware: Hardware | None = None, budget: int | None = None) -> Plan:
    """Plan the workspace recipe's training on its dataset, with the cost table."""
    from ..data.api import load_split
    from ..models import prepare_base_model

    spec = workspace.recipe.train.model_copy(update=overrides or {})
    table_path = find_prices(prices, workspace.root)
    table = load_prices(table_path)  # a broken price file fails before minutes of calibration
    _, rows = load_split(workspace, dataset or spec.dataset, "train")
    base = prepare_base_model(workspace.recipe.base_model)
    plan = plan_training(base, rows, spec, hardware=hardware, budget=budget, calibrate=calibrate)
    rec = plan.recommendation
    gpu_steps = plan.planner.steps(rec.batch_size, rec.grad_accum, False)
    # What a rented GPU must hold: the same batches in bf16, no checkpointing.
    plan.gpu_memory_needed = plan.planner.memory(gpu_steps, False, "bf16", "lora", device="cuda").total
    local = (plan.hardware.gpus[0].name if plan.hardware.device == "cuda" and plan.hardware.gpus
             else plan.hardware.cpu_model)
    plan.costs = cost_table(table, local_seconds=plan.time.seconds, local_hardware=local, flops=plan.time.flops,
                            steps=plan.time.steps, gpu_memory_needed=plan.gpu_memory_needed)
    plan.prices_file = str(table_path)
    return plan


def planned_spec(base, rows, spec: TrainSpec) -> tuple[TrainSpec, dict]:
    """What ``train`` calls: the spec to train with, and the plan to record with the run."""
    plan = plan_training(base, rows, spec)
    return resolve_train_spec(spec, plan), plan.summary()


def spec_as_planned(spec: TrainSpec, run_config: dict) -> TrainSpec:
    """A resumed run keeps the values its plan chose when it started.

    Free memory differs from one start to the next; the checkpoint's fingerprint must not.
    """
    before, explicit = run_config.get("train") or {}, spec.model_fields_set
    return spec.model_copy(update={k: before[k] for k in PLANNED_FIELDS
                                   if k in before and (k not in explicit or getattr(spec, k) in (None, "auto"))})


def measured_against_plan(plan_record: dict | None) -> dict:
    """Peak memory this process (and its workers) reached, next to the prediction, for the run's metrics."""
    import resource
    import sys

    from .hardware import peak_rss_bytes

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    # Launcher workers: the largest one's peak (they start from the small launcher process).
    peak = max(peak_rss_bytes(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale)
    plan_record = plan_record or {}
    return {"peak_rss_bytes": peak, "predicted_peak_bytes": plan_record.get("predicted_peak_bytes"),
            "predicted_seconds": plan_record.get("predicted_seconds")}
