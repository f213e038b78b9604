"""Question/answer pairs answerable from one document chunk only, each row keeping its chunk as evidence."""

from __future__ import annotations

import math
import re
from typing import ClassVar

from pydantic import Field

from .base import GenerationContext, Produced, register_synth_generator
from .common import Collector, GeneratorSettings, fill, make_requests, user

TEMPLATE = """You write training examples for a specialist assistant.
{header}

Write {n} question/answer pairs that can be answered from the passage below and from nothing else.
Each answer states facts from the passage, in its words where possible, and adds no fact the passage
does not contain. Each question makes sense without the passage: name what it asks about, and never
say "the passage" or "the text".

Passage (from {source}):
{passage}

{guidance}

Reply with JSON only: a list of objects [{{"question": "...", "answer": {answer_shape}}}]."""

_STOPWORDS = frozenset("""a an and are as at be been but by can could did do does for from had has have how i if in
into is it its may might must no not of on or our shall should so than that the their them then there these they
this those to too was we were what when where which who whom why will with would yes you your""".split())


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOPWORDS and (len(w) > 2 or w.isdigit())}


def grounding(answer: str, evidence: str) -> float:
    """Share of the answer's content words found in the evidence; an answer with none is unverifiable."""
    words = content_words(answer)
    return len(words & content_words(evidence)) / len(words) if words else 0.0


@register_synth_generator
class GroundedChunks:
    name: ClassVar[str] = "grounded-chunks"

    class Settings(GeneratorSettings):
        pairs_per_chunk: int = Field(3, ge=1, le=20)
        min_grounding: float = Field(0.5, ge=0, le=1, description="share of answer content words found in the chunk")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def generate(self, ctx: GenerationContext, count: int) -> Produced:
        s = self.settings
        out = Collector(ctx, self.name, s, TEMPLATE, count)
        if not ctx.chunks:
            out.fail("empty", "no document chunks to ground questions in (synth.documents)")
            return out.produced
        order = list(ctx.chunks)
        ctx.rng.shuffle(order)
        calls = math.ceil(count / s.pairs_per_chunk)
        chunks = [order[i % len(order)] for i in range(calls)]
        sizes = [min(s.pairs_per_chunk, count - i * s.pairs_per_chunk) for i in range(calls)]
        prompts = [fill(ctx, TEMPLATE, n=n, source=c.source, passage=c.with_context()) for c, n in zip(chunks, sizes)]
        requests = make_requests(ctx, [user(p) for p in prompts], temperature=s.temperature, max_tokens=s.max_tokens)
        for chunk, request, items in zip(chunks, requests, out.ask(requests)):
            for item in items or []:
                if (pair := out.pair(item)) is None:
                    continue
                question, answer = pair
                score = grounding(answer, chunk.with_context())
                if score < s.min_grounding:
                    out.fail("rejected", f"answer not grounded in {chunk.source}#{chunk.index}: "
                                         f"{score:.0%} of its content words are in the chunk")
                    continue
                out.add([("user", question), ("assistant", answer)], source_chunk=chunk,
                        choices={"chunk": f"{chunk.source}#{chunk.index}", "seed": request.seed,
                                 "grounding": round(score, 3)})
        return out.produced
