"""Token-length statistics of a dataset, measured with the target model's own chat template, and
counts and measures of its image and audio parts (read from the version's manifest, not decoded again)."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..models.chat import render
from .media import MediaFile
from .schema import ChatRow, require_text

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
    require_text(row)
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
        chars=sum(len(text) for row in rows for m in row.messages for text in m.text_parts()),
        histogram=histogram(lengths),
    )


@dataclass(frozen=True)
class Spread:
    """min / median / max of some measure; ``median`` averages the two middle values of an even count."""

    min: float
    median: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread | None":
        return cls(min(values), statistics.median(values), max(values)) if values else None


@dataclass(frozen=True)
class MediaStats:
    """Parts counted per modality over every message (a text message is one text part). Sizes and
    durations are per part, so an image shown in three rows counts three times, as a model sees it;
    ``files`` counts the distinct stored files."""

    rows: int
    rows_with_media: int
    parts: dict[str, int]
    files: dict[str, int]
    image_width: Spread | None
    image_height: Spread | None
    audio_total_s: float
    audio_duration_s: Spread | None


def media_stats(rows: Sequence[ChatRow], media: Mapping[str, MediaFile]) -> MediaStats:
    """``media``: the version's files by reference (``data.media.media_in_version``)."""
    parts: Counter[str] = Counter()
    images, audio = [], []
    for row in rows:
        for message in row.messages:
            if isinstance(message.content, str):
                parts["text"] += 1
                continue
            for part in message.content:
                parts[part.modality] += 1
                if part.modality != "text":
                    (images if part.modality == "image" else audio).append(media[part.ref])
    durations = [m.duration_s for m in audio]
    return MediaStats(
        rows=len(rows),
        rows_with_media=sum(1 for row in rows if row.has_media),
        parts={k: parts[k] for k in ("text", "image", "audio")},
        files={k: len({m.sha256 for m in group}) for k, group in (("image", images), ("audio", audio))},
        image_width=Spread.of([m.width for m in images]),
        image_height=Spread.of([m.height for m in images]),
        audio_total_s=round(sum(durations), 6),
        audio_duration_s=Spread.of(durations),
    )


def render_media_stats(stats: MediaStats, console: Console, title: str = "Media") -> None:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("rows", f"{stats.rows:,}")
    table.add_row("rows with image or audio", f"{stats.rows_with_media:,}")
    for kind, n in stats.parts.items():
        n_files = stats.files.get(kind)
        files = f" ({n_files:,} file{'s' * (n_files != 1)})" if n_files is not None else ""
        table.add_row(f"{kind} parts", f"{n:,}{files}")
    for name, spread, unit in (("image width", stats.image_width, "px"), ("image height", stats.image_height, "px"),
                               ("audio duration", stats.audio_duration_s, "s")):
        if spread is not None:
            table.add_row(f"{name}: min / median / max",
                          f"{spread.min:,.4g} / {spread.median:,.4g} / {spread.max:,.4g} {unit}")
    if stats.audio_duration_s is not None:
        table.add_row("audio duration: total", f"{stats.audio_total_s:,.2f} s")
    console.print(table)


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
