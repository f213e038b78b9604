"""Release gates: the recipe's thresholds, checked against registry records before an adapter serves
``production``.

Every alias move carries its evidence (the evaluation and bias report it relied on, and the gates'
verdict); a move past a failed gate needs a written reason, recorded as an override event in the
same transaction as the move. Rolling back is not gated: it returns to a state that was live before.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..config.govern import GatesSpec
from ..errors import TunewrightError
from ..evaluate import results
from ..evaluate.results import task_metrics
from ..registry.deploy import AliasState, DeploymentStore, check_alias, split_adapter_ref
from ..registry.reports import ReportStore
from ..registry.tables import AdapterRecord, EvaluationRecord
from .lineage import base_evaluation_for

GATED_ALIAS = "production"


@dataclass(frozen=True)
class GateCheck:
    name: str
    value: float | None
    threshold: float
    passed: bool
    detail: str

    def line(self) -> str:
        shown = "not measured" if self.value is None else f"{self.value:.4g}"
        return f"{self.name}: {shown} (needs {self.detail}) -> {'pass' if self.passed else 'FAIL'}"


@dataclass
class GateResult:
    adapter: AdapterRecord
    checks: list[GateCheck] = field(default_factory=list)
    evaluation_id: int | None = None
    base_evaluation_id: int | None = None
    bias_report_id: int | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def evidence(self) -> dict[str, Any]:
        return {"adapter_id": self.adapter.id, "evaluation_id": self.evaluation_id,
                "base_evaluation_id": self.base_evaluation_id, "bias_report_id": self.bias_report_id,
                "gates": {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}}


def _latest_evaluations(registry, adapter: AdapterRecord) -> tuple[EvaluationRecord | None, EvaluationRecord | None]:
    """The adapter's newest evaluation and the base row recorded with it (same results file)."""
    evaluations = registry.list_evaluations()
    tuned = [e for e in evaluations if e.adapter_id == adapter.id]
    if not tuned:
        return None, None
    return tuned[-1], base_evaluation_for(tuned[-1], evaluations)


def check_gates(registry, spec: GatesSpec, adapter: AdapterRecord) -> GateResult:
    result = GateResult(adapter=adapter)
    tuned, base = _latest_evaluations(registry, adapter)
    bias = ReportStore(registry).latest_report("bias", adapter_id=adapter.id)
    result.evaluation_id = tuned.id if tuned else None
    result.base_evaluation_id = base.id if base else None
    result.bias_report_id = bias.id if bias else None
    label = f"adapter '{adapter.name}' v{adapter.version}"
    needs_eval = any(v is not None for v in (spec.min_task_gain, spec.min_retention, spec.max_kl,
                                             spec.min_questions_accuracy))
    if needs_eval and tuned is None:
        raise TunewrightError(f"{label} has no evaluation for the release gates; run 'tunewright eval "
                              f"--adapter {adapter.name}' first")
    if spec.min_task_gain is not None:
        if base is None:
            raise TunewrightError(f"evaluation {tuned.id} of {label} has no base evaluation to measure the gain "
                                  "against; run 'tunewright eval' again")
        if spec.metric not in tuned.metrics or spec.metric not in base.metrics:
            raise TunewrightError(f"evaluation {tuned.id} has no metric '{spec.metric}' (it has: "
                                  f"{', '.join(task_metrics(tuned.metrics))})",
                                  field="govern.gates.metric")
        gain = float(tuned.metrics[spec.metric]) - float(base.metrics[spec.metric])
        result.checks.append(GateCheck(f"task gain ({spec.metric})", gain, spec.min_task_gain,
                                       gain >= spec.min_task_gain, f">= {spec.min_task_gain:+.4g}; "
                                       f"evaluation {tuned.id} vs base evaluation {base.id}"))
    forgetting = results.forgetting(tuned.metrics if tuned else None)
    if spec.min_retention is not None:
        value = forgetting.get("retention")
        result.checks.append(GateCheck("retention", value, spec.min_retention,
                                       value is not None and value >= spec.min_retention,
                                       f">= {spec.min_retention:.4g}; evaluation {tuned.id}"))
    if spec.max_kl is not None:
        value = forgetting.get("kl")
        result.checks.append(GateCheck("KL divergence on general prompts", value, spec.max_kl,
                                       value is not None and value <= spec.max_kl,
                                       f"<= {spec.max_kl:.4g}; evaluation {tuned.id}"))
    if spec.min_questions_accuracy is not None:
        value = results.questions(tuned.metrics).get("accuracy")
        where = f"evaluation {tuned.id}" + ("" if value is not None else " asked no customer questions: set "
                                            "eval.questions and run 'tunewright eval' again")
        result.checks.append(GateCheck("customer questions accuracy", value, spec.min_questions_accuracy,
                                       value is not None and value >= spec.min_questions_accuracy,
                                       f">= {spec.min_questions_accuracy:.4g}; {where}"))
    if spec.max_bias_gap is not None:
        value = (bias.summary or {}).get("max_gap") if bias else None
        where = f"bias report {bias.id}" if bias else "no bias report: run 'tunewright govern bias'"
        result.checks.append(GateCheck("largest bias gap", value, spec.max_bias_gap,
                                       value is not None and value <= spec.max_bias_gap,
                                       f"<= {spec.max_bias_gap:.4g}; {where}"))
    return result


