"""Score one model's answers on a set of rows."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean
from typing import Any, Callable, Sequence

from ..data.schema import ChatRow
from ..models.generation import generate_responses
from .metrics import get_metric


@dataclass
class ModelScores:
    model_ref: str
    responses: list[str]
    per_example: list[dict[str, float]]
    metrics: dict[str, float]
    seconds: float


def score_responses(rows: Sequence[ChatRow], responses: Sequence[str], metric_names: Sequence[str]) -> tuple[list[dict], dict]:
    metrics = [get_metric(name) for name in metric_names]
    per_example = [
        {m.name: m.score(resp, row.answer if m.target == "answer" else row.expected) for m in metrics}
        for row, resp in zip(rows, responses)
    ]
    means = {m.name: fmean(e[m.name] for e in per_example) if per_example else 0.0 for m in metrics}
    return per_example, means


def score_model(
    model_ref: str,
    model,
    tokenizer,
    rows: Sequence[ChatRow],
    metric_names: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> ModelScores:
    import time

    started = time.perf_counter()
    responses = generate_responses(
        model, tokenizer, [r.prompt_messages for r in rows], max_new_tokens=max_new_tokens, batch_size=batch_size, on_batch=on_batch
    )
    per_example, means = score_responses(rows, responses, metric_names)
    return ModelScores(model_ref, responses, per_example, means, time.perf_counter() - started)


@dataclass
class Scored:
    """Both models' answers on the held-out rows, and what else the evaluation measured."""
    resolved: Any  # models.adapters.ResolvedRef
    dataset: Any  # the DatasetRecord the rows came from
    rows: list
    before: ModelScores
    after: ModelScores
    forgetting: dict | None = None
    asked: dict | None = None


def spread(rows: list, limit: int | None) -> list:
    """``limit`` rows spread evenly over the split: built splits are ordered by fact kind (every price,
    then every weight, ...), so the first rows alone would test one kind."""
    if not limit or limit >= len(rows):
        return rows
    return [rows[i * len(rows) // limit] for i in range(limit)]
