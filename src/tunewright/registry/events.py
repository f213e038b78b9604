"""Typed audit events and the single function that appends them to the hash-chained log."""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import os
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import tables as t

# The actor is who the environment says it is: TUNEWRIGHT_ACTOR, else the OS user. Nothing checks
# it; the README's security section says so. Reviewers and API keys are named where they act.
ACTOR_ENV = "TUNEWRIGHT_ACTOR"

# Events that change what is released: after a transaction that appends one commits, the head of
# the log is written to an anchor file outside the database (``anchor_release_events``), so that
# deleting the newest events and rewinding SQLite's counter still leaves a trace there.
RELEASE_ACTIONS = frozenset({"adapter.registered", "alias.changed", "govern.override", "signoff.recorded",
                             "export.registered"})
_HEAD_KEY = "tunewright_release_head"
_ANCHOR_FILES: "weakref.WeakKeyDictionary[Any, Path]" = weakref.WeakKeyDictionary()


def anchor_release_events(engine, path: str | Path) -> None:
    """Append the log's head to ``path`` (JSON lines) after every commit with a release event."""
    # Keyed by the connection pool: the registry writes through an engine copy with its own
    # execution options, which shares the pool (and the database) with the engine given here.
    _ANCHOR_FILES[engine.pool] = Path(path)


