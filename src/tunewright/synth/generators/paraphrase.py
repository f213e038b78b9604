"""Paraphrases of a parent's question that keep its answer: the model learns the fact, not one sentence."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from .base import GenerationContext, Produced, register_synth_generator
from .common import (Collector, GeneratorSettings, fill, make_requests, normalise, parent_pool, pick_parent,
                     question_of, row_id, row_topic, topic_batches, user)

TEMPLATE = """You write training examples for a specialist assistant.
{header}

Write {n} paraphrases of the question below. Each asks for exactly the same thing, so that the answer
stays correct, but in different words and sentence structure, as different users would ask it.

Question: {question}
Answer (for reference; it must remain a correct answer): {answer}

{guidance}

Reply with JSON only: a list of {n} strings."""


@register_synth_generator
class Paraphrase:
    name: ClassVar[str] = "paraphrase"

    class Settings(GeneratorSettings):
        temperature: float = Field(0.9, ge=0, le=2)
        max_tokens: int = Field(512, ge=1)
        paraphrases_per_row: int = Field(3, ge=1, le=20)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def generate(self, ctx: GenerationContext, count: int) -> Produced:
        s = self.settings
        out = Collector(ctx, self.name, s, TEMPLATE, count)
        # Only single-turn rows: a paraphrased first turn could break a conversation's later turns.
        pool = [r for r in parent_pool(ctx) if sum(m.role == "user" for m in r.messages) == 1]
        if not pool:
            out.fail("empty", "no single-turn seed examples or accepted rows to paraphrase")
            return out.produced
        plan = [(pick_parent(ctx, pool, topic), n) for topic, n in topic_batches(ctx, count, s.paraphrases_per_row)]
        prompts = [fill(ctx, TEMPLATE, n=n, question=question_of(parent), answer=parent.answer) for parent, n in plan]
        requests = make_requests(ctx, [user(p) for p in prompts], temperature=s.temperature, max_tokens=s.max_tokens)
        for (parent, _), request, items in zip(plan, requests, out.ask(requests, str)):
            seen = {normalise(question_of(parent))}
            for text in items or []:
                if normalise(text) in seen:
                    out.fail("rejected", "paraphrase is identical to the question or to another paraphrase")
                    continue
                seen.add(normalise(text))
                out.add([("user", text.strip()), ("assistant", parent.answer)], reference=parent.reference,
                        parents=[row_id(parent)] if row_id(parent) else [], topic=row_topic(parent),
                        choices={"seed": request.seed})
        return out.produced
