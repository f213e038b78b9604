"""The review queue in the registry: rounds, candidates, blind assignments and decisions.

Every decision is its own transaction with its own audit event (who, when, before and after), so a
crash or a closed browser tab loses at most the item on screen. Reviews are append-only; a
reviewer changing their mind adds a review, and the latest one per reviewer counts.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Sequence

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..data.schema import ChatRow
from ..errors import NotFoundError, TunewrightError
from ..registry import Registry
from ..registry import tables as t
from ..registry.events import (CandidatesImported, ItemsAssigned, ReviewRecorded, RoundFinished, RoundStarted,
                               append_event, jsonable)
from .records import CANDIDATE_STATUSES, DECISIONS, CandidateRecord, ReviewRecord

UNDECIDED = ("pending", "flagged")
RESUMABLE = ("running", "incomplete")


def messages_sha256(messages: Sequence[dict[str, str]]) -> str:
    payload = json.dumps(list(messages), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RoundRecord:
    id: int
    queue: str
    number: int
    status: str
    spec_sha256: str
    teacher_model: str
    guidance: dict[str, Any]
    usage: dict[str, Any]
    filter_counts: dict[str, Any]
    failures: list[dict[str, Any]]
    n_generated: int
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class RoundSummary:
    """What `tunewright synth` reports per round: is the loop working?"""

    number: int
    n_candidates: int
    n_flagged: int
    n_accepted: int
    n_rejected: int
    n_undecided: int
    filter_counts: dict[str, Any]
    usage: dict[str, Any]
    n_failures: int

    @property
    def acceptance_rate(self) -> float | None:
        decided = self.n_accepted + self.n_rejected
        return self.n_accepted / decided if decided else None


@dataclass
class QueueFilter:
    """The queue's filters, shared by the item list, bulk decisions and exports."""

    status: str | None = None  # one of CANDIDATE_STATUSES, or None for all
    min_score: int | None = None
    max_score: int | None = None
    topic: str | None = None
    generator: str | None = None
    flag: str | None = None  # a filter name: only rows that filter flagged
    round: int | None = None
    ids: list[int] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in CANDIDATE_STATUSES:
            raise TunewrightError(f"unknown status '{self.status}' (known: {', '.join(CANDIDATE_STATUSES)})",
                                  field="status")


@dataclass(frozen=True)
class NewCandidate:
    row: ChatRow
    provenance: dict[str, Any]
    flags: list[dict[str, str]] = field(default_factory=list)


def _candidate(row: t.Candidate, round_number: int | None) -> CandidateRecord:
    return CandidateRecord(
        id=row.id, queue=row.queue, round=round_number or 0, messages=jsonable(row.messages),
        original=jsonable(row.original), reference=row.reference, provenance=jsonable(row.provenance),
        flags=jsonable(row.flags), judge_score=row.judge_score, topic=row.topic, generator=row.generator,
        status=row.status, created_at=row.created_at,
    )


def _review(row: t.Review) -> ReviewRecord:
    return ReviewRecord(
        id=row.id, candidate_id=row.candidate_id, reviewer=row.reviewer, decision=row.decision, rating=row.rating,
        reasons=list(row.reasons), note=row.note, before=jsonable(row.before),
        after=None if row.after is None else jsonable(row.after), seconds=row.seconds, created_at=row.created_at,
    )


def _round(row: t.SynthRound) -> RoundRecord:
    return RoundRecord(**{name: (jsonable(getattr(row, name)) if name in ("guidance", "usage", "filter_counts", "failures")
                                 else getattr(row, name)) for name in RoundRecord.__dataclass_fields__})


def latest_decisions(reviews: Iterable[t.Review | ReviewRecord]) -> dict[str, Any]:
    """Each reviewer's latest review of one item (reviews are append-only; a changed mind appends)."""
    latest: dict[str, Any] = {}
    for review in sorted(reviews, key=lambda r: r.id):
        latest[review.reviewer] = review
    return latest


def decide(decisions: Sequence[str], min_reviews: int) -> str | None:
    """The item's status once enough reviewers have spoken: majority, and a tie rejects, because
    only rows people clearly agreed on should train a model."""
    if len(decisions) < min_reviews:
        return None
    counts = Counter(decisions)
    return "accepted" if counts["accept"] > counts["reject"] else "rejected"


