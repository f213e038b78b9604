"""Questions people really ask: a file of independently written customer questions with accepted
answers, put to the base and the tuned model beside the held-out rows.

The held-out split measures new *phrasings* of the facts the builder was given; these questions
come from elsewhere (a support inbox, a colleague told not to look at the recipe), so they also
measure stories around the question, lower-case typing, questions that need two facts, and facts
the model was never taught. They never enter training, and the file is refused when one of them
is found among the user messages of the training rows.

File format, one JSON object per line::

    {"question": "Quick one: Driftwood Hammock price?", "accept": ["59"], "kind": "price, terse"}

``question`` (non-empty), ``accept`` (non-empty list of non-empty strings: an answer is correct
when any of them occurs in it, by the rule of ``matching.py``), optional ``kind`` ("other" by
default; results are grouped by the text before its first comma, so "price, terse" counts under
"price"); other fields are kept.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import NotFoundError, TunewrightError
from ..io import sha256_file
from .matching import answer_matches, tokens

DEFAULT_KIND = "other"
RECIPE_FIELD = "eval.questions"


@dataclass(frozen=True)
class CustomerQuestion:
    line: int
    question: str
    accept: tuple[str, ...]
    kind: str = DEFAULT_KIND
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """The kind's head: "price, with a story" is counted under "price"."""
        return self.kind.split(",", 1)[0].strip() or DEFAULT_KIND


@dataclass(frozen=True)
class QuestionFile:
    path: Path
    sha256: str
    questions: tuple[CustomerQuestion, ...]

    @property
    def name(self) -> str:
        return self.path.name


# --- reading -----------------------------------------------------------------------------------

def _got(record: dict, key: str) -> str:
    return "missing" if key not in record else f"{type(record[key]).__name__} {record[key]!r}"[:60]


def _question(record: dict, path: Path, line: int) -> CustomerQuestion:
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise TunewrightError(f"must be a non-empty string (got {_got(record, 'question')})",
                              file=path, line=line, field="question")
    if not normalise_question(question):
        raise TunewrightError(f"has no words: {question!r}", file=path, line=line, field="question")
    accept = record.get("accept")
    if not isinstance(accept, list) or not accept:
        raise TunewrightError(f"must be a non-empty list of accepted answers (got {_got(record, 'accept')})",
                              file=path, line=line, field="accept")
    for phrase in accept:
        if not isinstance(phrase, str) or not phrase.strip():
            raise TunewrightError(f"every accepted answer must be a non-empty string (got {phrase!r})",
                                  file=path, line=line, field="accept")
        # A phrase with no word or number in it ("?") would be found in every answer.
        if not tokens(phrase):
            raise TunewrightError(f"accepted answer {phrase!r} has no word or number to match",
                                  file=path, line=line, field="accept")
    kind = record.get("kind", DEFAULT_KIND)
    if not isinstance(kind, str):
        raise TunewrightError(f"must be a string (got {_got(record, 'kind')})", file=path, line=line, field="kind")
    extra = {k: v for k, v in record.items() if k not in ("question", "accept", "kind")}
    return CustomerQuestion(line, question.strip(), tuple(accept), kind.strip() or DEFAULT_KIND, extra)


def load_questions(path: str | Path, *, field: str | None = None) -> QuestionFile:
    """Read and check every line; ``field`` names the recipe field the path came from, for a missing file."""
    from ..data.readers import read_jsonl

    path = Path(path)
    if path.is_dir():
        raise TunewrightError("is a folder, expected a JSONL file of questions", file=path, field=field)
    if not path.is_file():
        raise NotFoundError("questions file not found", file=path, field=field)
    questions = tuple(_question(record, path, line) for line, record in read_jsonl(path))
    if not questions:
        raise TunewrightError("file has no questions", file=path, field=field)
    return QuestionFile(path, sha256_file(path), questions)


def questions_for(workspace, override: str | Path | None = None) -> QuestionFile | None:
    """The file ``--questions`` names (as typed, else inside the workspace) or the recipe's; None when neither."""
    if override is not None:
        typed = Path(override)
        inside = workspace.path(typed)
        return load_questions(typed if typed.exists() or not inside.exists() else inside)
    relative = workspace.recipe.eval.questions
    return load_questions(workspace.path(relative), field=RECIPE_FIELD) if relative else None


# --- the leak check ----------------------------------------------------------------------------

def normalise_question(text: str) -> str:
    """Lower case, punctuation dropped, whitespace folded: "What's the price?" -> "whats the price"."""
    kept = "".join(c for c in text.casefold() if not unicodedata.category(c).startswith("P"))
    return " ".join(kept.split())


