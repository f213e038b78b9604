"""ORM models for the registry and the frozen record snapshots built from them. The schema itself is
owned by the Alembic migrations; these classes must match them (a test compares the two)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Named constraints let later SQLite batch migrations drop or alter them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite reuses the highest rowid after a delete; AUTOINCREMENT keeps ids stable for lineage.
_TABLE_ARGS = {"sqlite_autoincrement": True}

GENESIS_HASH = "0" * 64
R = TypeVar("R")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Always hands back timezone-aware UTC, whatever the backend stores (SQLite keeps naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("registry timestamps must be timezone-aware")
        value = value.astimezone(timezone.utc)
        # SQLite would store the offset inconsistently; keep it naive UTC there.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("name", "version"), _TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(64))
    content_sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    n_train: Mapped[int] = mapped_column(Integer)
    n_eval: Mapped[int] = mapped_column(Integer)
    n_duplicates: Mapped[int] = mapped_column(Integer)
    source_files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    hardware: Mapped[dict[str, Any]] = mapped_column(JSON)
    library_versions: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    base_model_ref: Mapped[str] = mapped_column(Text)
    base_model_sha256: Mapped[str | None] = mapped_column(String(64))
    output_path: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)


class Adapter(Base):
    __tablename__ = "adapters"
    __table_args__ = (UniqueConstraint("name", "version"), _TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(32))  # the Tunewright method that trained it
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    base_model_ref: Mapped[str] = mapped_column(Text)
    base_model_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Evaluation(Base):
    __tablename__ = "evaluations"
    __table_args__ = (_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_ref: Mapped[str] = mapped_column(String(255))
    adapter_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id"))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    split: Mapped[str] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    n_examples: Mapped[int] = mapped_column(Integer)
    results_path: Mapped[str] = mapped_column(Text)
    report_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Lineage(Base):
    """Edges of the provenance graph. Nodes are (kind, id-as-text) so a file hash and a row id fit alike."""

    __tablename__ = "lineage"
    __table_args__ = (
        UniqueConstraint("parent_kind", "parent_id", "child_kind", "child_id", "relation"),
        Index(None, "parent_kind", "parent_id"),
        Index(None, "child_kind", "child_id"),
        _TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_kind: Mapped[str] = mapped_column(String(32))
    parent_id: Mapped[str] = mapped_column(String(255))
    child_kind: Mapped[str] = mapped_column(String(32))
    child_id: Mapped[str] = mapped_column(String(255))
    relation: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Event(Base):
    """Append-only, hash-chained audit log. Unique prev_hash means two writers that raced for the
    same tail cannot both commit, so the chain can never fork."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("prev_hash"),
        UniqueConstraint("hash"),
        Index(None, "subject_kind", "subject_id"),
        _TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    subject_kind: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class SynthRound(Base):
    """One generation round for a queue: what was asked of which teacher, what it cost, what failed."""

    __tablename__ = "synth_rounds"
    __table_args__ = (UniqueConstraint("queue", "number"), _TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue: Mapped[str] = mapped_column(String(255))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    spec_sha256: Mapped[str] = mapped_column(String(64))
    teacher_model: Mapped[str] = mapped_column(String(255))
    guidance: Mapped[dict[str, Any]] = mapped_column(JSON)
    usage: Mapped[dict[str, Any]] = mapped_column(JSON)
    filter_counts: Mapped[dict[str, Any]] = mapped_column(JSON)
    failures: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    n_generated: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Candidate(Base):
    """A generated (or imported) row waiting for, or past, human review."""

    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("queue", "content_sha256"), Index(None, "queue", "status"), _TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue: Mapped[str] = mapped_column(String(255))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("synth_rounds.id"))
    content_sha256: Mapped[str] = mapped_column(String(64))
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    original: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    reference: Mapped[str | None] = mapped_column(Text)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON)
    flags: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    judge_score: Mapped[int | None] = mapped_column(Integer)
    topic: Mapped[str | None] = mapped_column(String(255))
    generator: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Reviewer(Base):
    __tablename__ = "reviewers"
    __table_args__ = (UniqueConstraint("name"), _TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("candidate_id", "reviewer"), Index(None, "reviewer"), _TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    reviewer: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Review(Base):
    """One reviewer's decision on one item: append-only, the latest per reviewer counts."""

    __tablename__ = "reviews"
    __table_args__ = (Index(None, "candidate_id"), _TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"))
    reviewer: Mapped[str] = mapped_column(String(255))
    decision: Mapped[str] = mapped_column(String(16))
    rating: Mapped[int | None] = mapped_column(Integer)
    reasons: Mapped[list[str]] = mapped_column(JSON)
    note: Mapped[str] = mapped_column(Text)
    before: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    after: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    seconds: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AliasChange(Base):
    """Append-only history of a deployment alias (production, staging): the newest row is its state."""

    __tablename__ = "alias_changes"
    __table_args__ = (Index("ix_alias_changes_alias", "alias"), _TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alias: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    adapter_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id"))
    split_adapter_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id"))
    split_percent: Mapped[int] = mapped_column(Integer)
    # What a rollback returns to; walking these links is the alias's deployment history.
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("alias_changes.id"))
    actor: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(Text)
    # The evaluation and bias report a move relied on, and the release gates' verdict.
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Export(Base):
    """An export whose parity check passed (failed exports are never registered)."""

    __tablename__ = "exports"
    __table_args__ = (_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_ref: Mapped[str] = mapped_column(String(255))
    adapter_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id"))
    path: Mapped[str] = mapped_column(Text)
    formats: Mapped[list[str]] = mapped_column(JSON)
    files: Mapped[dict[str, Any]] = mapped_column(JSON)
    check: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Feedback(Base):
    """A user's thumbs up or down on a served response, with an optional correction."""

    __tablename__ = "feedback"
    __table_args__ = (_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(255))
    rating: Mapped[str] = mapped_column(String(8))
    correction: Mapped[str | None] = mapped_column(Text)
    comment: Mapped[str | None] = mapped_column(Text)
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Report(Base):
    """A governance report written to disk (bias test, explanation, PII or data scan); the hash pins
    the file a sign-off or a model card refers to."""

    __tablename__ = "reports"
    __table_args__ = (Index("ix_reports_kind", "kind"), _TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    adapter_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id"))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    evaluation_id: Mapped[int | None] = mapped_column(ForeignKey("evaluations.id"))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SignOff(Base):
    """A named person's dated approval of an evaluation or report (Annex IV asks for signed test reports)."""

    __tablename__ = "signoffs"
    __table_args__ = (Index("ix_signoffs_subject_kind_subject_id", "subject_kind", "subject_id"), _TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_kind: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[int] = mapped_column(Integer)
    # What was signed, frozen: the report file's hash or the evaluation's metrics hash.
    subject_sha256: Mapped[str] = mapped_column(String(64))
    person: Mapped[str] = mapped_column(String(255))
    role: Mapped[str | None] = mapped_column(String(255))
    signed_on: Mapped[str] = mapped_column(String(10))
    statement: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RetrievalIndex(Base):
    """A retrieval index over the workspace's sources; the version is the first 12 hex of its sha256."""

    __tablename__ = "indexes"
    __table_args__ = (UniqueConstraint("name", "version"), _TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    n_chunks: Mapped[int] = mapped_column(Integer)
    source_files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


# Frozen snapshots handed to callers instead of live ORM objects, which would detach or go stale
# once their session closes.


@dataclass(frozen=True)
class DatasetRecord:
    id: int
    name: str
    version: str
    content_sha256: str
    path: str
    n_train: int
    n_eval: int
    n_duplicates: int
    source_files: list[dict[str, Any]]
    spec: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class RunRecord:
    id: int
    name: str
    kind: str
    status: str
    config: dict[str, Any]
    seed: int
    hardware: dict[str, Any]
    library_versions: dict[str, Any]
    metrics: dict[str, Any]
    dataset_id: int | None
    base_model_ref: str
    base_model_sha256: str | None
    output_path: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class AdapterRecord:
    id: int
    name: str
    version: int
    path: str
    weights_sha256: str
    method: str
    run_id: int | None
    base_model_ref: str
    base_model_sha256: str | None
    created_at: datetime


@dataclass(frozen=True)
class EvaluationRecord:
    id: int
    model_ref: str
    adapter_id: int | None
    dataset_id: int | None
    split: str
    metrics: dict[str, Any]
    n_examples: int
    results_path: str
    report_path: str | None
    created_at: datetime


@dataclass(frozen=True)
class IndexRecord:
    id: int
    name: str
    version: str
    sha256: str
    path: str
    n_chunks: int
    source_files: list[dict[str, Any]]
    created_at: datetime


def snapshot(cls: type[R], row: Any) -> R:
    # Deep-copy JSON columns so a caller mutating a record cannot reach back into session state.
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = getattr(row, f.name)
        values[f.name] = json.loads(json.dumps(value)) if isinstance(value, (dict, list)) else value
    return cls(**values)
