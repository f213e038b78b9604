"""Decontamination, length and personal-data checks."""

from __future__ import annotations

from typing import ClassVar

from ...data.schema import ChatRow
from .base import Candidate, Flag, FilterContext, register_filter, words
from ...data.pii import find_pii, redact

def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    tokens = words(text)
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


@register_filter
class Decontaminate:
    """Drop rows that share too many word n-grams with any eval or test text."""

    name: ClassVar[str] = "decontaminate"

    def __init__(self, n: int = 8, max_overlap: float = 0.5) -> None:
        self.n, self.max_overlap = n, max_overlap

    def apply(self, candidates: list[Candidate], context: FilterContext) -> None:
        protected: set[tuple[str, ...]] = set()
        for text in context.protected_texts:
            protected |= ngrams(text, self.n)
        if not protected:
            return
        for candidate in candidates:
            grams = ngrams(candidate.text(), self.n)
            if not grams:
                continue
            overlap = len(grams & protected) / len(grams)
            if overlap > self.max_overlap:
                candidate.flags.append(Flag(self.name, f"{overlap:.0%} of its {self.n}-grams appear in eval/test data"))


@register_filter
class Length:
    name: ClassVar[str] = "length"

    def __init__(self, min_answer_chars: int = 1, max_answer_chars: int = 4000, max_question_chars: int = 2000) -> None:
        self.min_answer, self.max_answer, self.max_question = min_answer_chars, max_answer_chars, max_question_chars

    def apply(self, candidates: list[Candidate], context: FilterContext) -> None:
        for candidate in candidates:
            answer, question = candidate.row.answer, candidate.question()
            if len(answer.strip()) < self.min_answer:
                candidate.flags.append(Flag(self.name, f"answer shorter than {self.min_answer} characters"))
            elif len(answer) > self.max_answer:
                candidate.flags.append(Flag(self.name, f"answer longer than {self.max_answer} characters"))
            elif len(question) > self.max_question:
                candidate.flags.append(Flag(self.name, f"question longer than {self.max_question} characters"))


@register_filter
class PersonalData:
    """Flag rows holding personal data, or redact it in place and keep the row (``mode='redact'``)."""

    name: ClassVar[str] = "pii"

    def __init__(self, mode: str = "flag", kinds: list[str] | None = None) -> None:
        if mode not in ("flag", "redact"):
            raise ValueError(f"pii mode must be 'flag' or 'redact', not {mode!r}")
        self.mode, self.kinds = mode, set(kinds) if kinds else None

    def apply(self, candidates: list[Candidate], context: FilterContext) -> None:
        for candidate in candidates:
            found = {m.kind for message in candidate.row.messages for m in find_pii(message.content, self.kinds)}
            if not found:
                continue
            if self.mode == "flag":
                candidate.flags.append(Flag(self.name, "contains " + ", ".join(sorted(found))))
                continue
            messages = [{"role": m.role, "content": redact(m.content, find_pii(m.content, self.kinds))}
                        for m in candidate.row.messages]
            meta = {**candidate.row.meta, "redacted": sorted(found)}
            candidate.row = ChatRow(messages=messages, reference=candidate.row.reference, meta=meta)