class ReviewStore:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # -- rounds --------------------------------------------------------------------------------

    def open_round(self, queue: str, *, spec_sha256: str, teacher_model: str, guidance: dict[str, Any],
                   new_round: bool = False, actor: str | None = None) -> RoundRecord:
        """Resume the queue's unfinished round (a crash, or calls that failed) unless ``new_round``
        says to leave it as it is; otherwise start the next round."""
        def work(s: Session) -> RoundRecord:
            unfinished = s.scalars(select(t.SynthRound).where(t.SynthRound.queue == queue,
                                                              t.SynthRound.status.in_(RESUMABLE))).first()
            if unfinished is not None and not new_round:
                return _round(unfinished)
            if unfinished is not None:
                unfinished.status = "abandoned"
            last = s.scalar(select(func.max(t.SynthRound.number)).where(t.SynthRound.queue == queue)) or 0
            row = t.SynthRound(queue=queue, number=last + 1, status="running", spec_sha256=spec_sha256,
                               teacher_model=teacher_model, guidance=jsonable(guidance), usage={}, filter_counts={},
                               failures=[], n_generated=0, started_at=t.utcnow())
            s.add(row)
            s.flush()
            append_event(s, RoundStarted(round_id=row.id, queue=queue, number=row.number, teacher_model=teacher_model,
                                         spec_sha256=spec_sha256), actor)
            return _round(row)
        return self.registry.write(work)

    def finish_round(self, round_id: int, candidates: Sequence[NewCandidate], *, usage: dict[str, Any],
                     filter_counts: dict[str, Any], failures: list[dict[str, Any]], n_generated: int,
                     source_files: Sequence[str] = (), actor: str | None = None) -> tuple[RoundRecord, int]:
        """Store the round's rows and close it in one transaction: a round is all there or not at all.
        Rows already in the queue (same content) are skipped, so a resumed round adds nothing twice."""
        def work(s: Session) -> tuple[RoundRecord, int]:
            row = s.get(t.SynthRound, round_id)
            if row is None:
                raise NotFoundError(f"round {round_id} not found")
            added = self.add_in_session(s, row.queue, round_id, candidates)
            for sha in dict.fromkeys(source_files):
                self.registry.link(s, ("file", sha), ("synth_round", round_id), "source_of")
            # A round with failed calls stays open: the next run replays it, cached calls cost nothing
            # and only the failed ones are made again.
            row.status = "incomplete" if failures else "completed"
            row.finished_at = t.utcnow()
            row.usage, row.filter_counts = jsonable(usage), jsonable(filter_counts)
            row.failures, row.n_generated = jsonable(failures), n_generated
            append_event(s, RoundFinished(round_id=round_id, n_generated=n_generated, n_added=added,
                                          filter_counts=row.filter_counts, usage=row.usage,
                                          n_failures=len(failures)), actor)
            return _round(row), added
        return self.registry.write(work)

    def rounds(self, queue: str) -> list[RoundRecord]:
        query = select(t.SynthRound).where(t.SynthRound.queue == queue).order_by(t.SynthRound.number)
        return self.registry.read(lambda s: [_round(r) for r in s.scalars(query)])

    def round_summaries(self, queue: str) -> list[RoundSummary]:
        def work(s: Session) -> list[RoundSummary]:
            out = []
            for rnd in s.scalars(select(t.SynthRound).where(t.SynthRound.queue == queue).order_by(t.SynthRound.number)):
                statuses = Counter(s.scalars(select(t.Candidate.status).where(t.Candidate.round_id == rnd.id)))
                out.append(RoundSummary(
                    number=rnd.number, n_candidates=sum(statuses.values()), n_flagged=statuses["flagged"],
                    n_accepted=statuses["accepted"], n_rejected=statuses["rejected"],
                    n_undecided=statuses["pending"] + statuses["flagged"], filter_counts=jsonable(rnd.filter_counts),
                    usage=jsonable(rnd.usage), n_failures=len(rnd.failures)))
            return out
        return self.registry.read(work)

    # -- candidates ----------------------------------------------------------------------------

    @staticmethod
    def add_in_session(s: Session, queue: str, round_id: int | None, candidates: Sequence[NewCandidate]) -> int:
        existing = set(s.scalars(select(t.Candidate.content_sha256).where(t.Candidate.queue == queue)))
        added = 0
        now = t.utcnow()
        for new in candidates:
            messages = [m.model_dump() for m in new.row.messages]
            sha = messages_sha256(messages)
            if sha in existing:
                continue
            existing.add(sha)
            judge = new.row.meta.get("judge") or {}
            s.add(t.Candidate(
                queue=queue, round_id=round_id, content_sha256=sha, messages=messages, original=messages,
                reference=new.row.reference, provenance=jsonable(new.provenance), flags=jsonable(new.flags),
                judge_score=judge.get("score"), topic=new.provenance.get("topic"),
                generator=str(new.provenance.get("generator", "import")),
                status="flagged" if new.flags else "pending", created_at=now))
            added += 1
        s.flush()
        return added

    def import_candidates(self, queue: str, candidates: Sequence[NewCandidate], *, source: str,
                          actor: str | None = None) -> int:
        def work(s: Session) -> int:
            added = self.add_in_session(s, queue, None, candidates)
            append_event(s, CandidatesImported(queue=queue, source=source, n_added=added,
                                               n_skipped=len(candidates) - added), actor)
            return added
        return self.registry.write(work)

    def _query(self, queue: str, where: QueueFilter):
        query = select(t.Candidate, t.SynthRound.number).outerjoin(
            t.SynthRound, t.Candidate.round_id == t.SynthRound.id).where(t.Candidate.queue == queue)
        if where.status:
            query = query.where(t.Candidate.status == where.status)
        if where.min_score is not None:
            query = query.where(t.Candidate.judge_score >= where.min_score)
        if where.max_score is not None:
            query = query.where(t.Candidate.judge_score <= where.max_score)
        if where.topic:
            query = query.where(t.Candidate.topic == where.topic)
        if where.generator:
            query = query.where(t.Candidate.generator == where.generator)
        if where.round is not None:
            query = query.where(t.SynthRound.number == where.round)
        if where.ids is not None:
            query = query.where(t.Candidate.id.in_(where.ids))
        return query.order_by(t.Candidate.id)

    def _matching(self, s: Session, queue: str, where: QueueFilter) -> list[tuple[t.Candidate, int | None]]:
        rows = [(c, n) for c, n in s.execute(self._query(queue, where))]
        if where.flag:  # JSON columns are not portably queryable; flags are few per row
            rows = [(c, n) for c, n in rows if any(f.get("filter") == where.flag for f in c.flags)]
        return rows

    def candidates(self, queue: str, where: QueueFilter | None = None) -> list[CandidateRecord]:
        where = where or QueueFilter()
        return self.registry.read(lambda s: [_candidate(c, n) for c, n in self._matching(s, queue, where)])

    def get(self, candidate_id: int) -> CandidateRecord:
        def work(s: Session) -> CandidateRecord:
            row = s.get(t.Candidate, candidate_id)
            if row is None:
                raise NotFoundError(f"review item {candidate_id} not found")
            number = s.scalar(select(t.SynthRound.number).where(t.SynthRound.id == row.round_id)) if row.round_id else None
            return _candidate(row, number)
        return self.registry.read(work)

    def queues(self) -> list[str]:
        return self.registry.read(lambda s: list(s.scalars(
            select(t.Candidate.queue).distinct().order_by(t.Candidate.queue))))

    def facets(self, queue: str) -> dict[str, list[str]]:
        """Values the queue's filter menus offer."""
        def work(s: Session) -> dict[str, list[str]]:
            rows = list(s.scalars(select(t.Candidate).where(t.Candidate.queue == queue)))
            return {
                "topic": sorted({r.topic for r in rows if r.topic}),
                "generator": sorted({r.generator for r in rows}),
                "flag": sorted({f["filter"] for r in rows for f in r.flags}),
            }
        return self.registry.read(work)

    # -- assignment ----------------------------------------------------------------------------

    def assign(self, queue: str, reviewers: Sequence[str], per_item: int, *, actor: str | None = None) -> dict[str, int]:
        """Give each undecided item ``per_item`` distinct reviewers, least-loaded first, so the
        work spreads evenly; items already assigned keep their reviewers."""
        if per_item > len(reviewers):
            raise TunewrightError(f"each item needs {per_item} reviewers but only {len(reviewers)} are named",
                                  field="reviewers_per_item")

        def work(s: Session) -> dict[str, int]:
            load = Counter({r: 0 for r in reviewers})
            for name, n in s.execute(select(t.Assignment.reviewer, func.count()).group_by(t.Assignment.reviewer)):
                if name in load:
                    load[name] = n
            made: Counter[str] = Counter()
            items = s.scalars(select(t.Candidate.id).where(t.Candidate.queue == queue,
                                                           t.Candidate.status.in_(UNDECIDED)).order_by(t.Candidate.id))
            now = t.utcnow()
            for candidate_id in list(items):
                have = set(s.scalars(select(t.Assignment.reviewer).where(t.Assignment.candidate_id == candidate_id)))
                for name in sorted((r for r in reviewers if r not in have), key=lambda r: (load[r], r)):
                    if len(have) >= per_item:
                        break
                    s.add(t.Assignment(candidate_id=candidate_id, reviewer=name, created_at=now))
                    have.add(name)
                    load[name] += 1
                    made[name] += 1
            if made:
                append_event(s, ItemsAssigned(queue=queue, per_reviewer=dict(made)), actor)
            return dict(made)
        return self.registry.write(work)

    def _uses_assignments(self, s: Session, queue: str) -> bool:
        return s.scalar(select(func.count()).select_from(t.Assignment).join(
            t.Candidate, t.Assignment.candidate_id == t.Candidate.id).where(t.Candidate.queue == queue)) > 0

    def todo(self, queue: str, reviewer: str, where: QueueFilter | None = None) -> list[CandidateRecord]:
        """The reviewer's own queue: undecided items (assigned to them, when the queue uses
        assignments) they have not reviewed yet. Blind: nothing here says what others decided."""
        return self.registry.read(lambda s: self._todo_in(s, queue, reviewer, where or QueueFilter()))

    def _todo_in(self, s: Session, queue: str, reviewer: str, where: QueueFilter) -> list[CandidateRecord]:
        done = set(s.scalars(select(t.Review.candidate_id).where(t.Review.reviewer == reviewer)))
        mine = None
        if self._uses_assignments(s, queue):
            mine = set(s.scalars(select(t.Assignment.candidate_id).where(t.Assignment.reviewer == reviewer)))
        out = []
        for c, n in self._matching(s, queue, where):
            if c.status not in UNDECIDED or c.id in done or (mine is not None and c.id not in mine):
                continue
            out.append(_candidate(c, n))
        return out

    def progress(self, queue: str, reviewer: str | None = None) -> dict[str, int]:
        def work(s: Session) -> dict[str, int]:
            statuses = Counter(s.scalars(select(t.Candidate.status).where(t.Candidate.queue == queue)))
            out = {status: statuses[status] for status in CANDIDATE_STATUSES}
            out["total"] = sum(statuses.values())
            out["decided"] = out["accepted"] + out["rejected"]
            if reviewer is not None:
                out["mine_done"] = s.scalar(select(func.count(func.distinct(t.Review.candidate_id))).join(
                    t.Candidate, t.Review.candidate_id == t.Candidate.id).where(
                    t.Candidate.queue == queue, t.Review.reviewer == reviewer)) or 0
            return out
        return self.registry.read(work)

    # -- decisions -----------------------------------------------------------------------------

    def review(self, candidate_id: int, *, reviewer: str, decision: str, min_reviews: int = 1,
               rating: int | None = None, reasons: Sequence[str] = (), note: str = "",
               edited: list[dict[str, str]] | None = None, seconds: float | None = None) -> ReviewRecord:
        """Record one decision, committed at once with its audit event."""
        return self.registry.write(lambda s: self._review_in(
            s, candidate_id, reviewer=reviewer, decision=decision, min_reviews=min_reviews, rating=rating,
            reasons=list(reasons), note=note, edited=edited, seconds=seconds))

    def bulk_review(self, queue: str, where: QueueFilter, *, reviewer: str, decision: str, min_reviews: int = 1,
                    reasons: Sequence[str] = (), note: str = "") -> int:
        """One decision for every item of the reviewer's own to-do list (undecided, assigned to
        them where the queue uses assignments, not yet reviewed by them) that the filter matches;
        all in one transaction, each with its own event."""
        def work(s: Session) -> int:
            targets = [c.id for c in self._todo_in(s, queue, reviewer, where)]
            for candidate_id in targets:
                self._review_in(s, candidate_id, reviewer=reviewer, decision=decision, min_reviews=min_reviews,
                                rating=None, reasons=list(reasons), note=note, edited=None, seconds=None)
            return len(targets)
        return self.registry.write(work)

    @staticmethod
    def _review_in(s: Session, candidate_id: int, *, reviewer: str, decision: str, min_reviews: int,
                   rating: int | None, reasons: list[str], note: str, edited: list[dict[str, str]] | None,
                   seconds: float | None) -> ReviewRecord:
        if decision not in DECISIONS:
            raise TunewrightError(f"unknown decision '{decision}' (use accept or reject)", field="decision")
        if rating is not None and not 1 <= rating <= 5:
            raise TunewrightError(f"rating {rating} is outside 1-5", field="rating")
        row = s.get(t.Candidate, candidate_id, with_for_update=True)
        if row is None:
            raise NotFoundError(f"review item {candidate_id} not found")
        before = jsonable(row.messages)
        after = None
        if edited is not None and edited != before:
            try:
                checked = ChatRow(messages=edited, reference=row.reference)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise TunewrightError(f"edited item {candidate_id}: {where}: {first['msg']}", field="messages") from None
            after = [m.model_dump() for m in checked.messages]
        review = t.Review(candidate_id=candidate_id, reviewer=reviewer, decision=decision, rating=rating,
                          reasons=list(reasons), note=note, before=before, after=after, seconds=seconds,
                          created_at=t.utcnow())
        s.add(review)
        s.flush()
        reviews = s.scalars(select(t.Review).where(t.Review.candidate_id == candidate_id)).all()
        latest = latest_decisions(reviews)
        verdict = decide([r.decision for r in latest.values()], min_reviews)
        if verdict is not None:
            row.status = verdict
            # Edits apply only once the item is decided, so a second reviewer never sees the first
            # one's changes (blind review); the latest accepting edit is what trains.
            edits = [r for r in latest.values() if r.decision == "accept" and r.after is not None]
            if verdict == "accepted" and edits:
                row.messages = max(edits, key=lambda r: r.id).after
        append_event(s, ReviewRecorded(
            candidate_id=candidate_id, review_id=review.id, reviewer=reviewer, decision=decision, rating=rating,
            reasons=list(reasons), before_sha256=messages_sha256(before),
            after_sha256=None if after is None else messages_sha256(after), status=row.status), reviewer)
        return _review(review)

    def reviews(self, queue: str | None = None, *, candidate_id: int | None = None,
                reviewer: str | None = None) -> list[ReviewRecord]:
        query = select(t.Review).order_by(t.Review.id)
        if queue is not None:
            query = query.join(t.Candidate, t.Review.candidate_id == t.Candidate.id).where(t.Candidate.queue == queue)
        if candidate_id is not None:
            query = query.where(t.Review.candidate_id == candidate_id)
        if reviewer is not None:
            query = query.where(t.Review.reviewer == reviewer)
        return self.registry.read(lambda s: [_review(r) for r in s.scalars(query)])

    def edit_pending(self, s: Session, candidate_id: int, messages: list[dict[str, str]]) -> tuple[str, str]:
        """Replace an undecided item's content inside the caller's transaction (corrections)."""
        row = s.get(t.Candidate, candidate_id)
        if row is None:
            raise NotFoundError(f"review item {candidate_id} not found")
        if row.status not in UNDECIDED:
            raise TunewrightError(f"review item {candidate_id} is already {row.status}")
        before = messages_sha256(row.messages)
        row.messages = jsonable(messages)
        return before, messages_sha256(row.messages)

