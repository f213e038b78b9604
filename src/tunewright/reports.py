"""The layout of each JSON report Tunewright writes (evaluation, bias, drift, export check) and the one
way each is read back.

A report is a plain dict on disk and in memory, so the HTML templates, the charts and the registry's
JSON columns take it as they always did; the TypedDicts say which keys this version writes. Every
report carries ``format``, its layout's version. A report from before that field existed has the
version 1 layout, so a reader takes a missing ``format`` as 1; any other value is refused rather than
read by guesswork. The types sit in this low module because their readers span layers that may not
import each other (the registry and govern read the export check; govern reads the bias report).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Generic, NotRequired, TypedDict, TypeVar, cast

from .errors import TunewrightError

R = TypeVar("R")


class ReportLayout(Generic[R]):
    """One report kind's current layout version, and its reader."""

    def __init__(self, name: str, version: int, *, needs: tuple[str, ...] = ()) -> None:
        self.name = name  # how an error names it: "bias report"
        self.version = version  # bump when a key moves or changes meaning, and teach from_json the old one
        self.needs = needs  # keys no reader can do without

    def from_json(self, data: Any, *, file: str | Path | None = None) -> R:
        """``data`` as this layout, ``format`` filled in; ``file`` is what an error names."""
        if not isinstance(data, dict):
            raise TunewrightError(f"a {self.name} must be a JSON object, not {type(data).__name__}", file=file)
        version = data.get("format", 1)
        if type(version) is not int or version != self.version:
            raise TunewrightError(f"{self.name} format {version!r} is not one this version reads "
                                  f"(it reads format {self.version})", file=file, field="format")
        missing = next((key for key in self.needs if key not in data), None)
        if missing is not None:
            raise TunewrightError(f"the {self.name} has no '{missing}'", file=file, field=missing)
        return cast(R, {**data, "format": version})

    def read(self, path: str | Path) -> R:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TunewrightError(f"cannot read the {self.name}: {exc}", file=path) from None
        return self.from_json(data, file=path)


# -- evaluation: reports/<adapter>/report.json --------------------------------------------------------

class DatasetRef(TypedDict):
    name: str
    version: int


class ScoreSummary(TypedDict):
    metrics: dict[str, float]  # metric name -> share of examples
    seconds: float


class KindScores(TypedDict):
    n: int
    base: dict[str, float]  # metric name -> share of this kind's rows
    tuned: dict[str, float]


class EvalReport(TypedDict):
    format: int
    adapter: str
    base_model: str
    dataset: DatasetRef
    split: str
    n_examples: int
    created_at: str
    before: ScoreSummary  # the base model
    after: ScoreSummary  # the adapter
    training: dict[str, Any]  # the run's metrics, empty for an adapter trained elsewhere
    examples: list[dict[str, Any]]
    forgetting: NotRequired[dict[str, Any]]  # when the recipe asks for the forgetting check
    questions: NotRequired[dict[str, Any]]  # when a customer questions file is set
    by_kind: NotRequired[dict[str, KindScores]]  # when held-out rows carry meta.kind
    paths: NotRequired[dict[str, str]]  # in memory only, added after writing


EVAL_REPORT: ReportLayout[EvalReport] = ReportLayout("evaluation report", 1, needs=("before", "after"))


# -- bias: reports/<adapter>/bias/<stamp>/bias.json ---------------------------------------------------

class BiasReport(TypedDict):
    format: int
    adapter: str
    adapter_id: int | None
    base_model: str
    created_at: str
    data: dict[str, Any]  # the templates and attributes files used
    summary: dict[str, Any]  # what the registry records and the release gate reads (max_gap)
    settings: dict[str, Any]
    n_prompts: int
    n_units: int
    n_pairs: int
    attributes: dict[str, dict[str, Any]]  # attribute -> groups, and per-group stats for "base" and "tuned"
    gaps: list[dict[str, Any]]
    issues: dict[str, list[dict[str, Any]]]
    worst: list[dict[str, Any]]
    new_failures: list[dict[str, Any]]
    n_new_failures: int
    similarities: dict[str, list[float]]
    seconds: dict[str, float]
    answers: list[dict[str, Any]]
    paths: NotRequired[dict[str, str]]  # in memory only, like report_id
    report_id: NotRequired[int]


BIAS_REPORT: ReportLayout[BiasReport] = ReportLayout("bias report", 1, needs=("attributes",))


# -- drift: reports/drift/drift.json ------------------------------------------------------------------

class DriftReport(TypedDict):
    format: int
    kind: str  # "drift"
    created_at: str
    n_train: int
    n_live: int
    live_window: dict[str, str] | None
    thresholds: dict[str, Any]
    per_model: list[dict[str, Any]]
    status: str  # "ok", or "not_enough_data" with no verdict, lengths or topics
    verdict: dict[str, Any] | None  # {"drifted": bool, "reasons": [...]}
    message: str
    lengths: NotRequired[dict[str, Any]]
    topics: NotRequired[dict[str, Any]]
    dataset: NotRequired[DatasetRef]  # set by the workspace stage, not by build_drift_report
    since: NotRequired[str | None]


DRIFT_REPORT: ReportLayout[DriftReport] = ReportLayout("drift report", 1, needs=("status",))


# -- export parity check: <export>/check.json, and the registry's export record -----------------------

class FormatCheck(TypedDict):
    passed: bool
    texts_match: bool
    tokens_match: bool
    eos_agrees: bool
    prompt_tokens_match: bool
    max_logit_diff: float | None  # None when a probe's vocabulary size differed
    probes: list[dict[str, Any]]


class CheckReport(TypedDict):
    format: int
    passed: bool
    failures: list[str]
    reference: str
    gguf_dtype: str | None
    max_new_tokens: int
    thresholds: dict[str, dict[str, float]]
    probes: list[list[dict[str, Any]]]
    reference_outputs: list[dict[str, Any]]
    formats: dict[str, FormatCheck]  # "merged", "gguf"
    max_logit_diff: dict[str, float | None]
    seconds: float


CHECK_REPORT: ReportLayout[CheckReport] = ReportLayout("export check report", 1, needs=("passed",))
