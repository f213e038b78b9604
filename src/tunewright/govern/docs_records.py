"""The registry records a generated document may cite, each with what a reader needs to look it up
and check it: its id, kind, creation time, the hash of its content and the audit event that wrote it.

A citation can only name a record in this index, so a document cannot point at something the
registry does not hold.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..registry import tables as t
from ..registry.events import canonical_sha256
from ..registry.reports import evaluation_sha256

# Record kind -> the audit log's subject kind for it (alias changes are logged under the alias name).
_EVENT_SUBJECT = {"dataset": "dataset", "run": "run", "adapter": "adapter", "evaluation": "evaluation",
                  "report": "report", "signoff": "signoff", "synth_round": "synth_round", "export": "export",
                  "feedback": "feedback"}


@dataclass(frozen=True)
class RecordRef:
    kind: str
    id: str
    created_at: str | None
    hash_label: str | None  # what ``hash`` is a hash of
    hash: str | None
    event_id: int | None  # the audit event that recorded the row (its latest, for runs: the finish)
    event_hash: str | None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"

    @property
    def anchor(self) -> str:
        return f"rec-{self.kind.replace('_', '-')}-{self.id}"

    @property
    def label(self) -> str:
        return f"{self.kind.replace('_', ' ')} {self.id}"


class RecordIndex:
    def __init__(self) -> None:
        self._refs: dict[str, RecordRef] = {}

    def add(self, ref: RecordRef) -> None:
        self._refs.setdefault(ref.key, ref)

    def get(self, kind: str, record_id: Any) -> RecordRef:
        key = f"{kind}:{record_id}"
        if key not in self._refs:
            # A document citing a row that was never read from the registry is a bug, not a gap.
            raise KeyError(f"record {key} is not in the documentation's record index")
        return self._refs[key]

    def __contains__(self, key: object) -> bool:
        return key in self._refs

    def __len__(self) -> int:
        return len(self._refs)


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


_sha = canonical_sha256


def _content_hash(kind: str, row: Any) -> tuple[str | None, str | None]:
    if kind == "dataset":
        return "content sha256", row.content_sha256
    if kind == "adapter":
        return "weights sha256", row.weights_sha256
    if kind == "evaluation":
        return "metrics sha256 (what a sign-off freezes)", evaluation_sha256(row)
    if kind == "report":
        return "file sha256", row.sha256
    if kind == "signoff":
        return "sha256 of what was signed", row.subject_sha256
    if kind == "run":
        # The same digest the run.started event carries, so the two can be compared.
        return "config sha256", _sha(row.config)
    if kind == "synth_round":
        return "synth spec sha256", row.spec_sha256
    return None, None


_MODELS = {"dataset": t.Dataset, "run": t.Run, "adapter": t.Adapter, "evaluation": t.Evaluation,
           "report": t.Report, "signoff": t.SignOff, "synth_round": t.SynthRound, "export": t.Export,
           "feedback": t.Feedback, "alias_change": t.AliasChange}


def _created(row: Any) -> Any:
    for name in ("created_at", "started_at", "ts"):
        if hasattr(row, name):
            return getattr(row, name)
    return None


def build_index(s: Session, wanted: dict[str, Iterable[Any]]) -> RecordIndex:
    """Index the rows named in ``wanted`` (kind -> ids) plus the audit events in ``wanted['event']``."""
    index = RecordIndex()
    for kind, ids in wanted.items():
        ids = sorted({int(i) for i in ids})
        if not ids:
            continue
        if kind == "event":
            for event in s.scalars(select(t.Event).where(t.Event.id.in_(ids))):
                index.add(RecordRef("event", str(event.id), _iso(event.ts), "chain hash", event.hash, event.id,
                                    event.hash))
            continue
        model = _MODELS[kind]
        rows = list(s.scalars(select(model).where(model.id.in_(ids)).order_by(model.id)))
        events = _alias_events(s, rows) if kind == "alias_change" else _latest_events(s, kind, ids)
        for row in rows:
            hash_label, digest = _content_hash(kind, row)
            event = events.get(row.id)
            index.add(RecordRef(kind, str(row.id), _iso(_created(row)), hash_label, digest,
                                event.id if event else None, event.hash if event else None))
    return index


def _latest_events(s: Session, kind: str, ids: list[int]) -> dict[int, t.Event]:
    found: dict[int, t.Event] = {}
    query = select(t.Event).where(t.Event.subject_kind == _EVENT_SUBJECT[kind],
                                  t.Event.subject_id.in_([str(i) for i in ids])).order_by(t.Event.id)
    for event in s.scalars(query):
        found[int(event.subject_id)] = event
    return found


def _alias_events(s: Session, rows: list[t.AliasChange]) -> dict[int, t.Event]:
    # Alias events name the alias, not the change row; each change and its event are written in one
    # transaction, so the n-th change of an alias is its n-th alias.changed event.
    found: dict[int, t.Event] = {}
    for alias in {r.alias for r in rows}:
        changes = list(s.scalars(select(t.AliasChange.id).where(t.AliasChange.alias == alias)
                                 .order_by(t.AliasChange.id)))
        events = list(s.scalars(select(t.Event).where(t.Event.action == "alias.changed",
                                                      t.Event.subject_id == alias).order_by(t.Event.id)))
        if len(changes) == len(events):
            found.update(zip(changes, events))
    return found


def wanted_ids() -> dict[str, set[Any]]:
    return defaultdict(set)
