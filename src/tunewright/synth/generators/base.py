"""What every teacher-driven generator shares: the round context, guidance from the last review,
provenance, and the registry. One class per generator, registered by name (``synth.generators[].kind``).

A generator is handed a teacher and a row count and returns rows plus the calls that failed; it may
call the teacher as many times as it needs (Magpie asks for a question, then for its answer).
Failures never raise: the round goes on with the rest and reports them.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from ...config.synth import SynthSpec
from ...data.schema import ChatRow
from ...plugins import PluginRegistry
from ..chunking import Chunk


@dataclass(frozen=True)
class Correction:
    """A reviewer's edit turned into a lesson: what the teacher wrote, and what it should have."""

    question: str
    wrong: str
    corrected: str


@dataclass
class Guidance:
    """What the last review taught: summarised reject reasons, corrections, and well-rated rows."""

    notes: list[str] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)
    exemplars: list[ChatRow] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.notes or self.corrections or self.exemplars)

    def render(self, max_corrections: int = 3, max_exemplars: int = 3) -> str:
        """The text block appended to generation prompts; empty when nothing was learned yet."""
        parts: list[str] = []
        if self.notes:
            parts.append("Reviewers rejected earlier rows for these reasons; avoid them:\n"
                         + "\n".join(f"- {note}" for note in self.notes))
        if self.corrections:
            lines = ["Reviewers corrected these answers; write like the corrected versions:"]
            for c in self.corrections[:max_corrections]:
                lines.append(f"Question: {c.question}\nWrong: {c.wrong}\nCorrected: {c.corrected}")
            parts.append("\n\n".join(lines))
        if self.exemplars:
            lines = ["Reviewers rated these examples highly:"]
            for row in self.exemplars[:max_exemplars]:
                question = next(m.content for m in row.messages if m.role == "user")
                lines.append(f"Question: {question}\nAnswer: {row.answer}")
            parts.append("\n\n".join(lines))
        return "\n\n".join(parts)


@dataclass
class GenerationContext:
    spec: SynthSpec
    teacher: Any  # a registered Teacher: complete / complete_many / model / usage
    round: int
    rng: random.Random
    guidance: Guidance = field(default_factory=Guidance)
    seeds: list[ChatRow] = field(default_factory=list)  # meta["id"] = "seed-<n>"
    accepted: list[ChatRow] = field(default_factory=list)  # accepted machine rows, meta["id"] = "cand-<id>"
    chunks: list[Chunk] = field(default_factory=list)  # document chunks for grounded generation
    system_prompt: str | None = None  # put first in every generated row when set


@dataclass(frozen=True)
class Failure:
    generator: str
    kind: str  # timeout, connection, http, malformed, empty, unparsable, rejected
    message: str


@dataclass
class Produced:
    rows: list[ChatRow] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def template_sha256(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def provenance(*, generator: str, teacher_model: str, template: str, params: dict[str, Any], round: int,
               source_chunk: Chunk | None = None, parents: list[str] | tuple[str, ...] = (),
               topic: str | None = None, persona: str | None = None, scenario: str | None = None) -> dict[str, Any]:
    """The provenance every generated row carries in ``meta`` (the registry keeps it per candidate)."""
    out: dict[str, Any] = {
        "generator": generator, "teacher_model": teacher_model, "template_sha256": template_sha256(template),
        "params": params, "round": round, "parents": list(parents),
    }
    if source_chunk is not None:
        out["source_chunk"] = {"source": source_chunk.source, "sha256": source_chunk.sha256,
                               "text": source_chunk.text}
    for key, value in (("topic", topic), ("persona", persona), ("scenario", scenario)):
        if value is not None:
            out[key] = value
    return out


class SynthGenerator(Protocol):
    name: ClassVar[str]
    Settings: ClassVar[type[BaseModel]]  # extra="forbid", so an unknown setting is an error before any call

    def __init__(self, settings: BaseModel) -> None: ...

    def generate(self, ctx: GenerationContext, count: int) -> Produced:
        """Up to ``count`` rows with provenance in meta["provenance"]; failed calls reported, not raised."""


SYNTH_GENERATORS: PluginRegistry[SynthGenerator] = PluginRegistry("synthetic-data generator", recipe_field="synth.generators",
                                                            group="synth_generators")
register_synth_generator = SYNTH_GENERATORS.register
