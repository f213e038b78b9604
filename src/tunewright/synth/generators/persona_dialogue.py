"""Multi-turn conversations: a persona from the spec living through one of its scenarios."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from ...config.synth import Persona, Scenario
from .base import GenerationContext, Produced, register_synth_generator
from .common import Collector, GeneratorSettings, answer_text, fill, make_requests, topic_batches, topic_line, user

TEMPLATE = """You write training conversations for a specialist assistant.
{header}

Write one conversation between a user and the assistant.
User: {persona}
Scenario: {scenario}{topic}
It has exactly {turns} user turns, each followed by an assistant reply: {messages} messages that
alternate, starting with the user and ending with the assistant. The user speaks as this person would;
the assistant follows the task, tone, rules and constraints above.

{guidance}

Reply with JSON only: a list of objects
[{{"role": "user", "content": "..."}}, {{"role": "assistant", "content": {answer_shape}}}, ...]."""


def dialogue_turns(items: list[dict], user_turns: int) -> list[tuple[str, Any]]:
    """The reply's turns, or ValueError when they do not alternate user/assistant as asked."""
    turns = [(item.get("role"), item.get("content")) for item in items]
    expected = ["user", "assistant"] * user_turns
    roles = [role for role, _ in turns]
    if roles != expected:
        raise ValueError(f"expected {user_turns} user turns alternating with assistant replies, got roles {roles}")
    if any(role == "user" and not (isinstance(c, str) and c.strip()) for role, c in turns):
        raise ValueError("a user turn is empty")
    return turns


@register_synth_generator
class PersonaDialogue:
    name: ClassVar[str] = "persona-dialogue"

    class Settings(GeneratorSettings):
        temperature: float = Field(0.8, ge=0, le=2)
        max_tokens: int = Field(2048, ge=1)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @staticmethod
    def _casts(ctx: GenerationContext) -> list[tuple[Persona | None, Scenario]]:
        personas = {p.name: p for p in ctx.spec.personas}
        casts: list[tuple[Persona | None, Scenario]] = []
        for scenario in ctx.spec.scenarios:
            names = scenario.personas or list(personas)
            casts += [(personas[n], scenario) for n in names] if names else [(None, scenario)]
        return casts

    def generate(self, ctx: GenerationContext, count: int) -> Produced:
        s = self.settings
        out = Collector(ctx, self.name, s, TEMPLATE, count)
        casts = self._casts(ctx)
        if not casts:
            out.fail("empty", "no scenarios to write dialogues for (synth.scenarios)")
            return out.produced
        plan = [(ctx.rng.choice(casts), topic) for topic, _ in topic_batches(ctx, count, 1)]
        prompts = [fill(ctx, TEMPLATE, persona=f"{p.name}: {p.description}" if p else "any user of this assistant",
                        scenario=f"{sc.name}: {sc.description}", topic=topic_line(topic), turns=sc.turns,
                        messages=2 * sc.turns)
                   for (p, sc), topic in plan]
        requests = make_requests(ctx, [user(p) for p in prompts], temperature=s.temperature, max_tokens=s.max_tokens)
        for ((persona, scenario), topic), request, items in zip(plan, requests, out.ask(requests)):
            if items is None:
                continue
            try:
                turns = dialogue_turns(items, scenario.turns)
            except ValueError as exc:
                out.fail("unparsable", str(exc))
                continue
            try:
                turns = [(r, c.strip() if r == "user" else answer_text(ctx.spec, c)) for r, c in turns]
            except ValueError as exc:
                out.fail("rejected", str(exc))
                continue
            out.add(turns, topic=topic, persona=persona.name if persona else None, scenario=scenario.name,
                    choices={"seed": request.seed, "turns": scenario.turns})
        return out.produced
