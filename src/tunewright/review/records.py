"""Frozen snapshots of review-queue items and decisions, handed out by the store and read by the
web UI, the agreement statistics and the import/export formats."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# pending: waiting for review; flagged: a filter would drop it (a reviewer can still accept it);
# accepted / rejected: decided after the recipe's minimum number of reviews.
CANDIDATE_STATUSES = ("pending", "flagged", "accepted", "rejected")
DECISIONS = ("accept", "reject")


@dataclass(frozen=True)
class CandidateRecord:
    id: int
    queue: str  # the dataset name the rows are destined for
    round: int
    messages: list[dict[str, str]]  # current content, after any accepted edit
    original: list[dict[str, str]]  # as the generator wrote it
    reference: str | None
    provenance: dict[str, Any]  # generator, teacher_model, template_sha256, params, source_chunk, parents, round
    flags: list[dict[str, str]]  # [{"filter": ..., "reason": ...}]
    judge_score: int | None
    topic: str | None
    generator: str
    status: str
    created_at: datetime

    @property
    def question(self) -> str:
        return next(m["content"] for m in self.messages if m["role"] == "user")

    @property
    def answer(self) -> str:
        return self.messages[-1]["content"]


@dataclass(frozen=True)
class ReviewRecord:
    id: int
    candidate_id: int
    reviewer: str
    decision: str  # accept | reject
    rating: int | None  # 1-5
    reasons: list[str]  # from the recipe's reject-reason taxonomy
    note: str  # free text
    before: list[dict[str, str]]  # messages the reviewer saw
    after: list[dict[str, str]] | None  # messages after the reviewer's edit; None when unedited
    seconds: float | None  # time the reviewer spent on the item
    created_at: datetime

    @property
    def edited(self) -> bool:
        return self.after is not None and self.after != self.before
