"""Governance records: reports written to disk (bias tests, explanations, PII and data scans) and
the dated sign-offs of the people responsible for them.

Each report row pins its file by sha256, so a sign-off or a model card that cites report 7 cites
exactly the bytes that were reviewed. Every write appends its audit event in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import NotFoundError, TunewrightError
from ..io import sha256_file
from . import tables as t
from .events import ReportRecorded, SignedOff, append_event, canonical_sha256, jsonable, resolve_actor
from .tables import snapshot

SIGNABLE = ("evaluation", "report")


@dataclass(frozen=True)
class ReportRecord:
    id: int
    kind: str
    adapter_id: int | None
    dataset_id: int | None
    evaluation_id: int | None
    path: str
    sha256: str
    summary: dict[str, Any]
    actor: str
    created_at: Any


@dataclass(frozen=True)
class SignOffRecord:
    id: int
    subject_kind: str
    subject_id: int
    subject_sha256: str
    person: str
    role: str | None
    signed_on: str
    statement: str
    actor: str
    created_at: Any


def evaluation_sha256(row: t.Evaluation) -> str:
    """What signing an evaluation freezes: its figures and what they were measured on."""
    body = {"id": row.id, "model_ref": row.model_ref, "adapter_id": row.adapter_id, "dataset_id": row.dataset_id,
            "split": row.split, "n_examples": row.n_examples, "metrics": jsonable(row.metrics)}
    return canonical_sha256(body)


def parse_date(text: str, *, field: str = "date") -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except (TypeError, ValueError):
        raise TunewrightError(f"'{text}' is not a date (use YYYY-MM-DD)", field=field) from None


class ReportStore:
    def __init__(self, registry) -> None:
        self.registry = registry

    # -- reports -------------------------------------------------------------------------------

    def add_report(self, kind: str, path: str | Path, summary: dict[str, Any], *, adapter_id: int | None = None,
                   dataset_id: int | None = None, evaluation_id: int | None = None,
                   actor: str | None = None) -> ReportRecord:
        path = Path(path)
        if not path.is_file():
            raise NotFoundError("report file not found", file=path)
        digest = sha256_file(path)

        def work(s: Session) -> ReportRecord:
            for model, row_id, what in ((t.Adapter, adapter_id, "adapter"), (t.Dataset, dataset_id, "dataset"),
                                        (t.Evaluation, evaluation_id, "evaluation")):
                if row_id is not None and s.get(model, row_id) is None:
                    raise NotFoundError(f"{what} id {row_id} not found")
            who = resolve_actor(actor)
            row = t.Report(kind=kind, adapter_id=adapter_id, dataset_id=dataset_id, evaluation_id=evaluation_id,
                           path=str(path), sha256=digest, summary=jsonable(summary), actor=who, created_at=t.utcnow())
            s.add(row)
            s.flush()
            for parent_kind, parent_id in (("adapter", adapter_id), ("dataset", dataset_id),
                                           ("evaluation", evaluation_id)):
                if parent_id is not None:
                    self.registry.link(s, (parent_kind, parent_id), ("report", row.id), f"{kind}_report")
            append_event(s, ReportRecorded(report_id=row.id, kind=kind, adapter_id=adapter_id, dataset_id=dataset_id,
                                           evaluation_id=evaluation_id, path=str(path), sha256=digest,
                                           summary=row.summary), who)
            return snapshot(ReportRecord, row)
        return self.registry.write(work)

    def get_report(self, report_id: int) -> ReportRecord:
        def work(s: Session) -> ReportRecord:
            row = s.get(t.Report, report_id)
            if row is None:
                raise NotFoundError(f"report {report_id} not found")
            return snapshot(ReportRecord, row)
        return self.registry.read(work)

    def list_reports(self, kind: str | None = None, *, adapter_id: int | None = None,
                     dataset_id: int | None = None) -> list[ReportRecord]:
        """Oldest first."""
        query = select(t.Report).order_by(t.Report.id)
        if kind is not None:
            query = query.where(t.Report.kind == kind)
        if adapter_id is not None:
            query = query.where(t.Report.adapter_id == adapter_id)
        if dataset_id is not None:
            query = query.where(t.Report.dataset_id == dataset_id)
        return self.registry.read(lambda s: [snapshot(ReportRecord, r) for r in s.scalars(query)])

    def latest_report(self, kind: str, *, adapter_id: int | None = None,
                      dataset_id: int | None = None) -> ReportRecord | None:
        found = self.list_reports(kind, adapter_id=adapter_id, dataset_id=dataset_id)
        return found[-1] if found else None

    # -- sign-offs -----------------------------------------------------------------------------

    def sign_off(self, subject_kind: str, subject_id: int, *, person: str, signed_on: str, statement: str,
                 role: str | None = None, actor: str | None = None) -> SignOffRecord:
        if subject_kind not in SIGNABLE:
            raise TunewrightError(f"cannot sign off a '{subject_kind}' (sign off one of: {', '.join(SIGNABLE)})",
                                  field="subject")
        if not person.strip():
            raise TunewrightError("a sign-off needs the signing person's name", field="person")
        if not statement.strip():
            raise TunewrightError("a sign-off needs a statement of what was checked", field="statement")
        signed_on = parse_date(signed_on)
        if dt.date.fromisoformat(signed_on) > dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1):
            raise TunewrightError(f"sign-off date {signed_on} is in the future", field="date")

        def work(s: Session) -> SignOffRecord:
            if subject_kind == "evaluation":
                subject = s.get(t.Evaluation, subject_id)
                digest = evaluation_sha256(subject) if subject is not None else ""
            else:
                subject = s.get(t.Report, subject_id)
                digest = subject.sha256 if subject is not None else ""
                if subject is not None and (not Path(subject.path).is_file() or sha256_file(subject.path) != digest):
                    raise TunewrightError(f"report {subject_id}'s file changed or went missing since it was "
                                          "recorded; regenerate it before signing", file=subject.path)
            if subject is None:
                raise NotFoundError(f"{subject_kind} {subject_id} not found")
            who = resolve_actor(actor)
            row = t.SignOff(subject_kind=subject_kind, subject_id=subject_id, subject_sha256=digest,
                            person=person.strip(), role=role, signed_on=signed_on, statement=statement.strip(),
                            actor=who, created_at=t.utcnow())
            s.add(row)
            s.flush()
            append_event(s, SignedOff(signoff_id=row.id, subject=f"{subject_kind} {subject_id}", subject_sha256=digest,
                                      person=row.person, role=role, signed_on=signed_on, statement=row.statement), who)
            return snapshot(SignOffRecord, row)
        return self.registry.write(work)

    def signoffs(self, subject_kind: str | None = None, subject_id: int | None = None) -> list[SignOffRecord]:
        query = select(t.SignOff).order_by(t.SignOff.id)
        if subject_kind is not None:
            query = query.where(t.SignOff.subject_kind == subject_kind)
        if subject_id is not None:
            query = query.where(t.SignOff.subject_id == subject_id)
        return self.registry.read(lambda s: [snapshot(SignOffRecord, r) for r in s.scalars(query)])
