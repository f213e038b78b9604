"""Token-length statistics of a dataset, measured with the target model's own chat template."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..models.chat import render
from .schema import ChatRow

N_BUCKETS = 10
BAR_WIDTH = 40


@dataclass(frozen=True)
class DatasetStats:
    """``turns`` counts user and assistant messages (system prompts excluded); ``chars`` counts
    characters of message content. Histogram buckets are inclusive ``(low, high, count)``."""

    rows: int
    turns: int
    total_tokens: int
    min_tokens: int
    mean_tokens: float
    p50_tokens: int
    p95_tokens: int
    max_tokens: int
    chars: int
    histogram: list[tuple[int, int, int]] = field(default_factory=list)


def token_length(row: ChatRow, tokenizer) -> int:
    messages = [m.model_dump() for m in row.messages]
    return len(tokenizer(render(tokenizer, messages, generation_prompt=False), add_special_tokens=False)["input_ids"])


def percentile(sorted_values: list[int], pct: float) -> int:
    """Nearest-rank percentile: always an observed length, never an interpolated one."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def histogram(values: list[int], n_buckets: int = N_BUCKETS) -> list[tuple[int, int, int]]:
    if not values:
        return []
    lo, hi = min(values), max(values)
    width = max(1, math.ceil((hi - lo + 1) / n_buckets))
    count = math.ceil((hi - lo + 1) / width)
    buckets = [0] * count
    for value in values:
        buckets[(value - lo) // width] += 1
    return [(lo + i * width, lo + (i + 1) * width - 1, n) for i, n in enumerate(buckets)]


def dataset_stats(rows: list[ChatRow], tokenizer) -> DatasetStats:
    lengths = sorted(token_length(row, tokenizer) for row in rows)
    total = sum(lengths)
    return DatasetStats(
        rows=len(rows),
        turns=sum(1 for row in rows for m in row.messages if m.role != "system"),
        total_tokens=total,
        min_tokens=lengths[0] if lengths else 0,
        mean_tokens=total / len(lengths) if lengths else 0.0,
        p50_tokens=percentile(lengths, 50),
        p95_tokens=percentile(lengths, 95),
        max_tokens=lengths[-1] if lengths else 0,
        chars=sum(len(m.content) for row in rows for m in row.messages),
        histogram=histogram(lengths),
    )


def render_stats(stats: DatasetStats, console: Console, title: str = "Dataset") -> None:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in (
        ("rows", f"{stats.rows:,}"),
        ("turns", f"{stats.turns:,}"),
        ("characters", f"{stats.chars:,}"),
        ("tokens (total)", f"{stats.total_tokens:,}"),
        ("tokens per row: min", f"{stats.min_tokens:,}"),
        ("tokens per row: mean", f"{stats.mean_tokens:,.1f}"),
        ("tokens per row: p50", f"{stats.p50_tokens:,}"),
        ("tokens per row: p95", f"{stats.p95_tokens:,}"),
        ("tokens per row: max", f"{stats.max_tokens:,}"),
    ):
        table.add_row(name, value)
    console.print(table)
    if not stats.histogram:
        return
    console.print(Text("tokens per row", style="bold"))
    peak = max(n for _, _, n in stats.histogram)
    label_width = len(str(stats.histogram[-1][1]))
    for low, high, n in stats.histogram:
        bar = "█" * (round(BAR_WIDTH * n / peak) if peak else 0)
        if n and not bar:
            bar = "▏"  # a non-empty bucket must never look empty
        console.print(Text(f"{low:>{label_width}}–{high:<{label_width}} {bar} {n}"))
