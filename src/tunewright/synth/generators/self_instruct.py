"""Self-Instruct: show the teacher a few examples, some seeds and some accepted machine rows, and ask
for new, different ones. Mixing in accepted rows keeps later rounds from circling the seeds forever."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ...data.schema import ChatRow
from .base import GenerationContext, Produced, register_synth_generator
from .common import (Collector, GeneratorSettings, fill, make_requests, question_of, row_id, topic_batches,
                     topic_line, user)

TEMPLATE = """You write training examples for a specialist assistant.
{header}

{examples}

Write {n} new question/answer pairs for this task. Each must be clearly different from the examples
and from each other: a new situation or need, not a rewording.{topic}

{guidance}

Reply with JSON only: a list of objects [{{"question": "...", "answer": {answer_shape}}}]."""


def render_examples(rows: list[ChatRow]) -> str:
    if not rows:
        return ""
    blocks = [f"Example {i}:\nQuestion: {question_of(row)}\nAnswer: {row.answer}" for i, row in enumerate(rows, 1)]
    return "Examples of good rows:\n\n" + "\n\n".join(blocks)


@register_synth_generator
class SelfInstruct:
    name: ClassVar[str] = "self-instruct"

    class Settings(GeneratorSettings):
        temperature: float = Field(0.9, ge=0, le=2)
        examples_per_prompt: int = Field(4, ge=0, le=20)
        machine_share: float = Field(0.5, ge=0, le=1, description="share of in-prompt examples from accepted rows")
        new_per_prompt: int = Field(4, ge=1, le=20)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _examples(self, ctx: GenerationContext) -> tuple[list[ChatRow], int]:
        """In-prompt examples and how many of them are machine rows."""
        k = self.settings.examples_per_prompt
        machine = min(round(k * self.settings.machine_share), len(ctx.accepted))
        seeds = min(k - machine, len(ctx.seeds))
        machine = min(k - seeds, len(ctx.accepted))  # too few seeds: fill up with machine rows
        chosen = ctx.rng.sample(ctx.seeds, seeds) + ctx.rng.sample(ctx.accepted, machine)
        ctx.rng.shuffle(chosen)
        return chosen, machine

    def generate(self, ctx: GenerationContext, count: int) -> Produced:
        s = self.settings
        out = Collector(ctx, self.name, s, TEMPLATE, count)
        batches = topic_batches(ctx, count, s.new_per_prompt)
        shown = [self._examples(ctx) for _ in batches]
        prompts = [fill(ctx, TEMPLATE, n=n, topic=topic_line(topic), examples=render_examples(rows))
                   for (topic, n), (rows, _) in zip(batches, shown)]
        requests = make_requests(ctx, [user(p) for p in prompts], temperature=s.temperature, max_tokens=s.max_tokens)
        for (topic, _), (rows, machine), request, items in zip(batches, shown, requests, out.ask(requests)):
            parents = [i for i in map(row_id, rows) if i is not None]
            for item in items or []:
                if (pair := out.pair(item)) is not None:
                    out.add([("user", pair[0]), ("assistant", pair[1])], parents=parents, topic=topic,
                            choices={"seed": request.seed, "machine_examples": machine})
        return out.produced
