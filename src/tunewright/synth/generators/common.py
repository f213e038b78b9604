"""What the teacher-driven generators share: the spec header every prompt starts with, topic
allocation, seeded requests, tolerant JSON reading of teacher replies, and row building."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field

from ...config.synth import SynthSpec, Topic
from ...data.schema import ChatRow
from ..teachers import Completion, TeacherError, TeacherRequest
from .base import Failure, GenerationContext, Produced, provenance

Body = tuple[tuple[str, str], ...] | str  # chat messages, or a raw text prompt


class GeneratorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(1024, ge=1)


def spec_header(spec: SynthSpec) -> str:
    """The spec in words: every prompt carries it so that each generator writes for the same brief."""
    lines = [f"Task: {spec.task}"]
    if spec.audience:
        lines.append(f"Audience: {spec.audience}")
    if spec.tone:
        lines.append(f"Tone: {spec.tone}")
    if spec.style_rules:
        lines.append("Style rules:\n" + "\n".join(f"- {rule}" for rule in spec.style_rules))
    c = spec.constraints
    rules = [f"Every answer is {c.min_answer_chars} to {c.max_answer_chars} characters long.",
             f"Write in this language: {c.language}."]
    if c.forbidden:
        rules.append("Never use these words or phrases: " + ", ".join(f'"{w}"' for w in c.forbidden) + ".")
    lines.append("Constraints:\n" + "\n".join(f"- {rule}" for rule in rules))
    if spec.output.kind == "json":
        lines.append("Answer format: every answer is a JSON value that validates against this JSON Schema:\n"
                     + json.dumps(spec.output.json_schema, ensure_ascii=False, indent=2))
    return "\n".join(lines)


def answer_shape(spec: SynthSpec) -> str:
    return "<a JSON value matching the schema>" if spec.output.kind == "json" else '"..."'


def topic_line(topic: str | None) -> str:
    return f"\nTopic: {topic}. Everything you write must be about this topic." if topic else ""


def fill(ctx: GenerationContext, template: str, **fields: Any) -> str:
    """Format a template with the spec header and the last review's guidance (the feedback loop)."""
    guidance = "" if ctx.guidance.is_empty() else ctx.guidance.render()
    text = template.format(header=spec_header(ctx.spec), guidance=guidance, answer_shape=answer_shape(ctx.spec),
                           **fields)
    return re.sub(r"\n{3,}", "\n\n", text).strip()  # empty optional blocks leave no holes


def topic_leaves(topics: list[Topic], prefix: str = "") -> list[tuple[str, int]]:
    """(path, target) per leaf; a topic's target beyond its subtopics' is a leaf of its own."""
    leaves: list[tuple[str, int]] = []
    for topic in topics:
        path = prefix + topic.name
        if topic.subtopics:
            leaves += topic_leaves(topic.subtopics, path + " > ")
            rest = topic.target - sum(s.target for s in topic.subtopics)
            if rest > 0:
                leaves.append((path, rest))
        else:
            leaves.append((path, topic.target))
    return leaves


def _largest_remainder(weights: list[int], count: int) -> list[int]:
    total = sum(weights)
    exact = [count * w / total for w in weights]
    shares = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[: count - sum(shares)]:
        shares[i] += 1
    return shares


def topic_batches(ctx: GenerationContext, count: int, per_request: int) -> list[tuple[str | None, int]]:
    """``count`` rows split over topic leaves in proportion to their targets, in requests of at most
    ``per_request`` rows that each ask about one topic; shuffled by ``ctx.rng``."""
    leaves = topic_leaves(ctx.spec.topics)
    if not leaves:
        plan: list[tuple[str | None, int]] = [(None, count)]
    else:
        weights = [t for _, t in leaves] if any(t for _, t in leaves) else [1] * len(leaves)
        plan = list(zip([name for name, _ in leaves], _largest_remainder(weights, count)))
    batches = [(topic, min(per_request, n - start)) for topic, n in plan for start in range(0, n, per_request)]
    ctx.rng.shuffle(batches)
    return batches


def row_topic(row: ChatRow) -> str | None:
    return row.meta.get("topic") or (row.meta.get("provenance") or {}).get("topic")


def topic_matches(have: str | None, want: str | None) -> bool:
    if want is None:
        return True
    return have is not None and (have == want or want.startswith(have + " > ") or have.startswith(want + " > "))


def parent_pool(ctx: GenerationContext) -> list[ChatRow]:
    return [*ctx.seeds, *ctx.accepted]


def pick_parent(ctx: GenerationContext, pool: list[ChatRow], topic: str | None) -> ChatRow:
    """A parent on the wanted topic when one exists, else any: topic targets steer rewrites too."""
    matching = [row for row in pool if topic_matches(row_topic(row), topic)]
    return ctx.rng.choice(matching or pool)


def question_of(row: ChatRow) -> str:
    return next(m.content for m in row.messages if m.role == "user")


def row_id(row: ChatRow) -> str | None:
    return row.meta.get("id")


