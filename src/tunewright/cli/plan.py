"""`tunewright plan`: the run as it would go on this machine, and what it would cost elsewhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .context import console, open_workspace

GIB = 2**30


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def plan(
    calibrate: bool = typer.Option(False, "--calibrate", help="Time a few real training steps here (10-20 s) to fit the predictions."),
    prices: Optional[Path] = typer.Option(None, "--prices", help="Price table (default: workspace prices.yaml, else the built-in one)."),
    dataset: Optional[str] = typer.Option(None, help="Dataset name or name@version (default: the recipe's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Measure this machine, then predict the recipe's peak memory, time and cost, and the settings train will use."""
    from ..plan import plan_run

    workspace = open_workspace()
    result = plan_run(workspace, dataset=dataset, calibrate=calibrate, prices=prices)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return
    hw, rec, mem, time = result.hardware, result.recommendation, result.memory, result.time

    table = Table(title="hardware", show_header=False)
    cores = f"{hw.physical_cores or '?'} physical / {hw.logical_cores} logical, {hw.threads} threads used"
    table.add_row("CPU", f"{hw.cpu_model} ({cores})")
    table.add_row("instruction sets", " ".join(hw.flags) or "unknown")
    table.add_row("RAM", f"{hw.ram_total / GIB:.1f} GiB, {hw.ram_available / GIB:.1f} GiB free")
    for gpu in hw.gpus:
        table.add_row(f"GPU {gpu.index}", f"{gpu.name}, {gpu.memory_bytes / GIB:.1f} GiB, compute {gpu.capability}, "
                                          f"bf16 {'yes' if gpu.bf16 else 'no'}")
    if not hw.gpus:
        table.add_row("GPU", "none (CUDA not available)")
    console.print(table)

    rates = Table(title=f"measured matmul throughput ({hw.device})")
    rates.add_column("precision")
    rates.add_column("GFLOP/s", justify="right")
    rates.add_column("vs fp32", justify="right")
    for dtype, rate in hw.rates.items():
        rates.add_row(dtype, f"{rate / 1e9:.1f}", f"{rate / hw.rates['fp32']:.3f}x")
    console.print(rates)

    table = Table(title="recommendation (what `tunewright train` will use)", show_header=False)
    set_by_recipe = set(result.explicit)
    for name, value in (("method", rec.method), ("precision", rec.precision), ("batch_size", rec.batch_size),
                        ("grad_accum", rec.grad_accum), ("gradient_checkpointing", rec.gradient_checkpointing)):
        table.add_row(f"train.{name}", str(value), "set by the recipe" if name in set_by_recipe else "planned")
    console.print(table)
    for reason in rec.reasons:
        console.print(f"  [dim]- {reason}[/dim]", highlight=False)
    if not rec.fits:
        console.print(f"[red]does not fit:[/red] predicted peak {mem.total / GIB:.2f} GiB against "
                      f"{result.budget / GIB:.2f} GiB available; train would refuse to start")

    data = result.data
    table = Table(title="prediction", show_header=False)
    table.add_row("data", f"{data['rows']} rows, {data['tokens']} tokens (longest {data['max_tokens']}), "
                          f"{data['labelled_tokens']} trained on, shared prefix {data['shared_prefix']}")
    table.add_row("peak memory", f"{mem.total / GIB:.2f} GiB of {result.budget / GIB:.2f} GiB available "
                  f"(weights {mem.weights / GIB:.2f}, adapter + optimizer {mem.trainable_states / GIB:.2f}, "
                  f"activations {mem.activations / GIB:.2f} + logits {mem.logits / GIB:.2f} x{mem.allocator_factor:.2f}, "
                  f"runtime {mem.runtime / GIB:.2f})")
    table.add_row("time", f"{_duration(time.seconds)} for {time.steps} steps ({time.tokens_per_second:.0f} tokens/s; "
                          f"{time.flops / 1e12:.1f} TFLOP at {time.efficiency:.0%} of {time.rate / 1e9:.1f} GFLOP/s)")
    if result.calibration:
        cal = result.calibration
        table.add_row("calibration", f"{cal['steps']} real steps: {cal['measured_seconds']:.1f} s measured vs "
                      f"{cal['predicted_seconds']:.1f} s predicted; peak {cal['measured_peak_bytes'] / GIB:.2f} GiB "
                      f"measured vs {cal['predicted_peak_bytes'] / GIB:.2f} GiB predicted")
    console.print(table)

    table = Table(title=f"cost ({result.prices_file}; list prices, check before relying on them)")
    for column in ("where", "hardware", "time", "per hour", "run cost", "note"):
        table.add_column(column, justify="right" if column in ("time", "per hour", "run cost") else "left")
    for row in result.costs:
        table.add_row(row.where, row.hardware, _duration(row.hours * 3600), f"{row.price_per_hour:.3f}",
                      f"{row.cost:.4f}", row.note, style=None if row.fits else "dim")
    console.print(table)