class GatedDeployment:
    """Alias moves as a user (or the CLI) makes them: evidence attached, production gated."""

    def __init__(self, workspace) -> None:
        self.registry = workspace.registry
        self.spec = workspace.recipe.govern.gates
        self.store = DeploymentStore(self.registry)

    def _gate(self, alias: str, adapter: AdapterRecord, override: str | None) -> dict[str, Any]:
        result = check_gates(self.registry, self.spec, adapter)
        evidence = result.evidence()
        if alias != GATED_ALIAS or result.passed:
            return evidence
        failing = "; ".join(c.line() for c in result.failures())
        if not (override or "").strip():
            raise GateRefused(f"release gates refuse {adapter.name} v{adapter.version} for {alias}: {failing}. "
                              "Fix the adapter, or pass --override with a written reason")
        evidence["override"] = override.strip()
        return evidence

    def set_alias(self, alias: str, ref: str, *, reason: str | None = None, override: str | None = None,
                  actor: str | None = None) -> AliasState:
        check_alias(alias)
        name, version = split_adapter_ref(ref)
        adapter = self.registry.get_adapter(name, version)
        evidence = self._gate(alias, adapter, override)
        return self.store.set_alias(alias, name, version=adapter.version, actor=actor, reason=reason,
                                    evidence=evidence)

    def promote(self, source: str = "staging", target: str = "production", *, reason: str | None = None,
                override: str | None = None, actor: str | None = None) -> AliasState:
        state = self.store.get_alias(source)
        if state is None or state.adapter is None:
            return self.store.promote(source, target, actor=actor)  # the store's own clear error
        evidence = self._gate(target, state.adapter, override)
        return self.store.promote(source, target, actor=actor, reason=reason, evidence=evidence)

    def split(self, alias: str, ref: str, percent: int, *, reason: str | None = None, override: str | None = None,
              actor: str | None = None) -> AliasState:
        name, version = split_adapter_ref(ref)
        evidence = {}
        if percent:
            adapter = self.registry.get_adapter(name, version)
            evidence = self._gate(alias, adapter, override)
        return self.store.split(alias, name, percent, version=version, actor=actor, reason=reason, evidence=evidence)

    def rollback(self, alias: str, *, reason: str | None = None, actor: str | None = None) -> AliasState:
        return self.store.rollback(alias, actor=actor, reason=reason)


class GateRefused(TunewrightError):
    """A release gate failed and nobody gave a reason to go ahead anyway."""

    exit_code = 1
