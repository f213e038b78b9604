"""Pure helpers behind the pages: filter parsing, the word diff, and what one item shows a reviewer."""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import urlencode

from markupsafe import Markup, escape

from ...errors import TunewrightError
from ..records import DECISIONS, CandidateRecord, ReviewRecord
from ..store import QueueFilter

FILTER_FIELDS = ("status", "min_score", "max_score", "topic", "generator", "flag", "round")
_INT_FIELDS = ("min_score", "max_score", "round")
# Whitespace runs are tokens too, so joining the tokens gives the text back exactly.
_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")
MAX_NOTE = 5000


def parse_filter(params: Mapping[str, Any]) -> tuple[QueueFilter, dict[str, str]]:
    """The queue filter from GET/form fields, and the non-empty fields to carry on in links."""
    kept: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name in FILTER_FIELDS:
        raw = str(params.get(name) or "").strip()
        if not raw:
            continue
        kept[name] = raw
        if name in _INT_FIELDS:
            try:
                values[name] = int(raw)
            except ValueError:
                raise TunewrightError(f"'{raw}' is not a whole number", field=name) from None
        else:
            values[name] = raw
    return QueueFilter(**values), kept


def query(params: Mapping[str, Any], **extra: Any) -> str:
    """``?a=1&b=2`` for a link, or "" when there is nothing to carry."""
    merged = {k: v for k, v in {**params, **extra}.items() if v not in (None, "")}
    return "?" + urlencode(merged) if merged else ""


def word_diff(before: str, after: str) -> Markup:
    """Word-level diff as escaped HTML with <del>/<ins> around what changed."""
    a, b = _TOKEN.findall(before), _TOKEN.findall(after)
    out: list[Markup] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(escape("".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(Markup("<del>%s</del>") % "".join(a[i1:i2]))
        if j2 > j1:
            out.append(Markup("<ins>%s</ins>") % "".join(b[j1:j2]))
    return Markup("").join(out)


def turn_diffs(base: Sequence[dict[str, str]], contents: Sequence[str]) -> list[Markup | None]:
    """One diff per turn, None where the turn is unchanged."""
    return [None if text == turn["content"] else word_diff(turn["content"], text)
            for turn, text in zip(base, contents)]


def excerpt(item: CandidateRecord, limit: int = 140) -> str:
    question = next((m["content"] for m in item.messages if m["role"] == "user"), item.messages[0]["content"])
    question = " ".join(question.split())
    return question if len(question) <= limit else question[: limit - 1] + "…"


def judge_info(item: CandidateRecord) -> dict[str, Any]:
    """The judge's verdict wherever this row kept it: the score column, a ``judge`` entry in the
    provenance, and the judge filter's flags (whose reason carries the rationale)."""
    judge = item.provenance.get("judge")
    judge = judge if isinstance(judge, dict) else {}
    return {
        "score": item.judge_score if item.judge_score is not None else judge.get("score"),
        "rationale": judge.get("rationale"),
        "flags": [f.get("reason", "") for f in item.flags if f.get("filter") == "judge"],
    }


_SHOWN = ("generator", "teacher_model", "round", "topic", "persona", "scenario", "source_chunk", "judge")


def provenance_extra(item: CandidateRecord) -> dict[str, Any]:
    """Provenance fields the page does not already lay out on its own."""
    return {k: v for k, v in item.provenance.items() if k not in _SHOWN}


def source_chunk(item: CandidateRecord) -> dict[str, Any] | None:
    chunk = item.provenance.get("source_chunk")
    return chunk if isinstance(chunk, dict) and chunk.get("text") else None


@dataclass(frozen=True)
class ItemView:
    """One item as one reviewer may see it: never anyone else's decision or edit."""

    item: CandidateRecord
    base: list[dict[str, str]]  # what the reviewer judges, and what edits are diffed against
    draft: list[dict[str, str]]  # what the edit boxes start with: the reviewer's own earlier edit, if any
    mine: ReviewRecord | None  # the reviewer's own latest review of this item
    can_decide: bool
    why_not: str

    @property
    def diffs(self) -> list[Markup | None]:
        return turn_diffs(self.base, [t["content"] for t in self.draft])


def item_view(item: CandidateRecord, mine: ReviewRecord | None, in_todo: bool) -> ItemView:
    if mine is not None:
        # Revisiting: show what this reviewer saw and wrote, not content another reviewer's
        # accepted edit may have put on the item since.
        base = mine.before
        draft = mine.after if mine.after is not None else mine.before
        return ItemView(item, base, draft, mine, True, "")
    why = "" if in_todo else (f"this item is already {item.status}" if item.status in ("accepted", "rejected")
                              else "this item is assigned to other reviewers")
    return ItemView(item, item.messages, item.messages, None, in_todo, why)


def own_latest(reviews: Sequence[ReviewRecord]) -> dict[int, ReviewRecord]:
    """The reviewer's latest review per item (reviews come oldest first)."""
    latest: dict[int, ReviewRecord] = {}
    for review in reviews:
        latest[review.candidate_id] = review
    return latest


def history(reviews: Sequence[ReviewRecord]) -> list[int]:
    """Items the reviewer decided, in the order of their latest decision (oldest first)."""
    return [cid for cid, _ in sorted(own_latest(reviews).items(), key=lambda kv: kv[1].id)]


def parse_decision(data: Mapping[str, Any], base: Sequence[dict[str, str]],
                   reject_reasons: Sequence[str]) -> dict[str, Any]:
    """Keyword arguments for ``ReviewStore.review`` from a JSON body or a form, checked."""
    decision = str(data.get("decision") or "")
    if decision not in DECISIONS:
        raise TunewrightError(f"unknown decision '{decision}' (use accept or reject)", field="decision")
    rating = data.get("rating")
    if rating in (None, ""):
        rating = None
    else:
        try:
            rating = int(rating)
        except (TypeError, ValueError):
            raise TunewrightError(f"rating '{rating}' is not a whole number", field="rating") from None
    reasons = [str(r) for r in data.get("reasons") or []]
    unknown = [r for r in reasons if r not in reject_reasons]
    if unknown:
        raise TunewrightError(f"unknown reject reason '{unknown[0]}' (known: {', '.join(reject_reasons)})",
                              field="reasons")
    note = str(data.get("note") or "").strip()
    if len(note) > MAX_NOTE:
        raise TunewrightError(f"note is longer than {MAX_NOTE} characters", field="note")
    edited = None
    turns = data.get("turns")
    if turns is not None:
        if not isinstance(turns, list) or len(turns) != len(base):
            raise TunewrightError(f"the edit must keep the item's {len(base)} turns", field="messages")
        edited = []
        for turn, text in zip(base, turns):
            text = str(text)
            if "\r\n" not in turn["content"]:
                text = text.replace("\r\n", "\n")  # browsers post textarea line ends as CRLF
            edited.append({"role": turn["role"], "content": text})
        if edited == list(base):
            edited = None
    return {"decision": decision, "rating": rating, "reasons": reasons, "note": note, "edited": edited,
            "seconds": _seconds(data.get("seconds"))}


def _seconds(raw: Any) -> float | None:
    # Timing is a statistic, not an input the reviewer controls; a bad value is dropped, not an error.
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return round(min(value, 86400.0), 1) if math.isfinite(value) and value >= 0 else None
