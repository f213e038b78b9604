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
RECENT_MAX_BYTES = 64 * 1024 * 1024  # 10,000 prompts near the body limit would otherwise hold ~10 GB


def scrub(text: str) -> str:
    return redact(text, find_pii(text))


def redacted(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a request record with personal data redacted from the prompt, messages and answer."""
    record = dict(record)
    if "messages" in record:
        record["messages"] = [{**m, "content": scrub(m["content"])} for m in record["messages"]]
    for key in ("prompt", "response"):
        if key in record:
            record[key] = scrub(record[key])
    return record


def _text_bytes(record: dict[str, Any]) -> int:
    texts = [m["content"] for m in record.get("messages", [])]
    texts += [record[key] for key in ("prompt", "response") if key in record]
    # A fixed allowance for ids, names and numbers, so even empty answers count towards the cap.
    return 256 + sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)


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
        record = redacted(record) if self.redact_pii else dict(record)
        now = datetime.now(timezone.utc)
        record = {"ts": now.isoformat(), **record}
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / f"{now:%Y-%m-%d}.jsonl", "a", encoding="utf-8") as handle:
                handle.write(line)


class RecentResponses:
    """The last answers by request id, so feedback can name a request instead of repeating it.

    Bounded by count and by the bytes of their texts, oldest out first; redacted when the server
    redacts, since this is personal data held for as long as the process runs."""

    def __init__(self, limit: int = RECENT_LIMIT, max_bytes: int = RECENT_MAX_BYTES, *,
                 redact_pii: bool = True) -> None:
        self.limit, self.max_bytes, self.redact_pii = limit, max_bytes, redact_pii
        self._items: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()
        self.total_bytes = 0
        self._lock = threading.Lock()

    def add(self, request_id: str, record: dict[str, Any]) -> None:
        if self.redact_pii:
            record = redacted(record)
        size = _text_bytes(record)
        with self._lock:
            previous = self._items.pop(request_id, None)
            if previous is not None:
                self.total_bytes -= previous[1]
            if size > self.max_bytes:  # never kept, rather than pushing out every other answer first
                return
            self._items[request_id] = (record, size)
            self.total_bytes += size
            while len(self._items) > self.limit or self.total_bytes > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self.total_bytes -= evicted

    def get(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._items.get(request_id)
        return None if item is None else item[0]

    def __len__(self) -> int:
        return len(self._items)


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
