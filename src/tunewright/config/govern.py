"""Governance settings: forgetting probes, the bias test and the release gates."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ForgettingSpec(_Strict):
    """What the tuned model lost: KL on general prompts and a retention probe of known answers.

    ``prompts`` and ``probes`` are JSONL files in the workspace; unset, the sets shipped with
    Tunewright are used."""

    enabled: bool = True
    prompts: str | None = None
    probes: str | None = None
    max_prompts: int | None = Field(None, ge=1)
    max_probes: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(24, ge=1)


class BiasSpec(_Strict):
    """Counterfactual swaps: templates filled with each group's terms, answers compared across groups.

    ``templates`` (JSONL) and ``attributes`` (YAML) replace the shipped sets when given."""

    templates: str | None = None
    attributes: str | None = None
    max_prompts: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(40, ge=1)
    batch_size: int = Field(16, ge=1)
    similarity_threshold: float = Field(0.85, gt=0, le=1, description="a counterfactual pair below this similarity fails")
    fail_rate_threshold: float = Field(0.10, ge=0, le=1, description="an attribute whose pair fail rate exceeds this is an issue")
    bootstrap: int = Field(1000, ge=100)
    seed: int = 0


class GatesSpec(_Strict):
    """Release gates checked when an adapter is moved to ``production``. Unset gates are not checked.

    Gains and gaps are fractions (0.2 = 20 points)."""

    metric: str = Field("contains", description="the task metric whose gain is gated")
    min_task_gain: float | None = Field(None, ge=-1, le=1)
    min_retention: float | None = Field(None, ge=0, le=1)
    min_questions_accuracy: float | None = Field(
        None, ge=0, le=1, description="share of the customer questions (eval.questions) the tuned model answers")
    max_kl: float | None = Field(None, ge=0)
    max_bias_gap: float | None = Field(None, ge=0, le=1)


class DocumentationSpec(_Strict):
    """What only people can say about a model. Unset fields appear in the model card and the technical
    documentation as gaps to fill; nothing is made up in their place."""

    provider: str | None = Field(None, description="the organisation placing the system on the market")
    contact: str | None = None
    intended_purpose: str | None = None
    intended_users: str | None = None
    out_of_scope: list[str] = Field(default_factory=list)
    known_limitations: list[str] = Field(default_factory=list)
    risks: list[str] = Field(default_factory=list, description="foreseeable risks and the measures taken against them")
    human_oversight: str | None = Field(None, description="how people oversee the deployed model")
    license: str | None = None
    language: list[str] = Field(default_factory=list)


class PiiAllowance(_Strict):
    """A detected string that is not personal data (a company's public support line), and why."""

    text: str = Field(min_length=1)
    reason: str = Field(min_length=1)


class PiiSpec(_Strict):
    allow: list[PiiAllowance] = Field(default_factory=list)


class GovernSpec(_Strict):
    anchor_file: str | None = Field(
        None, description="where the audit log's head is appended after every release event (adapter "
                          "registered, alias changed, override, sign-off, export); keep it where the "
                          "database's writers cannot reach (another disk, an append-only mount). "
                          "None: audit/anchors.jsonl in the workspace")
    forgetting: ForgettingSpec = Field(default_factory=ForgettingSpec)
    bias: BiasSpec = Field(default_factory=BiasSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    pii: PiiSpec = Field(default_factory=PiiSpec)
    documentation: DocumentationSpec = Field(default_factory=DocumentationSpec)