def make_requests(ctx: GenerationContext, bodies: list[Body], *, temperature: float,
                  max_tokens: int) -> list[TeacherRequest]:
    """One seed per call of generate() so the local teacher can batch, bumped for repeated bodies:
    identical requests would share a cache entry and so collapse into one answer."""
    base = ctx.rng.randrange(2**31)
    seen: Counter[Body] = Counter()
    requests = []
    for body in bodies:
        seed = base + seen[body]
        seen[body] += 1
        params = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        requests.append(TeacherRequest.raw(body, **params) if isinstance(body, str)
                        else TeacherRequest(messages=body, **params))
    return requests


def user(prompt: str) -> tuple[tuple[str, str], ...]:
    return (("user", prompt),)


_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.DOTALL)
_WRAPPED_KEYS = {"question", "answer", "role", "content"}


def json_values(text: str) -> Iterator[Any]:
    """Every JSON list or object in a reply, in order: inside code fences first, then anywhere amid chatter."""
    decoder = json.JSONDecoder()
    for candidate in [*(m.group(1) for m in _FENCE.finditer(text)), text]:
        for start, char in enumerate(candidate):
            if char in "[{":
                try:
                    yield decoder.raw_decode(candidate, start)[0]
                except ValueError:
                    continue


def as_items(value: Any, kind: type) -> list:
    """A list of ``kind`` from a list, one bare item, or an object wrapping one list ({"pairs": [...]})."""
    if isinstance(value, dict) and not (kind is dict and value.keys() & _WRAPPED_KEYS):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            value = lists[0]
    if isinstance(value, kind):
        return [value]
    return [v for v in value if isinstance(v, kind)] if isinstance(value, list) else []


def answer_text(spec: SynthSpec, value: Any) -> str:
    """The answer as row text; for JSON output it must parse and validate against the schema."""
    if spec.output.kind != "json":
        if not isinstance(value, str) or not value.strip():
            raise ValueError("answer is missing or not text")
        return value.strip()
    from jsonschema import Draft202012Validator

    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            pass  # plain text: valid only where the schema allows a string
    errors = sorted(Draft202012Validator(spec.output.json_schema).iter_errors(value), key=str)
    if errors:
        raise ValueError(f"answer does not match the JSON schema: {errors[0].message}")
    return json.dumps(value, ensure_ascii=False)


def normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


class Collector:
    """Rows and failures of one generate() call, each row stamped with the same provenance frame."""

    def __init__(self, ctx: GenerationContext, name: str, settings: BaseModel, template: str, limit: int) -> None:
        self.ctx, self.name, self.template, self.limit = ctx, name, template, limit
        self.params = settings.model_dump(mode="json")
        self.produced = Produced()

    @property
    def full(self) -> bool:
        return len(self.produced.rows) >= self.limit

    def fail(self, kind: str, message: str) -> None:
        self.produced.failures.append(Failure(self.name, kind, message))

    def complete(self, requests: list[TeacherRequest]) -> list[Completion | None]:
        """The teacher's completions; None, with the failure recorded, where a call failed."""
        results = self.ctx.teacher.complete_many(requests) if requests else []
        for r in results:
            if isinstance(r, TeacherError):
                self.fail(r.kind, str(r))
        return [None if isinstance(r, TeacherError) else r for r in results]

    def pair(self, item: dict) -> tuple[str, str] | None:
        """(question, answer) from a reply's {"question", "answer"} object, or None with the failure noted."""
        question = item.get("question")
        if not isinstance(question, str) or not question.strip():
            self.fail("unparsable", "a pair has no question")
            return None
        try:
            return question.strip(), answer_text(self.ctx.spec, item.get("answer"))
        except ValueError as exc:
            self.fail("rejected", str(exc))
            return None

    def ask(self, requests: list[TeacherRequest], kind: type = dict) -> list[list | None]:
        """Per request, the items of its JSON reply; None where the call failed or the reply is unreadable."""
        out: list[list | None] = []
        for result in self.complete(requests):
            items = None
            if result is not None:
                # The first JSON value holding usable items: "[1] Here they are: [...]" still reads.
                items = next((found for value in json_values(result.text) if (found := as_items(value, kind))), None)
                if items is None:
                    self.fail("unparsable", "no usable JSON in the teacher's reply")
            out.append(items)
        return out

    def add(self, turns: list[tuple[str, str]], *, choices: dict[str, Any], reference: str | None = None,
            **origin: Any) -> None:
        if self.full:
            return
        system = [{"role": "system", "content": self.ctx.system_prompt}] if self.ctx.system_prompt else []
        meta = {"provenance": provenance(generator=self.name, teacher_model=self.ctx.teacher.model,
                                         template=self.template, params={**self.params, **choices},
                                         round=self.ctx.round, **origin)}
        try:
            row = ChatRow(messages=[*system, *({"role": r, "content": c} for r, c in turns)],
                          reference=reference, meta=meta)
        except ValueError as exc:  # pydantic's ValidationError: an empty turn slipped through
            self.fail("rejected", f"not a valid chat row: {exc}")
            return
        self.produced.rows.append(row)
