"""LLM-as-judge: a teacher scores each row against a rubric; rows under the threshold are flagged.

The score and the judge's rationale are kept on the row (meta["judge"]) for reviewers to see and
sort by. A row the judge could not score is flagged too, rather than slipping through unjudged.
"""

from __future__ import annotations

import json
import re
from typing import ClassVar

from ..teachers import TeacherError, TeacherRequest
from .base import Candidate, Flag, FilterContext, register_filter

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)

PROMPT = """You grade training examples for a fine-tuned assistant.
Rubric:
{rubric}

Question:
{question}

Answer:
{answer}

Reply with JSON only: {{"score": <integer 1-5>, "rationale": "<one sentence>"}}"""


def parse_verdict(text: str) -> tuple[int, str]:
    """The first JSON object in the reply, tolerating code fences and chatter around it."""
    match = _JSON_OBJECT.search(text)
    if not match:
        raise ValueError("no JSON object in the judge's reply")
    data = json.loads(match.group())
    score = int(data["score"])
    if not 1 <= score <= 5:
        raise ValueError(f"score {score} is outside 1-5")
    return score, str(data.get("rationale", ""))


@register_filter
class Judge:
    name: ClassVar[str] = "judge"

    def __init__(self, teacher, rubric: str, threshold: int = 4, max_tokens: int = 128) -> None:
        self.teacher, self.rubric, self.threshold, self.max_tokens = teacher, rubric, threshold, max_tokens

    def apply(self, candidates: list[Candidate], context: FilterContext) -> None:
        requests = [
            TeacherRequest.chat(
                [{"role": "user", "content": PROMPT.format(rubric=self.rubric, question=c.question(), answer=c.row.answer)}],
                temperature=0.0, max_tokens=self.max_tokens,
            )
            for c in candidates
        ]
        for candidate, result in zip(candidates, self.teacher.complete_many(requests)):
            if isinstance(result, TeacherError):
                candidate.flags.append(Flag(self.name, f"not scored: {result}", failed_call=result.kind))
                continue
            try:
                score, rationale = parse_verdict(result.text)
            except (ValueError, KeyError, TypeError) as exc:
                candidate.flags.append(Flag(self.name, f"not scored: unreadable verdict ({exc})"))
                continue
            candidate.row = candidate.row.model_copy(
                update={"meta": {**candidate.row.meta, "judge": {"score": score, "rationale": rationale}}}
            )
            if score < self.threshold:
                candidate.flags.append(Flag(self.name, f"score {score} < {self.threshold}: {rationale}"))
