"""A PII scan report for every dataset version, and the check that training on findings nobody
resolved needs an explicit, recorded decision.

The detector is ``data.pii`` (the synthetic-data filter uses it too). A finding is resolved when the
recipe's ``govern.pii.allow`` lists its exact text with a reason (a company's public support line
is not personal data). Reports keep a masked form and a hash of each finding, never the text itself,
so the scan does not copy the personal data it found into another file.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

from ..config.govern import PiiSpec
from ..data.prepare import read_split
from ..data.schema import ChatRow
from ..errors import TunewrightError
from ..io import atomic_write_json, sha256_text as _digest
from ..registry.events import OverrideRecorded, append_event
from ..registry.reports import ReportRecord, ReportStore
from ..data.pii import find_pii

KIND = "pii_scan"
MAX_LISTED = 200


def _mask(text: str) -> str:
    keep = 2 if len(text) > 6 else 1
    return text[:keep] + "*" * max(len(text) - 2 * keep, 1) + text[-keep:]


def scan_rows(splits: dict[str, list[ChatRow]], spec: PiiSpec) -> dict[str, Any]:
    allowed = {_digest(a.text): a.reason for a in spec.allow}
    findings, rows_hit = [], set()
    n_rows = 0
    for split, rows in splits.items():
        for index, row in enumerate(rows):
            n_rows += 1
            for turn, message in enumerate(row.messages):
                # A part row is scanned, not refused: personal data can sit in the text beside an image.
                # (Text inside the image or audio is scanned once it is aligned to text.)
                parts = [(None, message.content)] if isinstance(message.content, str) else [
                    (i, p.text) for i, p in enumerate(message.content) if p.modality == "text"]
                for part, text in parts:
                    for match in find_pii(text):
                        digest = _digest(match.text)
                        rows_hit.add((split, index))
                        finding = {"split": split, "row": index + 1, "turn": turn, "role": message.role,
                                   "kind": match.kind, "masked": _mask(match.text), "sha256": digest,
                                   "allowed_because": allowed.get(digest)}
                        if part is not None:
                            finding["part"] = part
                        findings.append(finding)
    unresolved = [f for f in findings if f["allowed_because"] is None]
    summary = {
        "n_rows": n_rows, "n_findings": len(findings), "rows_with_findings": len(rows_hit),
        "by_kind": dict(Counter(f["kind"] for f in findings)), "n_allowed": len(findings) - len(unresolved),
        "n_unresolved": len(unresolved),
        "unresolved_by_kind": dict(Counter(f["kind"] for f in unresolved)),
        "status": "findings" if unresolved else ("resolved" if findings else "clean"),
        "allowlist_sha256": _digest("\n".join(sorted(allowed))),
    }
    return {"summary": summary, "findings": findings[:MAX_LISTED], "n_listed": min(len(findings), MAX_LISTED)}


def scan_dataset(workspace, record) -> ReportRecord:
    """Scan both splits of a registered dataset version; register the report unless an identical
    scan (same findings, same allowlist) is already the latest for it."""
    folder = Path(record.path)
    splits = {split: read_split(folder, split) for split in ("train", "eval")}
    scan = scan_rows(splits, workspace.recipe.govern.pii)
    store = ReportStore(workspace.registry)
    latest = store.latest_report(KIND, dataset_id=record.id)
    if latest is not None and latest.summary == scan["summary"] and Path(latest.path).is_file():
        return latest
    out = workspace.dir("reports") / "pii" / f"{record.name}-{record.version}.json"
    report = {"dataset": {"id": record.id, "name": record.name, "version": record.version,
                          "content_sha256": record.content_sha256},
              "detector": "tunewright.data.pii", **scan,
              "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_write_json(out, report)
    return store.add_report(KIND, out, scan["summary"], dataset_id=record.id)


def require_resolved(workspace, record, *, allow_pii: str | None = None) -> dict[str, Any] | None:
    """Before training: refuse a version with unresolved findings unless ``allow_pii`` gives a reason,
    which is recorded as an override event. Returns what the run should record about it."""
    report = scan_dataset(workspace, record)
    unresolved = report.summary.get("n_unresolved", 0)
    if not unresolved:
        return None
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(report.summary.get("unresolved_by_kind", {}).items()))
    if not (allow_pii or "").strip():
        raise TunewrightError(
            f"dataset '{record.name}@{record.version}' has {unresolved} unresolved PII findings ({kinds}; "
            f"report {report.id}: {report.path}). Redact them and register a new version, list public ones "
            "under govern.pii.allow in the recipe, or train with --allow-pii \"<reason>\" (recorded)")
    override = {"reason": allow_pii.strip(), "report_id": report.id, "n_unresolved": unresolved}
    workspace.registry.write(lambda s: append_event(s, OverrideRecorded(
        check="pii", target=f"dataset {record.id} -> training", reason=override["reason"],
        findings={"report_id": report.id, "unresolved_by_kind": report.summary.get("unresolved_by_kind", {})})))
    return override
