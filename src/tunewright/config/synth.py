"""The data spec: what synthetic data to make, for whom, in what voice, and how much of each kind.

Typed and validated when the recipe loads, so an unknown field or a target that cannot be met is
an error naming the field before a single teacher call is paid for.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Topic(_Strict):
    name: str = Field(min_length=1)
    target: int = Field(ge=0, description="rows wanted for this topic")
    subtopics: list["Topic"] = Field(default_factory=list)

    @model_validator(mode="after")
    def _subtopics_fit(self) -> "Topic":
        wanted = sum(s.target for s in self.subtopics)
        if wanted > self.target:
            raise ValueError(f"subtopics of '{self.name}' want {wanted} rows but the topic's target is {self.target}")
        return self


class Persona(_Strict):
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)


class Scenario(_Strict):
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    personas: list[str] = Field(default_factory=list, description="persona names; empty means any")
    turns: int = Field(2, ge=1, le=20, description="user turns in a dialogue")


class Constraints(_Strict):
    min_answer_chars: int = Field(1, ge=1)
    max_answer_chars: int = Field(2000, ge=1)
    language: str = "en"
    forbidden: list[str] = Field(default_factory=list, description="words or phrases no row may contain")

    @model_validator(mode="after")
    def _range(self) -> "Constraints":
        if self.min_answer_chars > self.max_answer_chars:
            raise ValueError("min_answer_chars is larger than max_answer_chars")
        return self


class OutputShape(_Strict):
    kind: Literal["answer", "dialogue", "json"] = "answer"
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_for_json(self) -> "OutputShape":
        if self.kind == "json" and not self.json_schema:
            raise ValueError("output kind 'json' needs a json_schema")
        if self.json_schema:
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import SchemaError

            try:
                Draft202012Validator.check_schema(self.json_schema)
            except SchemaError as exc:
                raise ValueError(f"json_schema is not a valid JSON Schema: {exc.message}") from None
        return self


class SeedExample(_Strict):
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    topic: str | None = None


class TeacherSpec(_Strict):
    kind: str = "local-transformers"
    settings: dict[str, Any] = Field(default_factory=dict, description="the teacher's own typed settings")


class GeneratorSpec(_Strict):
    kind: str = Field(min_length=1, description="a registered generator: self-instruct, evol-instruct, ...")
    share: float = Field(1.0, gt=0, description="relative share of each round's rows")
    settings: dict[str, Any] = Field(default_factory=dict, description="the generator's own typed settings")


class FilterSpec(_Strict):
    kind: str = Field(min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)


class ReviewSpec(_Strict):
    min_reviews: int = Field(1, ge=1, description="reviews an item needs before it is decided")
    reviewers_per_item: int = Field(1, ge=1, description="reviewers each item is assigned to, blind")
    auto_accept_score: int | None = Field(None, ge=1, le=5,
                                          description="judge score at or above which unflagged rows enter a dataset unreviewed")
    guidelines: str = ""
    reject_reasons: list[str] = Field(
        default_factory=lambda: ["wrong", "not grounded", "off topic", "style", "unsafe", "duplicate", "other"]
    )

    @model_validator(mode="after")
    def _reachable(self) -> "ReviewSpec":
        if self.min_reviews > self.reviewers_per_item:
            raise ValueError(f"min_reviews ({self.min_reviews}) is more than reviewers_per_item "
                             f"({self.reviewers_per_item}): no item could ever be decided")
        return self


class SynthSpec(_Strict):
    task: str = Field(min_length=1, description="what the specialist model must do")
    audience: str = ""
    tone: str = ""
    style_rules: list[str] = Field(default_factory=list)
    system_prompt: str | None = Field(None, description="put first in every generated row when set")
    target: int = Field(ge=1, description="rows wanted in all")
    topics: list[Topic] = Field(default_factory=list)
    personas: list[Persona] = Field(default_factory=list)
    scenarios: list[Scenario] = Field(default_factory=list)
    constraints: Constraints = Field(default_factory=Constraints)
    output: OutputShape = Field(default_factory=OutputShape)
    seeds: list[SeedExample] = Field(default_factory=list)
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    generators: list[GeneratorSpec] = Field(default_factory=lambda: [GeneratorSpec(kind="self-instruct")])
    documents: list[str] = Field(default_factory=list, description="Markdown, text or PDF files grounded generators read")
    rows_per_round: int = Field(50, ge=1)
    filters: list[str | FilterSpec] = Field(
        default_factory=lambda: ["exact-duplicates", "near-duplicates", "novelty", "decontaminate", "length", "format",
                                 "pii"]
    )
    review: ReviewSpec = Field(default_factory=ReviewSpec)

    @model_validator(mode="after")
    def _consistent(self) -> "SynthSpec":
        wanted = sum(t.target for t in self.topics)
        if wanted > self.target:
            raise ValueError(f"topics want {wanted} rows but target is {self.target}")
        personas = {p.name for p in self.personas}
        for scenario in self.scenarios:
            unknown = [p for p in scenario.personas if p not in personas]
            if unknown:
                raise ValueError(f"scenario '{scenario.name}' names unknown personas: {', '.join(unknown)}")
        if not self.generators:
            raise ValueError("generators: name at least one generator")
        if self.output.kind == "dialogue" and not self.scenarios:
            raise ValueError("output kind 'dialogue' needs at least one scenario")
        topics = {t.name for t in self.topics}
        for seed in self.seeds:
            if seed.topic is not None and seed.topic not in topics:
                raise ValueError(f"seed example names unknown topic '{seed.topic}'")
        return self

    def filter_specs(self) -> list[FilterSpec]:
        return [FilterSpec(kind=f) if isinstance(f, str) else f for f in self.filters]
