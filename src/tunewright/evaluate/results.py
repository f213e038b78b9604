"""The layout of what ``tunewright eval`` stores with an evaluation in the registry, written down
once: the task metrics flat (``contains``, ``exact_match``, ...), the forgetting measurement and the
customer questions nested. Everything that reads them back (release gates, documents, the strategy
table) goes through these accessors instead of spelling key paths of its own.
"""

from __future__ import annotations

from typing import Any, Mapping, TypedDict


class ForgettingMetrics(TypedDict, total=False):
    kl: float  # mean nats/token over the general prompts
    retention: float  # share of base-correct probes the tuned model still answers
    n_general_prompts: int
    n_retention_probes: int
    n_base_correct: int
    n_tuned_kept: int


class KindTally(TypedDict):
    correct: int
    n: int


class QuestionsMetrics(TypedDict, total=False):
    accuracy: float
    correct: int
    n: int
    by_kind: dict[str, KindTally]


def forgetting(metrics: Mapping[str, Any] | None) -> ForgettingMetrics:
    """An evaluation's forgetting measurement; empty when it has none."""
    value = (metrics or {}).get("forgetting")
    return value if isinstance(value, dict) else ForgettingMetrics()


def questions(metrics: Mapping[str, Any] | None) -> QuestionsMetrics:
    """An evaluation's customer-question tally; empty when none were asked."""
    value = (metrics or {}).get("questions")
    return value if isinstance(value, dict) else QuestionsMetrics()


def task_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """The flat task metrics (the nested measurements left out)."""
    return {k: v for k, v in (metrics or {}).items() if not isinstance(v, dict)}
