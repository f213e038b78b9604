"""Apply one reviewer's correction to every similar pending row, previewed before anything changes.

A correction is the word-level replacement a reviewer made in an answer (difflib opcodes between
the answer before and after their edit). Similar rows are nearest neighbours by embedding among
the queue's undecided items; the correction applies to those whose answer contains the replaced
text. Applying edits the rows but leaves them pending: a person still decides each one.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from ..errors import TunewrightError
from ..registry import tables as t
from ..registry.events import CorrectionApplied, append_event
from .store import QueueFilter, ReviewStore

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


@dataclass(frozen=True)
class Replacement:
    old: str
    new: str


@dataclass(frozen=True)
class PreviewRow:
    candidate_id: int
    similarity: float
    before: str
    after: str


def derive_replacements(before: str, after: str) -> list[Replacement]:
    """The spans a reviewer changed, widened to whole tokens; pure insertions keep the token before
    them as an anchor so they can be found again in another answer."""
    a, b = _TOKEN.findall(before), _TOKEN.findall(after)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        if i1 == i2 and i1 > 0:  # insertion: anchor on the previous token
            i1, j1 = i1 - 1, j1 - 1
        old, new = "".join(a[i1:i2]), "".join(b[j1:j2])
        if old.strip():
            out.append(Replacement(old, new))
    return out


def apply_replacements(text: str, replacements: list[Replacement]) -> str | None:
    """``text`` with every replacement made, or None when any of them does not occur in it."""
    for rep in replacements:
        if rep.old not in text:
            return None
        text = text.replace(rep.old, rep.new)
    return text


def _correction_of(store: ReviewStore, candidate_id: int) -> list[Replacement]:
    edits = [r for r in store.reviews(candidate_id=candidate_id) if r.edited]
    if not edits:
        raise TunewrightError(f"review item {candidate_id} has no edit to apply elsewhere", field="candidate_id")
    latest = edits[-1]
    replacements = derive_replacements(latest.before[-1]["content"], latest.after[-1]["content"])
    if not replacements:
        raise TunewrightError(f"the edit on item {candidate_id} did not change its answer", field="candidate_id")
    return replacements


def preview_correction(store: ReviewStore, candidate_id: int, *, embedder, k: int = 20,
                       min_similarity: float = 0.6) -> list[PreviewRow]:
    source = store.get(candidate_id)
    replacements = _correction_of(store, candidate_id)
    pending = [c for status in ("pending", "flagged")
               for c in store.candidates(source.queue, QueueFilter(status=status)) if c.id != candidate_id]
    if not pending:
        return []
    vectors = embedder.encode([source.question + "\n" + source.answer] + [c.question + "\n" + c.answer for c in pending])
    scores = (vectors[1:] @ vectors[0]).tolist()
    ranked = sorted(zip(scores, pending), key=lambda pair: -pair[0])[:k]
    out = []
    for score, candidate in ranked:
        if score < min_similarity:
            break
        corrected = apply_replacements(candidate.answer, replacements)
        if corrected is not None and corrected != candidate.answer:
            out.append(PreviewRow(candidate.id, round(score, 4), candidate.answer, corrected))
    return out


def apply_correction(store: ReviewStore, candidate_id: int, preview: list[PreviewRow], *, reviewer: str) -> int:
    """Apply exactly the previewed rows, in one transaction, each with its own event."""
    def work(s) -> int:
        for row in preview:
            current = s.get(t.Candidate, row.candidate_id)
            if current is None or current.messages[-1]["content"] != row.before:
                raise TunewrightError(f"item {row.candidate_id} changed since the preview; preview again")
            messages = [dict(m) for m in current.messages]
            messages[-1]["content"] = row.after
            before_sha, after_sha = store.edit_pending(s, row.candidate_id, messages)
            append_event(s, CorrectionApplied(candidate_id=row.candidate_id, from_candidate_id=candidate_id,
                                              before_sha256=before_sha, after_sha256=after_sha), reviewer)
        return len(preview)
    return store.registry.write(work)
