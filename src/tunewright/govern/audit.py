"""Verify the registry's hash-chained audit log and name what was damaged.

Every event stores the hash of the event before it and a hash over its own content chained to that
one (``registry.events.chain_hash``). Reading the raw rows, not ORM objects, lets a damaged row
(unparsable JSON, a missing field) be reported instead of crashing the check.

What a plain hash chain can and cannot show: an edited, deleted, inserted or reordered event breaks
the links and is named here. Someone who can write the database and recompute every later hash can
rebuild a consistent chain; an anchor (the head's id and hash, kept outside the database: in a
ticket, a git commit, a printed model card) catches that for every event up to the anchor. SQLite
remembers the highest id it ever handed out, so deleting the newest events shows, unless the
attacker also lowers ``sqlite_sequence`` and recreates the triggers: then only an anchor taken
after those events shows it. So the head is anchored automatically after every release event
(``registry.events.RELEASE_ACTIONS``), appended to ``govern.anchor_file`` outside the database;
an attacker who can also rewrite that file is not caught, so keep it out of their reach.

The tables that decide what is served are checked against the log as well: every adapter row must
match its ``adapter.registered`` event (weights and base hashes), and every alias's current state
and number of changes must match its ``alias.changed`` events. An edit of those rows alone, without
a matching event, is named here ("table"); the weights themselves are checked at every load
(``models.adapters.checked_adapter_folder``).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..errors import TunewrightError
from ..io import atomic_write_json
from ..registry.events import chain_hash
from ..registry.tables import GENESIS_HASH

_COLUMNS = ("id", "ts", "actor", "action", "subject_kind", "subject_id", "payload", "prev_hash", "hash")


@dataclass(frozen=True)
class Damage:
    event_id: int | None
    # edited | deleted | inserted | reordered | unreadable | truncated | unguarded | anchor | database | table
    kind: str
    detail: str

    def line(self) -> str:
        where = f"event {self.event_id}" if self.event_id is not None else "log"
        return f"{where}: {self.kind}: {self.detail}"


@dataclass
class AuditResult:
    n_events: int = 0
    head_id: int | None = None
    head_hash: str | None = None
    damage: list[Damage] = field(default_factory=list)
    anchor_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.damage

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "n_events": self.n_events, "head_id": self.head_id, "head_hash": self.head_hash,
                "anchor_checked": self.anchor_checked, "damage": [asdict(d) for d in self.damage]}


def _timestamp(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        raise ValueError(f"not a timestamp: {value!r}")
    # SQLite keeps naive UTC (see tables.UTCDateTime); the hash was taken over the aware value.
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _recompute(row: dict[str, Any]) -> str:
    payload = row["payload"]
    if isinstance(payload, (str, bytes)):
        payload = json.loads(payload)
    if not isinstance(payload, dict):
        raise ValueError("payload is not a JSON object")
    for name in ("actor", "action", "subject_kind", "subject_id", "prev_hash", "hash"):
        if not isinstance(row[name], str):
            raise ValueError(f"field '{name}' is missing")
    return chain_hash(row["prev_hash"], ts=_timestamp(row["ts"]), actor=row["actor"], action=row["action"],
                      subject_kind=row["subject_kind"], subject_id=row["subject_id"], payload=payload)


def _read_rows(registry) -> list[dict[str, Any]]:
    with registry.engine.connect() as conn:
        result = conn.execute(text(f"SELECT {', '.join(_COLUMNS)} FROM events ORDER BY id"))
        return [dict(zip(_COLUMNS, r)) for r in result]


# The append-only triggers: the event log (migration 0001), the deployment history and adapter
# hashes (0006).
_SQLITE_GUARDS = ("events_no_update", "events_no_delete", "alias_changes_no_update", "alias_changes_no_delete",
                  "adapters_no_rehash", "adapters_no_delete")


# PostgreSQL also refuses TRUNCATE, which its row triggers would not see (migration 0007).
_POSTGRES_GUARDS = _SQLITE_GUARDS + ("events_no_truncate", "alias_changes_no_truncate", "adapters_no_truncate")


def _sqlite_state(registry) -> tuple[int | None, list[str]]:
    """The highest event id SQLite ever handed out (None elsewhere), and which append-only
    triggers are missing: dropped, or on PostgreSQL disabled."""
    dialect = registry.engine.dialect.name
    with registry.engine.connect() as conn:
        if dialect == "sqlite":
            highest = conn.execute(text("SELECT seq FROM sqlite_sequence WHERE name = 'events'")).scalar()
            present = set(conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars())
            return highest, [name for name in _SQLITE_GUARDS if name not in present]
        if dialect == "postgresql":
            present = set(conn.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                                            "AND tgenabled <> 'D'")).scalars())
            return None, [name for name in _POSTGRES_GUARDS if name not in present]
    return None, []


def verify_log(registry, anchor: dict[str, Any] | None = None,
               release_anchors: list[dict[str, Any]] = ()) -> AuditResult:
    """``anchor``: one from ``write_anchor``; ``release_anchors``: the heads appended after each
    release event (``read_release_anchors``), each checked like an anchor."""
    result = AuditResult()
    try:
        rows = _read_rows(registry)
        highest, unguarded = _sqlite_state(registry)
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        result.damage.append(Damage(None, "database", f"the event log cannot be read: {detail}"))
        return result
    result.n_events = len(rows)
    hash_position = {r["hash"]: i for i, r in enumerate(rows) if isinstance(r["hash"], str)}
    previous_id, explained = 0, set()
    for index, row in enumerate(rows):
        event_id = row["id"]
        try:
            recomputed = _recompute(row)
        except (ValueError, TypeError) as exc:
            result.damage.append(Damage(event_id, "unreadable", f"{exc}; its content cannot be checked"))
            recomputed = None
        if recomputed is not None and recomputed != row["hash"]:
            result.damage.append(Damage(event_id, "edited", "its content no longer matches its hash "
                                        f"(stored {str(row['hash'])[:12]}, content gives {recomputed[:12]})"))
        expected_prev = rows[index - 1]["hash"] if index else GENESIS_HASH
        if row["prev_hash"] != expected_prev and index not in explained:
            damage, covers = _link_damage(rows, index, hash_position, previous_id)
            result.damage.append(damage)
            explained.update(covers)
        previous_id = event_id
    if rows:
        result.head_id, result.head_hash = rows[-1]["id"], rows[-1]["hash"]
    if highest is not None and highest > previous_id:
        missing = f"{previous_id + 1}" if highest == previous_id + 1 else f"{previous_id + 1} to {highest}"
        result.damage.append(Damage(None, "truncated", f"the newest events were deleted: ids {missing} "
                                    "were handed out but are gone"))
    if unguarded:
        result.damage.append(Damage(None, "unguarded", f"the append-only triggers {', '.join(unguarded)} were "
                                    "removed, so events could be changed in place"))
    try:
        result.damage.extend(_table_damage(registry, rows) + _review_damage(registry, rows))
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        result.damage.append(Damage(None, "database", f"the adapter or alias tables cannot be read: {detail}"))
    if anchor is not None:
        result.anchor_checked = True
        _check_anchor(rows, anchor, result)
    for release_anchor in release_anchors:
        result.anchor_checked = True
        _check_anchor(rows, release_anchor, result)
    return result


def _payloads(rows: list[dict[str, Any]], action: str) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for row in rows:
        if row["action"] != action:
            continue
        try:
            payload = json.loads(row["payload"]) if isinstance(row["payload"], (str, bytes)) else row["payload"]
        except ValueError:
            continue  # reported as unreadable above
        if isinstance(payload, dict):
            out.append((row["id"], payload))
    return out


_ADAPTER_FIELDS = ("name", "version", "weights_sha256", "base_model_sha256")
_ALIAS_FIELDS = ("adapter_id", "split_adapter_id", "split_percent")


def _table_damage(registry, rows: list[dict[str, Any]]) -> list[Damage]:
    """Rows of ``adapters`` and ``alias_changes`` that no event accounts for."""
    adapters = _select(registry, f"SELECT id, {', '.join(_ADAPTER_FIELDS)} FROM adapters ORDER BY id")
    changes = _select(registry, f"SELECT id, alias, {', '.join(_ALIAS_FIELDS)} FROM alias_changes ORDER BY id")
    damage = _rows_against_events(
        adapters, rows, "adapter.registered", "adapter_id", lambda a: f"adapter row {a['id']}",
        lambda a: f" ({a['name']}@{a['version']})", lambda a, p: [f for f in _ADAPTER_FIELDS if a[f] != p.get(f)])
    events_by_alias: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for event_id, payload in _payloads(rows, "alias.changed"):
        events_by_alias.setdefault(str(payload.get("alias")), []).append((event_id, payload))
    rows_by_alias: dict[str, list[dict[str, Any]]] = {}
    for change in changes:
        rows_by_alias.setdefault(change["alias"], []).append(change)
    for alias in sorted(set(events_by_alias) | set(rows_by_alias)):
        events, table = events_by_alias.get(alias, []), rows_by_alias.get(alias, [])
        if len(events) != len(table):
            damage.append(Damage(None, "table", f"alias '{alias}' has {len(table)} changes in the table but "
                                 f"{len(events)} alias.changed events"))
            continue
        last_event, last_row = events[-1], table[-1]
        changed = [f for f in _ALIAS_FIELDS if last_row[f] != last_event[1].get(f)]
        if changed:
            damage.append(Damage(last_event[0], "table", f"alias '{alias}' now points elsewhere than its last "
                                 f"event says: {', '.join(changed)} changed in the table"))
    return damage


def _link_damage(rows: list[dict[str, Any]], index: int, hash_position: dict[str, int],
                 previous_id: int) -> tuple[Damage, set[int]]:
    """Name what broke the link into ``rows[index]``; also return the later rows this explains."""
    row = rows[index]
    event_id = row["id"]
    before = rows[index - 2]["hash"] if index >= 2 else GENESIS_HASH
    if index >= 1 and row["prev_hash"] == before and rows[index - 1]["prev_hash"] == before:
        # The event before this one links in correctly, but nothing links to it: it was added later.
        inserted = rows[index - 1]["id"]
        return Damage(inserted, "inserted", f"event {event_id} links past it, to the event before it"), set()
    linked = hash_position.get(row["prev_hash"])
    if linked is not None and linked != index - 1:
        return Damage(event_id, "reordered", f"it links to event {rows[linked]['id']}, not to event {previous_id} "
                      "before it: events were moved"), set()
    after = rows[index + 1] if index + 1 < len(rows) else None
    if after is not None and after["prev_hash"] == (rows[index - 1]["hash"] if index else GENESIS_HASH):
        return Damage(event_id, "inserted", f"event {after['id']} links past it, to event {previous_id}"), {index + 1}
    if event_id > previous_id + 1:
        gone = f"{previous_id + 1}" if event_id == previous_id + 2 else f"{previous_id + 1} to {event_id - 1}"
        return Damage(event_id, "deleted", f"event(s) {gone} before it are gone (its link points to a hash no "
                      "event has)"), set()
    return Damage(event_id, "deleted", "its link points to a hash no event has: an event before it was deleted, "
                  f"or event {previous_id} was replaced"), set()


def _check_anchor(rows: list[dict[str, Any]], anchor: dict[str, Any], result: AuditResult) -> None:
    anchored_id, anchored_hash = anchor.get("event_id"), anchor.get("hash")
    match = next((r for r in rows if r["id"] == anchored_id), None)
    if match is None:
        result.damage.append(Damage(anchored_id, "anchor", "the anchored event is gone from the log"))
    elif match["hash"] != anchored_hash:
        result.damage.append(Damage(anchored_id, "anchor", f"its hash is {str(match['hash'])[:12]}, but the anchor "
                                    f"recorded {str(anchored_hash)[:12]}: the log up to it was rewritten"))
    count = sum(1 for r in rows if isinstance(r["id"], int) and anchored_id is not None and r["id"] <= anchored_id)
    if anchor.get("n_events") is not None and count != anchor["n_events"]:
        result.damage.append(Damage(anchored_id, "anchor", f"{count} events up to it now, {anchor['n_events']} "
                                    "when anchored"))


def write_anchor(registry, path: str | Path) -> dict[str, Any]:
    """Record the head of a verified log, to keep somewhere the database's writers cannot reach."""
    result = verify_log(registry)
    if not result.ok:
        raise TunewrightError("refusing to anchor a damaged log: " + result.damage[0].line())
    if result.head_id is None:
        raise TunewrightError("the audit log is empty; nothing to anchor")
    anchor = {"event_id": result.head_id, "hash": result.head_hash, "n_events": result.n_events,
              "registry": registry.display_url,
              "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_write_json(path, anchor)
    return anchor


def read_anchor(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        anchor = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TunewrightError(f"cannot read anchor: {exc.strerror or exc}", file=path) from None
    except ValueError as exc:
        raise TunewrightError(f"anchor is not JSON: {exc}", file=path) from None
    for name, kind in (("event_id", int), ("hash", str)):
        if not isinstance(anchor, dict) or not isinstance(anchor.get(name), kind):
            raise TunewrightError(f"anchor needs '{name}' ({kind.__name__})", file=path, field=name)
    return anchor


def read_release_anchors(path: str | Path) -> list[dict[str, Any]]:
    """The heads anchored after release events (JSON lines; a torn last line from a crash is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    anchors = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            anchor = json.loads(line)
        except ValueError:
            if number == len(lines):
                break  # the write a crash interrupted
            raise TunewrightError("anchor line is not JSON", file=path, line=number) from None
        if not isinstance(anchor, dict) or not isinstance(anchor.get("event_id"), int) \
                or not isinstance(anchor.get("hash"), str):
            raise TunewrightError("anchor line needs 'event_id' and 'hash'", file=path, line=number)
        anchors.append(anchor)
    return anchors


def verify_workspace(workspace, anchor: dict[str, Any] | None = None) -> AuditResult:
    """The workspace's log against an explicit anchor, if given, and every release anchor."""
    return verify_log(workspace.registry, anchor, read_release_anchors(workspace.anchor_file))


_REVIEW_FIELDS = ("reviewer", "decision", "rating")


def _review_damage(registry, rows: list[dict[str, Any]]) -> list[Damage]:
    """Review decisions decide what trains: each row must match its ``review.recorded`` event
    (reviewer, decision, rating, and the hashes of the conversation before and after an edit)."""
    from ..review.store import messages_sha256

    def sha(stored: Any) -> str | None:
        value = json.loads(stored) if isinstance(stored, (str, bytes)) else stored
        return None if value is None else messages_sha256(value)

    reviews = _select(registry, "SELECT id, candidate_id, reviewer, decision, rating, before, after FROM reviews "
                                "ORDER BY id")
    return _rows_against_events(
        reviews, rows, "review.recorded", "review_id", lambda r: f"review row {r['id']}",
        lambda r: f" (candidate {r['candidate_id']})",
        lambda r, p: [f for f in _REVIEW_FIELDS if r[f] != p.get(f)]
        + [name for name in ("before", "after") if sha(r[name]) != p.get(f"{name}_sha256")])


def _select(registry, sql: str) -> list[dict[str, Any]]:
    with registry.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql))]


def _rows_against_events(table_rows: list[dict[str, Any]], rows: list[dict[str, Any]], action: str, id_key: str,
                         name, context, changed_fields) -> list[Damage]:
    """Each table row against the ``action`` event that recorded it (matched by ``id_key`` in its
    payload): a row without one was added directly; a row whose fields differ was edited in place."""
    recorded = {payload.get(id_key): (event_id, payload) for event_id, payload in _payloads(rows, action)}
    damage = []
    for row in table_rows:
        event_id, payload = recorded.get(row["id"], (None, None))
        if payload is None:
            damage.append(Damage(None, "table", f"{name(row)}{context(row)} has no {action} event: it was added "
                                 "to the table directly"))
            continue
        changed = changed_fields(row, payload)
        if changed:
            damage.append(Damage(event_id, "table", f"{name(row)} no longer matches its event: "
                                 f"{', '.join(changed)} changed in the table"))
    return damage
