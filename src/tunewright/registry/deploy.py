"""Deployment records: aliases (production, staging) with promotion, rollback and A/B splits;
exports that passed their parity check; user feedback on served answers.

Every change is one transaction that appends its audit event, like the rest of the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import NotFoundError, TunewrightError
from ..reports import CHECK_REPORT, CheckReport
from . import tables as t
from .events import (AliasChanged, ExportRegistered, OverrideRecorded, append_event, jsonable,
                     resolve_actor)
from .tables import AdapterRecord, snapshot

ALIASES = ("production", "staging")
RATINGS = ("up", "down")


@dataclass(frozen=True)
class AliasState:
    alias: str
    adapter: AdapterRecord | None
    split_adapter: AdapterRecord | None
    split_percent: int
    change_id: int
    action: str
    actor: str
    created_at: Any
    reason: str | None = None
    evidence: dict[str, Any] | None = None


@dataclass(frozen=True)
class ExportRecord:
    id: int
    model_ref: str
    adapter_id: int | None
    path: str
    formats: list[str]
    files: dict[str, Any]
    check: dict[str, Any] | None
    created_at: Any


def split_adapter_ref(ref: str) -> tuple[str, int | None]:
    """``name`` or ``name@version``, as commands and the server's admin API accept them."""
    name, _, version = ref.partition("@")
    if version and not version.isdigit():
        raise TunewrightError(f"version must be a number in '{ref}'", field="adapter")
    return name, int(version) if version else None


def check_alias(alias: str) -> str:
    if alias not in ALIASES:
        raise TunewrightError(f"unknown alias '{alias}' (aliases: {', '.join(ALIASES)})", field="alias")
    return alias


