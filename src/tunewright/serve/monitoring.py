"""Opt-in request logs with personal data redacted, and user feedback turned into review rows."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..data.pii import find_pii, redact

RECENT_LIMIT = 10_000


def scrub(text: str) -> str:
    return redact(text, find_pii(text))


class RequestLog:
    """One JSON line per answered request in ``logs/requests/<day>.jsonl``.

    Lines are appended with a single write each, so a crash can lose at most the line being
    written, never corrupt earlier ones; the drift report skips nothing silently (it names a bad line).
    """

    def __init__(self, folder: Path, *, enabled: bool, redact_pii: bool) -> None:
        self.folder, self.enabled, self.redact_pii = folder, enabled, redact_pii
        self._lock = threading.Lock()

    def clean(self, text: str) -> str:
        return scrub(text) if self.redact_pii else text

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = dict(record)
        if "messages" in record:
            record["messages"] = [{**m, "content": self.clean(m["content"])} for m in record["messages"]]
        for key in ("prompt", "response"):
            if key in record:
                record[key] = self.clean(record[key])
        now = datetime.now(timezone.utc)
        record = {"ts": now.isoformat(), **record}
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / f"{now:%Y-%m-%d}.jsonl", "a", encoding="utf-8") as handle:
                handle.write(line)


class RecentResponses:
    """The last answers by request id, so feedback can name a request instead of repeating it."""

    def __init__(self, limit: int = RECENT_LIMIT) -> None:
        self.limit = limit
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, request_id: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._items[request_id] = record
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def get(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(request_id)


def feedback_candidate(record: dict[str, Any], *, correction: str | None, rating: str, request_id: str,
                       redact_pii: bool):
    """A review-queue row from a thumbs-down: the conversation with the correction as the answer,
    or with the model's own answer (flagged) for a reviewer to fix when no correction came."""
    from ..data.schema import ChatRow
    from ..review.store import NewCandidate

    clean = scrub if redact_pii else (lambda text: text)
    if "messages" in record:
        conversation = [{"role": m["role"], "content": clean(m["content"])} for m in record["messages"]]
    else:
        conversation = [{"role": "user", "content": clean(record["prompt"])}]
    answer = clean(correction if correction else record["response"])
    row = ChatRow(messages=[*conversation, {"role": "assistant", "content": answer}])
    provenance = {"generator": "serve-feedback", "request_id": request_id, "model": record.get("model"),
                  "served": record.get("served"), "rating": rating, "served_response": clean(record["response"]),
                  "corrected": bool(correction)}
    flags = [] if correction else [{"filter": "feedback", "reason": "a user marked this answer bad; no correction given"}]
    return NewCandidate(row=row, provenance=provenance, flags=flags)
