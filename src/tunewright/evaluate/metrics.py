"""Answer metrics behind a registry: adding one is one class and one registration."""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import ClassVar, Protocol

from ..plugins import PluginRegistry

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise_answer(text: str) -> str:
    """SQuAD-style normalisation, except punctuation becomes a space so '2.1 kg' keeps two numbers."""
    text = _PUNCT.sub(" ", text.lower())
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


class Metric(Protocol):
    name: ClassVar[str]
    label: ClassVar[str]
    # "answer": compare with the gold assistant reply; "reference": with the short fact it must state.
    target: ClassVar[str]

    def score(self, prediction: str, reference: str) -> float: ...


METRICS: PluginRegistry[Metric] = PluginRegistry("metric", recipe_field="eval.metrics", group="metrics")
register_metric = METRICS.register
get_metric = METRICS.get
available_metrics = METRICS.names


@register_metric
class ExactMatch:
    name = "exact_match"
    label = "exact match"
    target = "answer"

    def score(self, prediction: str, reference: str) -> float:
        return float(normalise_answer(prediction) == normalise_answer(reference))


@register_metric
class Contains:
    """The reference's words appear, in order and contiguous, in the answer: 'has the right fact'."""

    name = "contains"
    label = "answer contained"
    target = "reference"

    def score(self, prediction: str, reference: str) -> float:
        pred, ref = normalise_answer(prediction).split(), normalise_answer(reference).split()
        if not ref:
            return 0.0
        return float(any(pred[i : i + len(ref)] == ref for i in range(len(pred) - len(ref) + 1)))


@register_metric
class TokenF1:
    name = "token_f1"
    label = "token F1"
    target = "answer"

    def score(self, prediction: str, reference: str) -> float:
        pred, ref = normalise_answer(prediction).split(), normalise_answer(reference).split()
        if not pred or not ref:
            return float(pred == ref)
        common = sum((Counter(pred) & Counter(ref)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(pred), common / len(ref)
        return 2 * precision * recall / (precision + recall)