def leaks(questions: QuestionFile, train_rows: Sequence) -> list[tuple[int, str, CustomerQuestion]]:
    """(training row number from 1, its normalised user message, the question) for each user message
    that equals or contains (as whole words) a question, in the questions' file order."""
    texts = [(number, normalise_question(m.content)) for number, row in enumerate(train_rows, start=1)
             for m in row.messages if m.role == "user"]
    # One joined haystack keeps the common case (no leak) a single C-level search per question;
    # folded whitespace means no normalised message holds a newline, so no match spans two rows.
    haystack = "\n".join(f" {text} " for _, text in texts)
    found = []
    for q in questions.questions:
        needle = f" {normalise_question(q.question)} "
        if needle in haystack:
            found.extend((number, text, q) for number, text in texts if needle in f" {text} ")
    return found


def check_no_leak(questions: QuestionFile, train_rows: Sequence, *, dataset: str) -> None:
    """Refuse a question whose words equal, or are contained (as whole words) in, a training user message."""
    found = leaks(questions, train_rows)
    if found:
        number, text, q = found[0]
        how = "is" if text == normalise_question(q.question) else "is contained in"
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise TunewrightError(f"question {how} training row {number} of dataset '{dataset}' ({shown!r}); "
                              "questions used for evaluation must never be trained on",
                              file=questions.path, line=q.line, field="question")


# --- asking and scoring ------------------------------------------------------------------------

def conversations(questions: QuestionFile, system_prompt: str | None) -> list[list[dict[str, str]]]:
    """One user turn per question, behind the held-out rows' system prompt where they all share one."""
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [head + [{"role": "user", "content": q.question}] for q in questions.questions]


def shared_system_prompt(rows: Sequence) -> str | None:
    """The system message every evaluated row starts with, if they all start with the same one."""
    prompts = {row.messages[0].content if row.messages[0].role == "system" else None for row in rows}
    return prompts.pop() if len(prompts) == 1 else None


def _tally(questions: Sequence[CustomerQuestion], correct: Sequence[bool]) -> dict[str, Any]:
    by_kind: dict[str, dict[str, Any]] = {}
    for q, ok in zip(questions, correct, strict=True):
        entry = by_kind.setdefault(q.group, {"correct": 0, "n": 0})
        entry["correct"] += int(ok)
        entry["n"] += 1
    for entry in by_kind.values():
        entry["accuracy"] = entry["correct"] / entry["n"]
    total = sum(correct)
    return {"accuracy": total / len(correct), "correct": total, "n": len(correct), "by_kind": by_kind}


def score_questions(questions: QuestionFile, base_answers: Sequence[str], tuned_answers: Sequence[str], *,
                    system_prompt: str | None = None) -> dict[str, Any]:
    """The report.json section: both models' tallies and one row per question."""
    qs = questions.questions
    base_ok = [answer_matches(a, q.accept) for q, a in zip(qs, base_answers, strict=True)]
    tuned_ok = [answer_matches(a, q.accept) for q, a in zip(qs, tuned_answers, strict=True)]
    rows = [{"line": q.line, "question": q.question, "kind": q.kind, "group": q.group, "accept": list(q.accept),
             "base_answer": b, "tuned_answer": t, "base_ok": bo, "tuned_ok": to, "extra": q.extra}
            for q, b, t, bo, to in zip(qs, base_answers, tuned_answers, base_ok, tuned_ok)]
    return {"file": questions.name, "path": str(questions.path), "sha256": questions.sha256, "n": len(qs),
            "system_prompt": system_prompt, "base": _tally(qs, base_ok), "tuned": _tally(qs, tuned_ok), "rows": rows}


def summary(details: dict[str, Any], side: str) -> dict[str, Any]:
    """What one evaluation row stores (``side`` is "base" or "tuned"), read by the release gates."""
    return {**details[side], "file": details["file"], "sha256": details["sha256"]}


class QuestionAsker:
    """Generation for both models through the same path as the held-out rows (greedy, batched)."""

    def __init__(self, questions: QuestionFile, *, system_prompt: str | None, max_new_tokens: int, batch_size: int,
                 on_phase: Callable[[str, int], None] | None = None,
                 on_batch: Callable[[int], None] | None = None,
                 prepare: Callable[[list[dict]], list[dict]] | None = None) -> None:
        """``prepare``: what an open-book adapter does to a conversation before answering (its records)."""
        self.questions, self.system_prompt, self.prepare = questions, system_prompt, prepare
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self._on_phase, self._on_batch = on_phase, on_batch

    def ask(self, label: str, model, tokenizer) -> list[str]:
        from ..models.generation import generate_responses

        if self._on_phase:
            self._on_phase(f"customer questions ({label})", len(self.questions.questions))
        asked = conversations(self.questions, self.system_prompt)
        if self.prepare is not None:
            asked = [self.prepare(c) for c in asked]
        return generate_responses(model, tokenizer, asked,
                                  max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                                  on_batch=self._on_batch)
