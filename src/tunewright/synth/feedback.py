"""Turn the last review into the next round's guidance.

Rejections are grouped by their taxonomy reason, and free-text notes within a reason are clustered
by embedding similarity; each cluster becomes one line of guidance, worded by its most central
note and weighted by its size. Edits become (what was wrong, corrected answer) examples, and
well-rated accepted rows become exemplars. Deterministic, so a resumed round sees the same prompts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

from ..data.schema import ChatRow
from ..review.records import ReviewRecord
from ..review.store import QueueFilter, ReviewStore, latest_decisions
from .generators.base import Correction, Guidance


@dataclass(frozen=True)
class ReasonCluster:
    reason: str
    count: int
    example_note: str | None

    def render(self) -> str:
        rows = "row" if self.count == 1 else "rows"
        if self.example_note:
            return f"{self.reason} ({self.count} {rows}): {self.example_note}"
        return f"{self.reason} ({self.count} {rows})"


def _cluster_notes(notes: list[str], embedder, threshold: float) -> list[list[str]]:
    """Greedy single-pass clustering on cosine similarity: few notes per round, so simple wins."""
    if embedder is None or len(notes) < 2:
        groups: dict[str, list[str]] = defaultdict(list)
        for note in notes:
            groups[note.strip().lower()].append(note)
        return list(groups.values())
    vectors = embedder.encode(notes)
    clusters: list[list[int]] = []
    for i in range(len(notes)):
        for members in clusters:
            if float(vectors[i] @ vectors[members[0]]) >= threshold:
                members.append(i)
                break
        else:
            clusters.append([i])
    out = []
    for members in clusters:
        centre = vectors[members].mean(0)
        central = max(members, key=lambda i: float(vectors[i] @ centre))
        out.append([notes[central]] + [notes[i] for i in members if i != central])
    return out


def cluster_reject_reasons(reviews: Sequence[ReviewRecord], *, embedder=None,
                           threshold: float = 0.6) -> list[ReasonCluster]:
    """Biggest clusters first; a rejection with several reasons counts toward each."""
    by_reason: dict[str, list[str | None]] = defaultdict(list)
    for review in reviews:
        if review.decision != "reject":
            continue
        for reason in review.reasons or ["unspecified"]:
            by_reason[reason].append(review.note.strip() or None)
    clusters = []
    for reason, notes in by_reason.items():
        written = [n for n in notes if n]
        for group in _cluster_notes(written, embedder, threshold):
            clusters.append(ReasonCluster(reason, len(group), group[0]))
        silent = len(notes) - len(written)
        if silent:
            clusters.append(ReasonCluster(reason, silent, None))
    return sorted(clusters, key=lambda c: (-c.count, c.reason, c.example_note or ""))


def _answer(messages: list[dict[str, str]]) -> str:
    return messages[-1]["content"]


def _question(messages: list[dict[str, str]]) -> str:
    return next(m["content"] for m in messages if m["role"] == "user")


def build_guidance(store: ReviewStore, queue: str, *, embedder=None, max_notes: int = 5,
                   max_corrections: int = 5, max_exemplars: int = 5, min_rating: int = 4) -> Guidance:
    reviews = store.reviews(queue)
    by_item: dict[int, list[ReviewRecord]] = defaultdict(list)
    for review in reviews:
        by_item[review.candidate_id].append(review)
    current = [r for item in by_item.values() for r in latest_decisions(item).values()]

    notes = [c.render() for c in cluster_reject_reasons(current, embedder=embedder)[:max_notes]]
    corrections = [
        Correction(question=_question(r.before), wrong=_answer(r.before), corrected=_answer(r.after))
        for r in sorted(current, key=lambda r: -r.id) if r.edited and _answer(r.before) != _answer(r.after)
    ][:max_corrections]

    ratings: dict[int, list[int]] = defaultdict(list)
    for r in current:
        if r.rating is not None:
            ratings[r.candidate_id].append(r.rating)
    accepted = {c.id: c for c in store.candidates(queue, QueueFilter(status="accepted"))}
    best = sorted((sum(v) / len(v), cid) for cid, v in ratings.items() if cid in accepted and sum(v) / len(v) >= min_rating)
    exemplars = [ChatRow(messages=accepted[cid].messages, meta={"id": f"cand-{cid}"})
                 for _, cid in reversed(best)][:max_exemplars]
    return Guidance(notes=notes, corrections=corrections, exemplars=exemplars)


def guidance_to_json(guidance: Guidance) -> dict[str, Any]:
    return {
        "notes": list(guidance.notes),
        "corrections": [c.__dict__ for c in guidance.corrections],
        "exemplars": [row.to_json() for row in guidance.exemplars],
    }


def guidance_from_json(data: dict[str, Any]) -> Guidance:
    return Guidance(
        notes=list(data.get("notes", [])),
        corrections=[Correction(**c) for c in data.get("corrections", [])],
        exemplars=[ChatRow(**row) for row in data.get("exemplars", [])],
    )
