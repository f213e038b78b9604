"""Evol-Instruct: rewrite a parent question deeper (constraints, depth, concreteness, reasoning steps)
or broader (a rarer question in the same domain), one named operation per row, and answer it.

Teachers often hand back the question barely touched, or echo the instruction's scaffolding into it
("#Rewritten Prompt#: ..."); both are rejected here, since neither teaches anything new.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field

from .base import GenerationContext, Produced, register_synth_generator
from .common import (Collector, GeneratorSettings, fill, make_requests, normalise, parent_pool, pick_parent,
                     question_of, row_id, row_topic, topic_batches, topic_line, user)

OPERATIONS: dict[str, tuple[str, str]] = {
    "add-constraints": ("depth", "Add one more constraint or requirement to the question."),
    "deepen": ("depth", "Make the question ask about the issue in more depth and breadth."),
    "concretise": ("depth", "Replace general concepts in the question with more specific ones."),
    "more-reasoning": ("depth", "Rewrite the question so that answering it explicitly needs several steps "
                                "of reasoning."),
    "breadth": ("breadth", "Write a brand-new question in the same domain as the given one, about a rarer, "
                           "more long-tail case."),
}
Operation = Literal["add-constraints", "deepen", "concretise", "more-reasoning", "breadth"]

TEMPLATE = """You write training examples for a specialist assistant.
{header}

Rewrite the #Given Prompt# into a new question, following this instruction:
{operation}
The new question must be reasonable, self-contained and answerable. Do not refer to the given prompt,
and do not write "#Given Prompt#", "#Rewritten Prompt#", "given prompt" or "rewritten prompt".{topic}

#Given Prompt#:
{question}

{guidance}

Then answer the new question. Reply with JSON only: {{"question": "...", "answer": {answer_shape}}}"""

_LEAKS = ("#given prompt#", "#rewritten prompt#", "given prompt", "rewritten prompt")
_LABEL = re.compile(r"\bRewritten\b")  # capitalised: a label ("Rewritten question:"), not the ordinary word


def word_overlap(a: str, b: str) -> float:
    wa, wb = set(normalise(a).split()), set(normalise(b).split())
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


def rejection(original: str, rewritten: str, operation_text: str, max_overlap: float) -> str | None:
    lowered = rewritten.lower()
    leaked = [p for p in _LEAKS if p in lowered] + _LABEL.findall(rewritten)
    if leaked or normalise(operation_text) in normalise(rewritten):
        return f"rewrite leaks the instruction ({leaked[0] if leaked else 'the operation text'})"
    if normalise(original) == normalise(rewritten):
        return "rewrite is the same question"
    overlap = word_overlap(original, rewritten)
    if overlap > max_overlap:
        return f"rewrite barely changed the question ({overlap:.0%} of words shared)"
    return None


@register_synth_generator
class EvolInstruct:
    name: ClassVar[str] = "evol-instruct"

    class Settings(GeneratorSettings):
        operations: list[Operation] = Field(default_factory=lambda: list(OPERATIONS), min_length=1)
        max_overlap: float = Field(0.9, ge=0, le=1,
                                   description="word overlap (Jaccard) above which a rewrite counts as unchanged")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def generate(self, ctx: GenerationContext, count: int) -> Produced:
        s = self.settings
        out = Collector(ctx, self.name, s, TEMPLATE, count)
        pool = parent_pool(ctx)
        if not pool:
            out.fail("empty", "no seed examples or accepted rows to evolve")
            return out.produced
        plan = []
        for topic, _ in topic_batches(ctx, count, 1):
            parent = pick_parent(ctx, pool, topic)
            operation = ctx.rng.choice(s.operations)
            # A deepened question stays on its parent's topic; only a breadth rewrite is told one.
            breadth = OPERATIONS[operation][0] == "breadth"
            plan.append((parent, operation, topic if breadth and topic else row_topic(parent)))
        prompts = [fill(ctx, TEMPLATE, operation=OPERATIONS[op][1], question=question_of(parent),
                        topic=topic_line(topic) if OPERATIONS[op][0] == "breadth" else "")
                   for parent, op, topic in plan]
        requests = make_requests(ctx, [user(p) for p in prompts], temperature=s.temperature, max_tokens=s.max_tokens)
        for (parent, op, topic), request, items in zip(plan, requests, out.ask(requests)):
            for item in (items or [])[:1]:
                if (pair := out.pair(item)) is None:
                    continue
                direction, text = OPERATIONS[op]
                if (reason := rejection(question_of(parent), pair[0], text, s.max_overlap)) is not None:
                    out.fail("rejected", reason)
                    continue
                parents = [row_id(parent)] if row_id(parent) else []
                out.add([("user", pair[0]), ("assistant", pair[1])], parents=parents, topic=topic,
                        choices={"operation": op, "direction": direction, "seed": request.seed})
        return out.produced
