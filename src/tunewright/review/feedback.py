"""Feedback from the served API: a rating, and for a thumbs-down a correction that joins the review
queue in the same transaction, so a correction is never recorded without reaching reviewers.

Here in ``review`` and not in ``registry`` because it writes review candidates; the registry below
only stores the rows and reads them back (``DeploymentStore.feedback``).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import TunewrightError
from ..registry import tables as t
from ..registry.deploy import RATINGS
from ..registry.events import FeedbackRecorded, append_event
from .store import NewCandidate, ReviewStore, messages_sha256


def add_feedback(registry, *, request_id: str, model: str, rating: str, correction: str | None = None,
                 comment: str | None = None, candidate: NewCandidate | None = None, queue: str = "feedback",
                 actor: str | None = None) -> tuple[int, int | None]:
    """Store the feedback and its review candidate, if any; (feedback id, candidate id or None)."""
    if rating not in RATINGS:
        raise TunewrightError(f"rating must be one of {', '.join(RATINGS)}, got '{rating}'", field="rating")

    def work(s: Session) -> tuple[int, int | None]:
        candidate_id = None
        if candidate is not None:
            ReviewStore.add_in_session(s, queue, None, [candidate])
            sha = messages_sha256([m.model_dump() for m in candidate.row.messages])
            candidate_id = s.scalar(select(t.Candidate.id).where(
                t.Candidate.queue == queue, t.Candidate.content_sha256 == sha))
        row = t.Feedback(request_id=request_id, model=model, rating=rating, correction=correction,
                         comment=comment, candidate_id=candidate_id, created_at=t.utcnow())
        s.add(row)
        s.flush()
        append_event(s, FeedbackRecorded(feedback_id=row.id, request_id=request_id, model=model, rating=rating,
                                         candidate_id=candidate_id), actor)
        return row.id, candidate_id
    return registry.write(work)