class DeploymentStore:
    def __init__(self, registry) -> None:
        self.registry = registry

    # -- aliases -------------------------------------------------------------------------------

    @staticmethod
    def _adapter(s: Session, name: str, version: int | None) -> t.Adapter:
        query = select(t.Adapter).where(t.Adapter.name == name).order_by(t.Adapter.version.desc())
        if version is not None:
            query = query.where(t.Adapter.version == version)
        row = s.scalars(query.limit(1)).first()
        if row is None:
            what = f"adapter '{name}'" + (f" version {version}" if version is not None else "")
            raise NotFoundError(f"{what} is not registered")
        return row

    @staticmethod
    def _current(s: Session, alias: str) -> t.AliasChange | None:
        return s.scalars(select(t.AliasChange).where(t.AliasChange.alias == alias)
                         .order_by(t.AliasChange.id.desc()).limit(1)).first()

    def _state(self, s: Session, row: t.AliasChange) -> AliasState:
        def rec(adapter_id):
            return snapshot(AdapterRecord, s.get(t.Adapter, adapter_id)) if adapter_id is not None else None
        return AliasState(alias=row.alias, adapter=rec(row.adapter_id), split_adapter=rec(row.split_adapter_id),
                          split_percent=row.split_percent, change_id=row.id, action=row.action, actor=row.actor,
                          created_at=row.created_at, reason=row.reason, evidence=jsonable(row.evidence))

    def _change(self, s: Session, alias: str, action: str, adapter_id: int | None, split_adapter_id: int | None,
                split_percent: int, previous_id: int | None, actor: str | None, reason: str | None = None,
                evidence: dict[str, Any] | None = None) -> AliasState:
        current = self._current(s, alias)
        actor = resolve_actor(actor)
        evidence = jsonable(evidence or {})
        row = t.AliasChange(alias=alias, action=action, adapter_id=adapter_id, split_adapter_id=split_adapter_id,
                            split_percent=split_percent, previous_id=previous_id, actor=actor, created_at=t.utcnow(),
                            reason=reason, evidence=evidence)
        s.add(row)
        s.flush()
        append_event(s, AliasChanged(alias=alias, change=action, adapter_id=adapter_id,
                                     split_adapter_id=split_adapter_id, split_percent=split_percent,
                                     previous_adapter_id=current.adapter_id if current else None,
                                     reason=reason, evidence=evidence), actor)
        if evidence.get("override"):
            failed = [c for c in (evidence.get("gates") or {}).get("checks", []) if not c.get("passed")]
            append_event(s, OverrideRecorded(check="release_gates", target=f"adapter {adapter_id} -> {alias}",
                                             reason=evidence["override"], findings={"failed": failed,
                                                                                    "alias_change_id": row.id}), actor)
        return self._state(s, row)

    def set_alias(self, alias: str, adapter: str, *, version: int | None = None, actor: str | None = None,
                  reason: str | None = None, evidence: dict[str, Any] | None = None) -> AliasState:
        """Point ``alias`` at an adapter; any A/B split on it ends."""
        check_alias(alias)

        def work(s: Session) -> AliasState:
            target = self._adapter(s, adapter, version)
            current = self._current(s, alias)
            return self._change(s, alias, "set", target.id, None, 0, current.id if current else None, actor,
                                reason, evidence)
        return self.registry.write(work)

    def promote(self, source: str = "staging", target: str = "production", *, actor: str | None = None,
                reason: str | None = None, evidence: dict[str, Any] | None = None) -> AliasState:
        """``target`` now serves what ``source`` serves (its adapter, not its split)."""
        check_alias(source), check_alias(target)
        if source == target:
            raise TunewrightError("cannot promote an alias onto itself", field="alias")

        def work(s: Session) -> AliasState:
            src = self._current(s, source)
            if src is None or src.adapter_id is None:
                raise NotFoundError(f"alias '{source}' points at nothing; set it first")
            current = self._current(s, target)
            if evidence and evidence.get("adapter_id") not in (None, src.adapter_id):
                raise TunewrightError(f"alias '{source}' changed while its adapter was being checked; try again")
            return self._change(s, target, "promote", src.adapter_id, None, 0,
                                current.id if current else None, actor, reason, evidence)
        return self.registry.write(work)

    def rollback(self, alias: str, *, actor: str | None = None, reason: str | None = None) -> AliasState:
        """Return to the state before the latest change; repeated rollbacks keep walking back."""
        check_alias(alias)

        def work(s: Session) -> AliasState:
            current = self._current(s, alias)
            if current is None or current.previous_id is None:
                raise TunewrightError(f"alias '{alias}' has no earlier state to roll back to", field="alias")
            before = s.get(t.AliasChange, current.previous_id)
            return self._change(s, alias, "rollback", before.adapter_id, before.split_adapter_id,
                                before.split_percent, before.previous_id, actor, reason)
        return self.registry.write(work)

    def split(self, alias: str, adapter: str, percent: int, *, version: int | None = None, actor: str | None = None,
              reason: str | None = None, evidence: dict[str, Any] | None = None) -> AliasState:
        """Route ``percent`` of the alias's requests to a second adapter (0 ends the test)."""
        check_alias(alias)
        if not 0 <= percent <= 100:
            raise TunewrightError(f"split percent must be between 0 and 100, got {percent}", field="percent")

        def work(s: Session) -> AliasState:
            current = self._current(s, alias)
            if current is None or current.adapter_id is None:
                raise NotFoundError(f"alias '{alias}' points at nothing; set it before splitting its traffic")
            second = self._adapter(s, adapter, version).id if percent else None
            return self._change(s, alias, "split", current.adapter_id, second, percent, current.id, actor,
                                reason, evidence)
        return self.registry.write(work)

    def get_alias(self, alias: str) -> AliasState | None:
        check_alias(alias)

        def work(s: Session) -> AliasState | None:
            row = self._current(s, alias)
            return self._state(s, row) if row is not None else None
        return self.registry.read(work)

    def aliases(self) -> dict[str, AliasState | None]:
        return {alias: self.get_alias(alias) for alias in ALIASES}

    def history(self, alias: str) -> list[AliasState]:
        check_alias(alias)

        def work(s: Session) -> list[AliasState]:
            rows = s.scalars(select(t.AliasChange).where(t.AliasChange.alias == alias).order_by(t.AliasChange.id))
            return [self._state(s, row) for row in rows]
        return self.registry.read(work)

    # -- exports -------------------------------------------------------------------------------

    def add_export(self, *, model_ref: str, adapter_id: int | None, path: str, formats: list[str],
                   files: dict[str, Any], check: CheckReport | None, files_sha256: dict[str, str],
                   actor: str | None = None) -> ExportRecord:
        if check is not None:
            check = CHECK_REPORT.from_json(check, file=Path(path) / "check.json")
            if not check["passed"]:
                raise TunewrightError("an export that failed its parity check is not registered")

        def work(s: Session) -> ExportRecord:
            row = t.Export(model_ref=model_ref, adapter_id=adapter_id, path=path, formats=list(formats),
                           files=files, check=check, created_at=t.utcnow())
            s.add(row)
            s.flush()
            if adapter_id is not None:
                self.registry.link(s, ("adapter", adapter_id), ("export", row.id), "exported")
            append_event(s, ExportRegistered(
                export_id=row.id, model_ref=model_ref, adapter_id=adapter_id, formats=list(formats),
                files_sha256=files_sha256, max_logit_diff=(check or {}).get("max_logit_diff", {})), actor)
            return snapshot(ExportRecord, row)
        return self.registry.write(work)

    def exports(self) -> list[ExportRecord]:
        return self.registry.read(lambda s: [snapshot(ExportRecord, r)
                                             for r in s.scalars(select(t.Export).order_by(t.Export.id))])

    # -- feedback (written by ``review.feedback``: it joins the review queue in one transaction) --

    def feedback(self) -> list[dict[str, Any]]:
        columns = ("id", "request_id", "model", "rating", "correction", "comment", "candidate_id", "created_at")
        return self.registry.read(lambda s: [{c: getattr(r, c) for c in columns}
                                             for r in s.scalars(select(t.Feedback).order_by(t.Feedback.id))])