@sa_event.listens_for(Session, "after_commit")
def _anchor_after_commit(session: Session) -> None:
    head = session.info.pop(_HEAD_KEY, None)
    if head is None:
        return
    bind = session.get_bind()
    path = _ANCHOR_FILES.get(getattr(bind, "pool", None))
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    line = canonical_json({**head, "anchored_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    # Appended and synced: the file only grows, and a crash leaves at worst its last line torn.
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


@sa_event.listens_for(Session, "after_rollback")
def _forget_head(session: Session) -> None:
    session.info.pop(_HEAD_KEY, None)


def resolve_actor(actor: str | None = None) -> str:
    if actor:
        return actor
    if os.environ.get(ACTOR_ENV):
        return os.environ[ACTOR_ENV]
    try:
        return getpass.getuser()
    except Exception:  # containers without a passwd entry raise KeyError/OSError
        return "unknown"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_sha256(obj: Any) -> str:
    """The hash of a JSON-able value as the database will hand it back (see ``jsonable``)."""
    return hashlib.sha256(canonical_json(jsonable(obj)).encode("utf-8")).hexdigest()


def jsonable(obj: Any) -> Any:
    """What the database will hand back: hashing this (not the caller's objects) keeps the chain
    verifiable after a round trip (tuples become lists, int keys become strings, Paths text)."""
    return json.loads(json.dumps(obj, default=str))


def chain_hash(prev_hash: str, *, ts: datetime, actor: str, action: str, subject_kind: str,
               subject_id: str, payload: dict[str, Any]) -> str:
    body = canonical_json({
        "ts": ts.isoformat(), "actor": actor, "action": action,
        "subject_kind": subject_kind, "subject_id": subject_id, "payload": payload,
    })
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class EventRecord:
    id: int
    ts: datetime
    actor: str
    action: str
    subject_kind: str
    subject_id: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class Event:
    """Base for typed events. Subclasses are frozen dataclasses naming their action and subject."""

    action: ClassVar[str]
    subject_kind: ClassVar[str]
    subject_field: ClassVar[str]  # the field holding the subject's id

    @property
    def subject_id(self) -> str:
        return str(getattr(self, self.subject_field))

    def payload(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))  # type: ignore[call-overload]


@dataclass(frozen=True)
class WorkspaceCreated(Event):
    action: ClassVar[str] = "workspace.created"
    subject_kind: ClassVar[str] = "workspace"
    subject_field: ClassVar[str] = "name"
    name: str
    root: str


@dataclass(frozen=True)
class DatasetImported(Event):
    action: ClassVar[str] = "dataset.imported"
    subject_kind: ClassVar[str] = "dataset"
    subject_field: ClassVar[str] = "dataset_id"
    dataset_id: int
    name: str
    version: str
    content_sha256: str
    n_train: int
    n_eval: int
    n_duplicates: int
    source_sha256: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunStarted(Event):
    action: ClassVar[str] = "run.started"
    subject_kind: ClassVar[str] = "run"
    subject_field: ClassVar[str] = "run_id"
    run_id: int
    name: str
    kind: str
    seed: int
    dataset_id: int | None
    base_model_ref: str
    base_model_sha256: str | None
    config_sha256: str


@dataclass(frozen=True)
class RunFinished(Event):
    action: ClassVar[str] = "run.finished"
    subject_kind: ClassVar[str] = "run"
    subject_field: ClassVar[str] = "run_id"
    run_id: int
    status: str
    metrics: dict[str, Any]
    error: str | None


@dataclass(frozen=True)
class RunResumed(Event):
    action: ClassVar[str] = "run.resumed"
    subject_kind: ClassVar[str] = "run"
    subject_field: ClassVar[str] = "run_id"
    run_id: int
    from_status: str


@dataclass(frozen=True)
class AdapterRegistered(Event):
    action: ClassVar[str] = "adapter.registered"
    subject_kind: ClassVar[str] = "adapter"
    subject_field: ClassVar[str] = "adapter_id"
    adapter_id: int
    name: str
    version: int
    weights_sha256: str
    method: str  # events before migration 0006 call it peft_type
    run_id: int | None
    base_model_sha256: str | None


@dataclass(frozen=True)
class EvaluationRecorded(Event):
    action: ClassVar[str] = "evaluation.recorded"
    subject_kind: ClassVar[str] = "evaluation"
    subject_field: ClassVar[str] = "evaluation_id"
    evaluation_id: int
    model_ref: str
    adapter_id: int | None
    dataset_id: int | None
    split: str
    n_examples: int
    metrics: dict[str, Any]


@dataclass(frozen=True)
class IndexBuilt(Event):
    action: ClassVar[str] = "index.built"
    subject_kind: ClassVar[str] = "index"
    subject_field: ClassVar[str] = "index_id"
    index_id: int
    name: str
    version: str
    sha256: str
    n_chunks: int
    source_sha256: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RoundStarted(Event):
    action: ClassVar[str] = "synth.round_started"
    subject_kind: ClassVar[str] = "synth_round"
    subject_field: ClassVar[str] = "round_id"
    round_id: int
    queue: str
    number: int
    teacher_model: str
    spec_sha256: str


@dataclass(frozen=True)
class RoundFinished(Event):
    action: ClassVar[str] = "synth.round_finished"
    subject_kind: ClassVar[str] = "synth_round"
    subject_field: ClassVar[str] = "round_id"
    round_id: int
    n_generated: int
    n_added: int
    filter_counts: dict[str, Any]
    usage: dict[str, Any]
    n_failures: int


@dataclass(frozen=True)
class CandidatesImported(Event):
    action: ClassVar[str] = "review.candidates_imported"
    subject_kind: ClassVar[str] = "queue"
    subject_field: ClassVar[str] = "queue"
    queue: str
    source: str
    n_added: int
    n_skipped: int


@dataclass(frozen=True)
class ReviewerAdded(Event):
    action: ClassVar[str] = "review.reviewer_added"
    subject_kind: ClassVar[str] = "reviewer"
    subject_field: ClassVar[str] = "name"
    name: str


@dataclass(frozen=True)
class ReviewerPasswordChanged(Event):
    action: ClassVar[str] = "review.reviewer_password_changed"
    subject_kind: ClassVar[str] = "reviewer"
    subject_field: ClassVar[str] = "name"
    name: str


@dataclass(frozen=True)
class ReviewerSessionsRevoked(Event):
    action: ClassVar[str] = "review.reviewer_sessions_revoked"
    subject_kind: ClassVar[str] = "reviewer"
    subject_field: ClassVar[str] = "name"
    name: str


@dataclass(frozen=True)
class ReviewerRemoved(Event):
    action: ClassVar[str] = "review.reviewer_removed"
    subject_kind: ClassVar[str] = "reviewer"
    subject_field: ClassVar[str] = "name"
    name: str


@dataclass(frozen=True)
class ItemsAssigned(Event):
    action: ClassVar[str] = "review.assigned"
    subject_kind: ClassVar[str] = "queue"
    subject_field: ClassVar[str] = "queue"
    queue: str
    per_reviewer: dict[str, int]


@dataclass(frozen=True)
class ReviewRecorded(Event):
    action: ClassVar[str] = "review.recorded"
    subject_kind: ClassVar[str] = "candidate"
    subject_field: ClassVar[str] = "candidate_id"
    candidate_id: int
    review_id: int
    reviewer: str
    decision: str
    rating: int | None
    reasons: list[str]
    before_sha256: str
    after_sha256: str | None
    status: str


@dataclass(frozen=True)
class CorrectionApplied(Event):
    action: ClassVar[str] = "review.correction_applied"
    subject_kind: ClassVar[str] = "candidate"
    subject_field: ClassVar[str] = "candidate_id"
    candidate_id: int
    from_candidate_id: int
    before_sha256: str
    after_sha256: str


def to_record(row: t.Event) -> EventRecord:
    return EventRecord(
        id=row.id, ts=row.ts, actor=row.actor, action=row.action, subject_kind=row.subject_kind,
        subject_id=row.subject_id, payload=jsonable(row.payload), prev_hash=row.prev_hash, hash=row.hash,
    )


def _tail_hash(session: Session) -> str:
    last = session.scalar(select(t.Event.hash).order_by(t.Event.id.desc()).limit(1))
    return last or t.GENESIS_HASH


def append_event(session: Session, event: Event, actor: str | None = None) -> EventRecord:
    """The one way an event enters the log. Runs inside the caller's transaction so the event
    commits or rolls back together with the change it describes."""
    row = t.Event(
        ts=t.utcnow(), actor=resolve_actor(actor), action=event.action,
        subject_kind=event.subject_kind, subject_id=str(event.subject_id), payload=jsonable(event.payload()),
    )
    row.prev_hash = _tail_hash(session)
    row.hash = chain_hash(row.prev_hash, ts=row.ts, actor=row.actor, action=row.action,
                          subject_kind=row.subject_kind, subject_id=row.subject_id, payload=row.payload)
    session.add(row)
    session.flush()
    if row.action in RELEASE_ACTIONS:
        session.info[_HEAD_KEY] = {"event_id": row.id, "hash": row.hash, "action": row.action}
    return to_record(row)


def verify_chain(session: Session) -> tuple[bool, int | None]:
    expected_prev = t.GENESIS_HASH
    for row in session.scalars(select(t.Event).order_by(t.Event.id).execution_options(yield_per=500)):
        recomputed = chain_hash(row.prev_hash, ts=row.ts, actor=row.actor, action=row.action,
                                subject_kind=row.subject_kind, subject_id=row.subject_id, payload=row.payload)
        if row.prev_hash != expected_prev or row.hash != recomputed:
            return False, row.id
        expected_prev = row.hash
    return True, None


@dataclass(frozen=True)
class AliasChanged(Event):
    action: ClassVar[str] = "alias.changed"
    subject_kind: ClassVar[str] = "alias"
    subject_field: ClassVar[str] = "alias"
    alias: str
    change: str  # set, promote, rollback, split
    adapter_id: int | None
    split_adapter_id: int | None
    split_percent: int
    previous_adapter_id: int | None
    reason: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportRegistered(Event):
    action: ClassVar[str] = "export.registered"
    subject_kind: ClassVar[str] = "export"
    subject_field: ClassVar[str] = "export_id"
    export_id: int
    model_ref: str
    adapter_id: int | None
    formats: list[str]
    files_sha256: dict[str, str]
    max_logit_diff: dict[str, Any]


@dataclass(frozen=True)
class FeedbackRecorded(Event):
    action: ClassVar[str] = "serve.feedback"
    subject_kind: ClassVar[str] = "feedback"
    subject_field: ClassVar[str] = "feedback_id"
    feedback_id: int
    request_id: str
    model: str
    rating: str
    candidate_id: int | None


@dataclass(frozen=True)
class ReportRecorded(Event):
    action: ClassVar[str] = "report.recorded"
    subject_kind: ClassVar[str] = "report"
    subject_field: ClassVar[str] = "report_id"
    report_id: int
    kind: str
    adapter_id: int | None
    dataset_id: int | None
    evaluation_id: int | None
    path: str
    sha256: str
    summary: dict[str, Any]


@dataclass(frozen=True)
class SignedOff(Event):
    action: ClassVar[str] = "signoff.recorded"
    subject_kind: ClassVar[str] = "signoff"
    subject_field: ClassVar[str] = "signoff_id"
    signoff_id: int
    subject: str  # "evaluation 12", "report 3"
    subject_sha256: str
    person: str
    role: str | None
    signed_on: str
    statement: str


@dataclass(frozen=True)
class OverrideRecorded(Event):
    """A person went past a governance check (a failed release gate, unresolved PII) and said why."""

    action: ClassVar[str] = "govern.override"
    subject_kind: ClassVar[str] = "override"
    subject_field: ClassVar[str] = "check"
    check: str  # "release_gates", "pii"
    target: str  # what was let through: "adapter 3 -> production", "dataset 2 -> run"
    reason: str
    findings: dict[str, Any]
